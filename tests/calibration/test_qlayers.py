"""The packed int4 layout (exact bytes), its round trip, RTN on its grid and the 4-bit GEMMs."""

from __future__ import annotations

import pytest
import torch

from jetmamba.calibration.qlayers import (
    QuantLinear4,
    dequantize_int4,
    int4_group_size,
    pack_int4,
    rtn_int4,
    unpack_int4,
)
from jetmamba.compiler.ops.int4 import quantize_rtn


def test_pack_hand_example_has_the_agreed_bytes():
    q = torch.tensor([[-8, 7, -1, 0], [1, -2, 3, -4]], dtype=torch.int8)
    # low nibble = even k, two's complement nibbles: (-8, 7) -> 0x78, (-1, 0) -> 0x0F, (1, -2) -> 0xE1, (3, -4) -> 0xC3
    assert pack_int4(q).tolist() == [[0x78, 0x0F], [0xE1, 0xC3]]
    assert pack_int4(q).dtype == torch.uint8
    assert torch.equal(unpack_int4(pack_int4(q)), q)


def test_pack_round_trip_and_refusals():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-8, 8, (17, 64), generator=g, dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(q)), q)
    every = torch.arange(256, dtype=torch.int32).to(torch.uint8)[None]  # every byte unpacks and repacks to itself
    assert torch.equal(pack_int4(unpack_int4(every)), every)
    with pytest.raises(ValueError):
        pack_int4(q[:, :3])
    with pytest.raises(ValueError):
        pack_int4(torch.full((1, 2), 8, dtype=torch.int8))


@pytest.mark.parametrize(("k", "group"), [(4096, 128), (384, 128), (192, 64), (96, 32), (12, None), (48, None)])
def test_group_size_falls_back_to_64_then_32(k, group):
    assert int4_group_size(k) == group


def test_rtn_on_the_grid_rounds_half_to_even():
    w = torch.zeros(1, 32)
    w[0, :6] = torch.tensor([7.0, 0.5, 1.5, -2.5, 2.4, -7.0])  # scale max|w| / 7 = 1
    codes, scales = rtn_int4(w, 32)
    assert scales.dtype == torch.float16 and scales.shape == (1, 1) and float(scales) == 1.0
    assert codes[0, :6].tolist() == [7, 0, 2, -2, 2, -7]
    assert torch.equal(dequantize_int4(pack_int4(codes), scales)[0, :6], torch.tensor([7.0, 0, 2, -2, 2, -7]))
    zero_codes, zero_scales = rtn_int4(torch.zeros(2, 64), 32)  # an all-zero group: zero codes, a positive scale
    assert not zero_codes.any() and bool((zero_scales > 0).all())


def test_rtn_is_the_kernel_references_rtn():
    w = torch.randn(12, 192, generator=torch.Generator().manual_seed(3)) * 0.02
    codes, scales = rtn_int4(w, 64)
    qweight, ref_scales = quantize_rtn(w)
    assert torch.equal(pack_int4(codes), qweight) and torch.equal(scales, ref_scales)


def test_rtn_error_is_at_most_half_a_step():
    w = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))
    codes, scales = rtn_int4(w, 128)
    step = scales.float().repeat_interleave(128, dim=1)
    err = (dequantize_int4(pack_int4(codes), scales) - w).abs()
    assert bool((err <= 0.5 * step + 1e-3 * step).all())  # + fp16 rounding of the scale


def test_quant_linear4_gemms():
    g = torch.Generator().manual_seed(2)
    w, bias = torch.randn(24, 192, generator=g), torch.randn(24, generator=g)
    codes, scales = rtn_int4(w, 64)
    lin = QuantLinear4.from_codes(codes, scales, bias)
    assert lin.group_size == 64 and lin.qweight.shape == (24, 96) and lin.scales.shape == (24, 3)
    x = torch.randn(3, 5, 192, generator=g)
    deq = dequantize_int4(lin.qweight, lin.scales)
    y16 = lin(x.half())
    assert y16.dtype == torch.float16
    torch.testing.assert_close(y16.float(), (x.half().float() @ deq.T + bias).half().float())
    x_q = torch.randint(-128, 128, (4, 192), generator=g, dtype=torch.int8)
    y8 = lin(x_q, 0.05)
    # the kernel's arithmetic: exact int32 group sums, then fp32 scales
    sums = (x_q.long()[:, None, :] * codes.long()[None]).reshape(4, 24, 3, 64).sum(-1)
    expected = 0.05 * (sums.double() * scales.double()).sum(-1) + bias.double()
    torch.testing.assert_close(y8.double(), expected.half().double(), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError):
        lin(x_q)  # int8 without its scale


def test_quant_linear4_refuses_k_without_groups():
    with pytest.raises(ValueError):
        QuantLinear4(12, 4, False)
