"""The packed int4 layout (compiler/ops/int4.py): bytes, nibble order, sign, groups, RTN."""

from __future__ import annotations

import pytest
import torch

from jetmamba.compiler.ops.int4 import (
    dequantize_int4,
    group_size_for,
    pack_int4,
    quantize_rtn,
    unpack_int4,
)


def test_bytes_of_a_hand_example():
    # byte (n, j) = (q[n, 2j] & 0xF) | ((q[n, 2j+1] & 0xF) << 4): low nibble = even k, two's complement
    q = torch.tensor([[1, 2, -1, 7, -8, 0], [3, -3, 5, -5, -8, 7]], dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x21, 0x7F, 0x08], [0xD3, 0xB5, 0x78]]
    assert torch.equal(unpack_int4(packed), q)


def test_every_code_pair_round_trips():
    codes = torch.arange(-8, 8, dtype=torch.int8)
    q = torch.cartesian_prod(codes, codes).reshape(1, -1)  # all 256 (even, odd) pairs
    packed = pack_int4(q)
    assert sorted(packed.reshape(-1).tolist()) == list(range(256))
    assert torch.equal(unpack_int4(packed), q)


def test_pack_rejects_what_the_layout_cannot_hold():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(2, 3, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_int4(torch.tensor([[8, 0]], dtype=torch.int8))


@pytest.mark.parametrize("k,g", [(256, 128), (384, 128), (192, 64), (96, 32), (2560, 128), (5120, 128)])
def test_group_size_for(k, g):
    assert group_size_for(k) == g


def test_group_size_for_rejects_odd_layers():
    with pytest.raises(ValueError, match="no int4 group size"):
        group_size_for(100)


def test_rtn_scales_codes_and_dequantization():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 192, generator=g)
    w[2, 64:128] = 0.0  # an all-zero group: the smallest normal fp16 scale, codes 0
    qweight, scales = quantize_rtn(w)  # K = 192: G = 64
    assert qweight.shape == (6, 96) and scales.shape == (6, 3) and scales.dtype == torch.float16
    groups = w.reshape(6, 3, 64)
    assert torch.equal(scales, (groups.abs().amax(-1) / 7).clamp_min(6.103515625e-05).half())
    q = unpack_int4(qweight).reshape(6, 3, 64)
    assert torch.equal(q.float(), torch.round(groups / scales.float()[..., None]).clamp(-8, 7))
    assert int(q.abs().amax()) == 7 and int(q[2, 1].abs().max()) == 0
    w_hat = dequantize_int4(qweight, scales, 64)
    assert torch.equal(w_hat, (q.float() * scales.float()[..., None]).reshape(6, 192))  # exact in fp32
    assert float((w_hat - w).abs().max()) <= float(scales.float().max()) / 2 * 1.001  # half a step


def test_dequantize_checks_the_scales_shape():
    qweight, scales = quantize_rtn(torch.randn(4, 128))
    with pytest.raises(ValueError, match="do not match"):
        dequantize_int4(qweight, scales, 64)
