"""Op specs are consistent with their references, and the references mean what they say."""

from __future__ import annotations

import inspect

import pytest
import torch

from jetmamba.calibration.functional import gated_rms_norm, selective_scan_ref, ssd_scan_ref
from jetmamba.calibration.hadamard import hadamard_matrix
from jetmamba.compiler.ops import OPSET
from jetmamba.compiler.ops import reference as ref
from jetmamba.compiler.ops.quant import dequantize, quantize, scale_for


@pytest.mark.parametrize("name", list(OPSET))
def test_spec_matches_reference_signature(name):
    spec = OPSET[name]
    params = inspect.signature(spec.reference).parameters
    positional = [p for p, v in params.items() if v.kind is v.POSITIONAL_OR_KEYWORD]
    keyword = [p for p, v in params.items() if v.kind is v.KEYWORD_ONLY]
    assert [t.name.lower() for t in spec.inputs] == [p.lower() for p in positional]
    assert {a.name for a in spec.attributes} <= set(keyword)
    assert spec.qualified_name == f"jetmamba::{name}"


def test_attribute_checks():
    spec = OPSET["SelectiveScan"]
    good = {f"{t}_scale": 0.1 for t in ("u", "dt", "B", "C", "z")}
    assert spec.check_attributes(good) == good
    with pytest.raises(ValueError, match="missing attribute z_scale"):
        spec.check_attributes({k: v for k, v in good.items() if k != "z_scale"})
    with pytest.raises(ValueError, match="u_scale: 0.0 is below"):
        spec.check_attributes({**good, "u_scale": 0.0})
    with pytest.raises(ValueError, match="not finite"):
        spec.check_attributes({**good, "B_scale": float("inf")})
    with pytest.raises(ValueError, match="unknown attributes"):
        spec.check_attributes({**good, "colour": 1.0})


def test_qlinear_is_the_dequantized_gemm():
    g = torch.Generator().manual_seed(0)
    x_q = torch.randint(-128, 128, (3, 5, 16), generator=g, dtype=torch.int8)
    w_q = torch.randint(-128, 128, (7, 16), generator=g, dtype=torch.int8)
    ws, b = torch.rand(7, generator=g) + 0.01, torch.randn(7, generator=g)
    expected = dequantize(x_q, 0.02).double() @ dequantize(w_q, ws, axis=0).double().t() + b.double()
    torch.testing.assert_close(ref.qlinear(x_q, 0.02, w_q, ws, b).double(), expected, rtol=1e-6, atol=1e-4)


def test_rms_norm_quant_residual_and_output():
    x, r, w = torch.randn(2, 3, 8).half(), torch.randn(2, 3, 8).half(), torch.rand(8) + 0.5
    y, r_out = ref.rms_norm_quant(x, r, w, eps=1e-5, out_scale=0.05)
    s = (x.float() + r.float()).half()
    assert torch.equal(r_out, s) and y.dtype == torch.int8
    n = s.float() * torch.rsqrt(s.float().pow(2).mean(-1, keepdim=True) + 1e-5) * w
    assert torch.equal(y, quantize(n, 0.05))


def test_conv_quant_state_is_exact_and_streams():
    g = torch.Generator().manual_seed(1)
    x_q = torch.randint(-128, 128, (2, 9, 6), generator=g, dtype=torch.int8)
    w_q = torch.randint(-128, 128, (6, 4), generator=g, dtype=torch.int8)
    kw = dict(x_scale=0.03, w_scale=torch.rand(6, generator=g).tolist(), out_scale=0.02)
    full, full_state = ref.causal_conv1d_quant(x_q, w_q, None, None, **kw)
    a, st = ref.causal_conv1d_quant(x_q[:, :2], w_q, None, None, **kw)
    b, st = ref.causal_conv1d_quant(x_q[:, 2:], w_q, None, st, **kw)
    assert torch.equal(torch.cat([a, b], 1), full) and torch.equal(st, full_state)
    assert torch.equal(full_state, x_q[:, -3:])


def test_selective_scan_quant_is_the_dequantized_scan():
    g = torch.Generator().manual_seed(2)
    b, l, d, n = 2, 7, 8, 4
    q = lambda *s: torch.randint(-128, 128, s, generator=g, dtype=torch.int8)  # noqa: E731
    u, dt, B, C, z = q(b, l, d), q(b, l, d), q(b, l, n), q(b, l, n), q(b, l, d)
    A, D, bias = -torch.rand(d, n, generator=g) * 4, torch.randn(d, generator=g), torch.randn(d, generator=g)
    sc = dict(u_scale=0.02, dt_scale=0.01, B_scale=0.03, C_scale=0.03, z_scale=0.02)
    y, h = ref.selective_scan_quant(u, dt, A, B, C, D, z, bias, None, **sc, out_dtype=torch.float32)
    y_ref, h_ref = selective_scan_ref(
        (u.double() * 0.02), dt.double() * 0.01, A.double(), B.double() * 0.03, C.double() * 0.03,
        D.double(), z.double() * 0.02, None, bias.double(), True,
    )  # fmt: skip
    torch.testing.assert_close(y.double(), y_ref, atol=1e-4, rtol=1e-4)
    assert h.dtype == torch.float16


def test_hadamard_quant():
    x = torch.randn(3, 12)
    y = ref.hadamard_quant(x, out_scale=float(scale_for(4.0)))
    expected = quantize(x.double() @ hadamard_matrix(12).t() / 12**0.5, scale_for(4.0))
    assert (y.int() - expected.int()).abs().max() <= 1  # fp32 vs fp64 rounding ties only


def test_ssd_scan_quant_per_channel_and_group_scales():
    g = torch.Generator().manual_seed(3)
    b, l, H, P, G, N = 2, 9, 4, 8, 2, 4
    q = lambda *s: torch.randint(-128, 128, s, generator=g, dtype=torch.int8)  # noqa: E731
    x, B, C = q(b, l, H, P), q(b, l, G, N), q(b, l, G, N)
    dt, A = torch.randn(b, l, H, generator=g), -torch.rand(H, generator=g) * 3
    D, bias = torch.randn(H, generator=g), torch.randn(H, generator=g)
    xs, bs, cs = torch.rand(H * P, generator=g) * 0.05 + 0.01, torch.tensor([0.02, 0.04]), torch.tensor([0.03, 0.01])
    scales = {"x_scale": xs.tolist(), "B_scale": bs.tolist(), "C_scale": cs.tolist()}
    y, h = ref.ssd_scan_quant(x.reshape(b, l, H * P), dt, A, B, C, D, bias, None, heads=H, dt_max=0.5,
                              out_dtype=torch.float32, **scales)  # fmt: skip
    d = torch.nn.functional.softplus(dt.double() + bias.double()).clamp(max=0.5)
    y_ref, _ = ssd_scan_ref(
        x.double() * xs.double().view(H, P), d, A.double(), B.double() * bs.double().view(G, 1),
        C.double() * cs.double().view(G, 1), D.double(),
    )  # fmt: skip
    torch.testing.assert_close(y.double(), y_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("hadamard", [0, 1])
def test_gated_rms_norm_quant(hadamard):
    y, z, w = torch.randn(2, 3, 24), torch.randint(-128, 128, (2, 3, 24), dtype=torch.int8), torch.rand(24) + 0.5
    out = ref.gated_rms_norm_quant(y, z, w, z_scale=0.02, eps=1e-5, group_size=12, out_scale=0.03, hadamard=hadamard)
    n = gated_rms_norm(y, z.float() * 0.02, w, 1e-5, 12).double()
    if hadamard:
        n = n @ hadamard_matrix(24).t() / 24**0.5
    assert (out.int() - quantize(n, 0.03).int()).abs().max() <= 1


def test_dt_max_may_be_unbounded():
    spec = OPSET["SSDScan"]
    attrs = spec.check_attributes({"heads": 2, "x_scale": [0.1], "B_scale": [0.1], "C_scale": [0.1]})
    assert attrs["dt_max"] == float("inf")
    with pytest.raises(ValueError, match="x_scale: inf is not finite"):
        spec.check_attributes({"heads": 2, "x_scale": [float("inf")], "B_scale": [0.1], "C_scale": [0.1]})


@pytest.mark.parametrize("op,facts,expect", [
    ("CausalConv1d", {"k": 4}, None),
    ("CausalConv1dFp", {"k": 5}, "kernel width 5 is outside 2..4"),
    ("HadamardQuant", {"n": 3072, "out_scale": 0.1}, None),
    ("HadamardQuant", {"n": 9 * 512, "out_scale": 0.1}, "no Hadamard transform of order 4608"),
    ("HadamardQuant", {"n": 32768, "out_scale": 0.1}, "order 32768 is above 16384"),
    ("HadamardQuant", {"n": 1024, "out_scale": 0.0}, "out_scale: 0.0 is below"),
    ("GatedRMSNormQuant", {"n": 0, "hadamard": 0}, None),  # no transform, no order to check
    ("GatedRMSNormQuant", {"n": 40 * 1024, "hadamard": 1}, "order 40960 is above 16384"),
    ("Conv4d", {}, "no op 'Conv4d'"),
])  # fmt: skip
def test_supports_names_the_reason(op, facts, expect):
    from jetmamba.compiler.ops import supports

    reason = supports(op, **facts)
    assert reason is None if expect is None else expect in reason


def test_every_limit_is_documented():
    for spec in OPSET.values():
        assert all(limit.doc for limit in spec.limits), spec.name


@pytest.mark.parametrize("bias", [False, True])
def test_w4a16_linear_is_the_dequantized_gemm(bias):
    from jetmamba.compiler.ops.int4 import quantize_rtn

    g = torch.Generator().manual_seed(4)
    w = torch.randn(24, 256, generator=g) * 0.1
    qweight, scales = quantize_rtn(w, 64)
    x, b = torch.randn(2, 5, 256, generator=g).half(), torch.randn(24, generator=g) if bias else None
    codes = torch.stack([qweight.int() & 15, qweight.int() >> 4], -1).reshape(24, 256)
    w_hat = torch.where(codes > 7, codes - 16, codes).double() * scales.double().repeat_interleave(64, 1)
    y = ref.w4a16_linear(x, qweight, scales, b, group_size=64)
    expected = x.double() @ w_hat.t() + (0 if b is None else b.double())
    assert y.dtype == torch.float16 and y.shape == (2, 5, 24)
    torch.testing.assert_close(y.double(), expected, rtol=1e-3, atol=1e-3)  # one fp16 rounding


def test_w4a8_linear_sums_groups_of_integers():
    from jetmamba.compiler.ops.int4 import quantize_rtn, unpack_int4

    g = torch.Generator().manual_seed(5)
    qweight, scales = quantize_rtn(torch.randn(16, 128, generator=g), 32)
    x = torch.randint(-128, 128, (3, 1, 128), generator=g, dtype=torch.int8)
    b = torch.randn(16, generator=g)
    y = ref.w4a8_linear(x, qweight, scales, b, x_scale=0.01, group_size=32)
    q = unpack_int4(qweight).long().reshape(16, 4, 32)
    isum = torch.einsum("mgk,ngk->mng", x.long().reshape(3, 4, 32), q)  # exact integers
    expected = (isum.double() * scales.double()).sum(-1) * 0.01 + b.double()
    torch.testing.assert_close(y.reshape(3, 16).double(), expected, rtol=1e-3, atol=1e-3)


def test_int4_group_size_attribute():
    spec = OPSET["W4A8Linear"]
    assert spec.check_attributes({"x_scale": 0.1}) == {"x_scale": 0.1, "group_size": 128}
    with pytest.raises(ValueError, match="group_size: 16 is below 32"):
        spec.check_attributes({"x_scale": 0.1, "group_size": 16})


def test_int8_ssm_state_codes_and_scales():
    """quantize_ssm_state: a scale per row = max |h| / 127, codes rn(h / scale) in [-127, 127] (the
    row's max maps to +-127), half a step at most from h; zero rows (and rows whose scale underflows)
    give scale 0 and zero codes; selective_scan_int8_state is the scan between the two."""
    g = torch.Generator().manual_seed(7)
    h = torch.randn(2, 5, 16, generator=g)
    h[0, 1] = 0
    h[1, 2] = 1e-45  # a subnormal row: its scale underflows to 0
    codes, scale = ref.quantize_ssm_state(h)
    assert codes.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (2, 5)
    assert scale[0, 1] == 0 and scale[1, 2] == 0 and (codes[0, 1] == 0).all() and (codes[1, 2] == 0).all()
    ok = scale > 0
    assert torch.equal(scale[ok], h.abs().amax(-1)[ok] / 127)
    assert (codes.abs().amax(-1)[ok] == 127).all() and codes.min() >= -127
    err = (ref.dequantize_ssm_state(codes, scale) - h).abs()
    assert (err <= scale.unsqueeze(-1) / 2 * (1 + 1e-6) + 1e-44).all()
    half = torch.tensor([[[0.5, 1.5, 2.5, -0.5, 127.0] + [0.0] * 11]])  # ties go to even
    assert ref.quantize_ssm_state(half)[0][0, 0, :5].tolist() == [0, 2, 2, 0, 127]
