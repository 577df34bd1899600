"""Every op's ONNX function body, run by ONNX Runtime, equals the op's reference.

int8 outputs must be equal except for rounding ties (a value exactly between two codes after a
differently ordered fp32 sum); fp outputs within the tolerances in tests/support/tolerances.py.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from tolerances import assert_close

from jetmamba.compiler.functions import ONNX_OPSET, Structure, build_function, overload_of
from jetmamba.compiler.graph import FLOAT_NAMES
from jetmamba.compiler.ops import OPSET
from jetmamba.compiler.ops.spec import DOMAIN

NP = {torch.int8: np.int8, torch.float16: np.float16, torch.float32: np.float32}
IR = {np.dtype(np.int8): ir.DataType.INT8, np.dtype(np.float16): ir.DataType.FLOAT16,
      np.dtype(np.float32): ir.DataType.FLOAT, np.dtype(np.uint8): ir.DataType.UINT8}  # fmt: skip


def run_op(op: str, structure: Structure, inputs: dict, attrs: dict, outputs: list[str]) -> list[np.ndarray]:
    """One node of ``op`` with its function body, through ONNX Runtime's CPU provider."""
    import onnx

    spec = OPSET[op]
    values = []
    for t in spec.inputs:
        if t.name in inputs:
            a = inputs[t.name]
            values.append(ir.Value(name=t.name, type=ir.TensorType(IR[a.dtype]), shape=ir.Shape(a.shape)))
    floats = ir.DataType.FLOAT16 if structure.float_type == "float16" else ir.DataType.FLOAT

    def out_type(t):
        if t.dtypes == ("int8",):
            return ir.DataType.INT8
        if t.dtypes in (("float16",), ("float32",)):  # one dtype whatever the graph's float type
            return IR[np.dtype(t.dtypes[0])]
        return IR[inputs["ssm_state"].dtype] if t.name == "ssm_state_out" else floats

    types = {t.name: out_type(t) for t in spec.outputs}
    ranks = {t.name: (inputs["x"].ndim if "..." in t.shape else t.shape.count(",") + 1) for t in spec.outputs}
    outs = [ir.Value(name=n, type=ir.TensorType(types[n]), shape=ir.Shape([None] * ranks[n])) for n in outputs]
    node = ir.Node(DOMAIN, op, values, attributes=[ir.convenience.convert_attribute(k, v) for k, v in attrs.items()],
                   outputs=outs, overload=overload_of(op, structure))  # fmt: skip
    graph = ir.Graph(values, outs, nodes=[node], opset_imports={"": ONNX_OPSET, DOMAIN: 1}, name="single_op")
    model = ir.Model(graph, ir_version=10, functions=[build_function(op, structure)])
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v for k, v in inputs.items()})


def _int8(g, *shape):
    return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)


def _np(**tensors):
    return {k: v.numpy() for k, v in tensors.items() if v is not None}


def assert_codes(got: np.ndarray, want: torch.Tensor, max_tie_fraction: float = 1e-3):
    """int8 equal, or off by one on at most a small fraction of elements (rounding ties)."""
    diff = np.abs(got.astype(np.int32) - want.numpy().astype(np.int32))
    assert diff.max() <= 1, f"int8 codes differ by {diff.max()}"
    assert (diff > 0).mean() <= max_tie_fraction, f"{(diff > 0).mean():.2%} of codes off by one"


@pytest.mark.parametrize("n", [16, 12, 20, 28, 40, 96, 768])
def test_hadamard_quant(n):
    from jetmamba.compiler.ops.reference import hadamard_quant

    g = torch.Generator().manual_seed(n)
    x = torch.randn(2, 3, n, generator=g).half()
    (y,) = run_op("HadamardQuant", Structure(n=n), _np(x=x), {"out_scale": 0.02}, ["y"])
    assert_codes(y, hadamard_quant(x, out_scale=0.02))


@pytest.mark.parametrize("residual", [True, False])
def test_rms_norm_quant(residual):
    from jetmamba.compiler.ops.reference import rms_norm_quant

    g = torch.Generator().manual_seed(1)
    x, r, w = torch.randn(2, 5, 64, generator=g).half(), torch.randn(2, 5, 64, generator=g).half(), torch.rand(64)
    want_y, want_r = rms_norm_quant(x, r if residual else None, w.half(), eps=1e-5, out_scale=0.03)
    s = Structure(optional=("residual",) if residual else ())
    y, r_out = run_op("RMSNormQuant", s, _np(x=x, residual=r if residual else None, weight=w.half()),
                      {"eps": 1e-5, "out_scale": 0.03}, ["y", "residual_out"])  # fmt: skip
    assert_codes(y, want_y)
    np.testing.assert_array_equal(r_out, want_r.numpy())


@pytest.mark.parametrize("hadamard", [0, 1])
def test_gated_rms_norm_quant(hadamard):
    from jetmamba.compiler.ops.reference import gated_rms_norm_quant

    g = torch.Generator().manual_seed(2)
    d, groups = 96, 2
    y, z, w = torch.randn(2, 7, d, generator=g).half(), _int8(g, 2, 7, d), torch.rand(d).half()
    attrs = {"z_scale": 0.05, "eps": 1e-5, "group_size": d // groups, "out_scale": 0.02, "hadamard": hadamard}
    want = gated_rms_norm_quant(y, z, w, **attrs)
    (out,) = run_op("GatedRMSNormQuant", Structure(n=d if hadamard else 0), _np(y=y, z=z, weight=w), attrs, ["out"])
    assert_codes(out, want)


@pytest.mark.parametrize("k,length,bias,per_channel", [(4, 9, True, True), (4, 1, True, False), (2, 5, False, True),
                                                        (3, 2, True, True)])  # fmt: skip
def test_causal_conv1d(k, length, bias, per_channel):
    from jetmamba.compiler.ops.reference import causal_conv1d_quant

    g = torch.Generator().manual_seed(k * 10 + length)
    c = 24
    x, w, state = _int8(g, 2, length, c), _int8(g, c, k), _int8(g, 2, k - 1, c)
    b = torch.randn(c, generator=g) if bias else None

    def scales(v):
        return (torch.rand(c, generator=g) * v + v / 2).tolist() if per_channel else [v]

    attrs = {"x_scale": scales(0.02), "w_scale": scales(0.01), "out_scale": scales(0.05)}
    want_y, want_state = causal_conv1d_quant(x, w, b, state, **attrs)
    y, state_out = run_op("CausalConv1d", Structure(k=k, optional=("bias",) if bias else ()),
                          _np(x=x, weight=w, bias=b, conv_state=state), attrs, ["y", "conv_state_out"])  # fmt: skip
    assert_codes(y, want_y)
    np.testing.assert_array_equal(state_out, want_state.numpy())


@pytest.mark.parametrize("length,smooth", [(13, False), (1, False), (6, True)])
def test_selective_scan(length, smooth):
    from jetmamba.compiler.ops.reference import selective_scan_quant

    g = torch.Generator().manual_seed(length)
    bsz, d, n = 2, 16, 8
    u, dt, z = _int8(g, bsz, length, d), _int8(g, bsz, length, d), _int8(g, bsz, length, d)
    B, C = _int8(g, bsz, length, n), _int8(g, bsz, length, n)
    A = -torch.rand(d, n, generator=g) - 0.5
    D, dt_bias = torch.randn(d, generator=g), torch.randn(d, generator=g) - 2
    state = (torch.randn(bsz, d, n, generator=g) * 0.1).half()
    gs = torch.rand(d, generator=g) + 0.5 if smooth else None
    attrs = {"u_scale": 0.02, "dt_scale": 0.03, "B_scale": 0.02, "C_scale": 0.02, "z_scale": 0.03}
    want_y, want_h = selective_scan_quant(u, dt, A, B, C, D, z, dt_bias, state, gs, **attrs)
    y, h = run_op("SelectiveScan", Structure(optional=("gate_smooth",) if smooth else ()),
                  _np(u=u, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, ssm_state=state, gate_smooth=gs),
                  attrs, ["y", "ssm_state_out"])  # fmt: skip
    assert y.dtype == np.float16 and h.dtype == np.float16
    assert_close(torch.from_numpy(y).float(), want_y.float(), "op.onnx_body.fp16")
    assert_close(torch.from_numpy(h).float(), want_h.float(), "op.onnx_body.fp16")


@pytest.mark.parametrize("length,smooth", [(13, False), (1, True)])
def test_selective_scan_int8_state(length, smooth):
    """The int8-state body against its reference: y in fp16; scales to the fp32 rounding of h
    (ORT and torch sum in other orders: within 1e-5, relative); codes equal, or one apart where the
    reference's h / scale is a near-tie; a channel that stays zero gets scale 0 and zero codes."""
    from jetmamba.compiler.ops.reference import quantize_ssm_state, selective_scan_int8_state

    g = torch.Generator().manual_seed(40 + length)
    bsz, d, n = 2, 16, 8
    u, dt, z = _int8(g, bsz, length, d), _int8(g, bsz, length, d), _int8(g, bsz, length, d)
    u[0, :, 3] = 0  # with a zero state below: channel 3 of row 0 stays zero
    B, C = _int8(g, bsz, length, n), _int8(g, bsz, length, n)
    A = -torch.rand(d, n, generator=g) - 0.5
    D, dt_bias = torch.randn(d, generator=g), torch.randn(d, generator=g) - 2
    h0 = torch.randn(bsz, d, n, generator=g) * 0.1
    h0[0, 3] = 0
    codes, scale = quantize_ssm_state(h0)
    gs = torch.rand(d, generator=g) + 0.5 if smooth else None
    attrs = {"u_scale": 0.02, "dt_scale": 0.03, "B_scale": 0.02, "C_scale": 0.02, "z_scale": 0.03}
    want_y, want_codes, want_scale = selective_scan_int8_state(u, dt, A, B, C, D, z, dt_bias, codes, scale, gs,
                                                               **attrs)  # fmt: skip
    y, got_codes, got_scale = run_op(
        "SelectiveScanInt8State", Structure(optional=("gate_smooth",) if smooth else ()),
        _np(u=u, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias, ssm_state=codes, ssm_state_scale=scale,
            gate_smooth=gs),
        attrs, ["y", "ssm_state_out", "ssm_state_scale_out"],
    )  # fmt: skip
    assert y.dtype == np.float16 and got_codes.dtype == np.int8 and got_scale.dtype == np.float32
    assert_close(torch.from_numpy(y).float(), want_y.float(), "op.onnx_body.fp16")
    got_scale, got_codes = torch.from_numpy(got_scale), torch.from_numpy(got_codes)
    assert got_scale[0, 3] == 0 and (got_codes[0, 3] == 0).all()
    assert ((got_scale - want_scale).abs() <= 1e-5 * want_scale).all()
    diff = (got_codes.int() - want_codes.int()).abs()
    assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.99


@pytest.mark.parametrize("length,groups,per_channel", [(11, 2, True), (1, 1, False), (4, 4, True)])
def test_ssd_scan(length, groups, per_channel):
    from jetmamba.compiler.ops.reference import ssd_scan_quant

    g = torch.Generator().manual_seed(100 + length)
    bsz, H, P, N = 2, 4, 8, 16
    x, B, C = _int8(g, bsz, length, H * P), _int8(g, bsz, length, groups, N), _int8(g, bsz, length, groups, N)
    dt = torch.randn(bsz, length, H, generator=g).half()
    A, D, dt_bias = -torch.rand(H, generator=g) - 0.5, torch.randn(H, generator=g), torch.randn(H, generator=g) - 1
    state = (torch.randn(bsz, H, P, N, generator=g) * 0.1).half()
    attrs = {
        "x_scale": (torch.rand(H * P, generator=g) * 0.02 + 0.01).tolist() if per_channel else [0.02],
        "B_scale": (torch.rand(groups, generator=g) * 0.02 + 0.01).tolist() if per_channel else [0.02],
        "C_scale": (torch.rand(groups, generator=g) * 0.02 + 0.01).tolist() if per_channel else [0.02],
        "dt_min": 0.001, "dt_max": 0.5 if per_channel else float("inf"), "heads": H,
    }  # fmt: skip
    want_y, want_h = ssd_scan_quant(x, dt, A, B, C, D, dt_bias, state, **attrs)
    y, h = run_op("SSDScan", Structure(), _np(x=x, dt=dt, A=A, B=B, C=C, D=D, dt_bias=dt_bias, ssm_state=state),
                  attrs, ["y", "ssm_state_out"])  # fmt: skip
    assert_close(torch.from_numpy(y).float(), want_y.float(), "op.onnx_body.fp16")
    assert_close(torch.from_numpy(h).float(), want_h.float(), "op.onnx_body.fp16")


@pytest.mark.parametrize("structure", [Structure(), Structure("float32", n=3072), Structure(k=4, optional=("bias",)),
                                       Structure(optional=("gate_smooth", "residual"))])  # fmt: skip
def test_overload_names_round_trip(structure):
    from jetmamba.compiler.functions import structure_of

    assert structure_of(overload_of("SelectiveScan", structure)) == structure


# ---------------------------------------------------------------- fp variants


def _fp_case(op: str, dtype: torch.dtype, g: torch.Generator):
    """(structure, inputs, attrs, outputs) of one fp-variant case in ``dtype``."""
    bsz, length = 2, 7

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    if op == "RMSNorm":
        return (Structure(optional=("residual",)), {"x": rand(bsz, length, 48), "residual": rand(bsz, length, 48),
                "weight": rand(48)}, {"eps": 1e-5}, ["y", "residual_out"])  # fmt: skip
    if op == "GatedRMSNorm":
        return Structure(), {"y": rand(bsz, length, 64), "z": rand(bsz, length, 64), "weight": rand(64)}, \
            {"eps": 1e-5, "group_size": 32}, ["out"]  # fmt: skip
    if op == "CausalConv1dFp":
        return (Structure(k=4, optional=("bias",)), {"x": rand(bsz, length, 24), "weight": rand(24, 4, scale=0.5),
                "bias": rand(24), "conv_state": rand(bsz, 3, 24)}, {}, ["y", "conv_state_out"])  # fmt: skip
    d, n = 16, 8
    if op == "SelectiveScanFp":
        inputs = {"u": rand(bsz, length, d), "dt": rand(bsz, length, d), "A": -torch.rand(d, n, generator=g) - 0.5,
                  "B": rand(bsz, length, n), "C": rand(bsz, length, n), "D": torch.randn(d, generator=g),
                  "z": rand(bsz, length, d), "dt_bias": torch.randn(d, generator=g) - 2,
                  "ssm_state": rand(bsz, d, n, scale=0.1)}  # fmt: skip
        return Structure(), inputs, {}, ["y", "ssm_state_out"]
    H, P, G = 4, 8, 2
    inputs = {"x": rand(bsz, length, H * P), "dt": rand(bsz, length, H), "A": -torch.rand(H, generator=g) - 0.5,
              "B": rand(bsz, length, G, n), "C": rand(bsz, length, G, n), "D": torch.randn(H, generator=g),
              "dt_bias": torch.randn(H, generator=g) - 1, "ssm_state": rand(bsz, H, P, n, scale=0.1)}  # fmt: skip
    return Structure(), inputs, {"heads": H, "dt_min": 0.001, "dt_max": 0.5}, ["y", "ssm_state_out"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("op", ["RMSNorm", "GatedRMSNorm", "CausalConv1dFp", "SelectiveScanFp", "SSDScanFp"])
def test_fp_variant(op, dtype):
    """Each fp variant's body equals its reference, in the graph's float type (fp32: the CPU
    flavour, where the body and the reference do the same fp32 maths up to summation order)."""
    g = torch.Generator().manual_seed(len(op))
    structure, inputs, attrs, outputs = _fp_case(op, dtype, g)
    structure = Structure(FLOAT_NAMES[dtype], k=structure.k, optional=structure.optional)
    got = run_op(op, structure, _np(**inputs), attrs, outputs)
    want = OPSET[op].reference(*inputs.values(), **attrs)
    want = want if isinstance(want, tuple) else (want,)
    for name, a, w in zip(outputs, got, want, strict=True):
        if name.endswith("state_out") and "conv" in name or name == "residual_out":
            np.testing.assert_array_equal(a, w.numpy())  # copied or one rounding of one sum: exact
        else:
            assert a.dtype == NP[w.dtype], name
            assert_close(torch.from_numpy(a).float(), w.float(), "op.onnx_body.fp16" if dtype == torch.float16
                         else "op.onnx_body.fp32")  # fmt: skip


# ---------------------------------------------------------------- 4-bit weight GEMMs


@pytest.mark.parametrize("op", ["W4A16Linear", "W4A8Linear"])
@pytest.mark.parametrize("k,group_size,bias", [(256, 128, True), (192, 64, False), (96, 32, True)])
def test_int4_linear(op, k, group_size, bias):
    """The bodies unpack the nibbles with BitwiseAnd / BitShift and equal the references: the same
    fp32 products, summed in another order, then one fp16 rounding."""
    from jetmamba.compiler.ops.int4 import quantize_rtn

    g = torch.Generator().manual_seed(k + group_size)
    n = 40
    qweight, scales = quantize_rtn(torch.randn(n, k, generator=g) * 0.05, group_size)
    b = torch.randn(n, generator=g) if bias else None
    if op == "W4A16Linear":
        x, attrs = torch.randn(2, 3, k, generator=g).half(), {"group_size": group_size}
    else:
        x, attrs = _int8(g, 2, 3, k), {"x_scale": 0.02, "group_size": group_size}
    want = OPSET[op].reference(x, qweight, scales, b, **attrs)
    (y,) = run_op(op, Structure(optional=("bias",) if bias else ()), _np(x=x, qweight=qweight, scales=scales, bias=b),
                  attrs, ["y"])  # fmt: skip
    assert y.dtype == np.float16 and y.shape == (2, 3, n)
    assert_close(torch.from_numpy(y).float(), want.float(), "op.onnx_body.fp16")
