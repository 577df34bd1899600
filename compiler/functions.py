"""ONNX function bodies of the jetmamba ops: each op written with standard ONNX ops only.

The bundle flavour ONNX Runtime runs carries one of these per (op, overload) it uses, so ORT
executes the very graph TensorRT gets (where the parser maps each node to its plugin instead).
Each body implements the op's reference (:mod:`jetmamba.compiler.ops.reference`): int8 inputs
dequantized exactly, fp32 maths, int8 outputs through ``QuantizeLinear`` (round half to even,
saturating), fp outputs in the node's float type.

Scales and other scalars travel as node attributes; a body reads them with ``Constant`` nodes
that reference the attribute. What an attribute cannot express — a loop length, a Hadamard order,
whether an optional input is present — is static structure, and selects an *overload*: one
function per distinct structure, named by :func:`overload_of` (e.g. ``HadamardQuant`` of order
3072 in fp16 is overload ``f16-n3072``). Bodies are built with onnx_ir, never as hand-written protobuf.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir import tape

from jetmamba.compiler.ops.spec import DOMAIN

ONNX_OPSET = 20  # the newest opset TensorRT 10.x parses (onnx-tensorrt operators-10.1.md: opsets 9-20)
FLOAT = ir.DataType.FLOAT
A = ir.AttributeType


@dataclass(frozen=True)
class Structure:
    """The static facts a body depends on (beyond attributes): what picks an overload."""

    float_type: str = "float16"  # the graph's float type: "float16" or "float32"
    n: int = 0  # HadamardQuant / GatedRMSNormQuant with hadamard: the transform order
    k: int = 0  # CausalConv1d: kernel width
    optional: tuple[str, ...] = ()  # optional inputs present (e.g. "residual", "bias", "gate_smooth")


def overload_of(op: str, s: Structure) -> str:
    parts = [s.float_type.replace("float", "f")]
    if s.n:
        parts.append(f"n{s.n}")
    if s.k:
        parts.append(f"k{s.k}")
    parts += sorted(s.optional)
    return "-".join(parts)


def structure_of(overload: str) -> Structure:
    """The inverse of :func:`overload_of`: a node's overload names its body's structure."""
    parts = overload.split("-")
    if not parts or parts[0] not in ("f16", "f32"):
        raise ValueError(f"not a jetmamba overload: {overload!r}")
    kw: dict = {"float_type": "float16" if parts[0] == "f16" else "float32", "optional": ()}
    for part in parts[1:]:
        if part[:1] in ("n", "k") and part[1:].isdigit():
            kw[part[0]] = int(part[1:])
        else:
            kw["optional"] = (*kw["optional"], part)
    return Structure(**kw)


class _Body:
    """A function body under construction: named inputs, a tape, attribute references."""

    def __init__(self, op: str, inputs: list[str], attributes: dict[str, A]):
        self.op, self.attributes = op, attributes
        self.inputs = [ir.Value(name=n) for n in inputs]
        self.t = tape.Tape()

    def __getitem__(self, name: str) -> ir.Value:
        return next(v for v in self.inputs if v.name == name)

    def __call__(self, op_type: str, *inputs: ir.Value | None, **attrs) -> ir.Value:
        return self.t.op(op_type, list(inputs), attrs or None)

    def multi(self, op_type: str, inputs, num_outputs: int, **attrs) -> tuple[ir.Value, ...]:
        return tuple(self.t.op_multi_out(op_type, list(inputs), attrs or None, num_outputs=num_outputs))

    def attr(self, name: str) -> ir.Value:
        """The value of a float / floats / int attribute of the node, as a tensor."""
        kind = self.attributes[name]
        field = {A.FLOAT: "value_float", A.FLOATS: "value_floats", A.INT: "value_int"}[kind]
        return self("Constant", **{field: ir.RefAttr(field, name, kind)})

    def const(self, array) -> ir.Value:
        return self("Constant", value=ir.tensor(np.asarray(array)))

    def i64(self, *values: int) -> ir.Value:
        return self.const(np.array(values, dtype=np.int64))

    def f32(self, value: float) -> ir.Value:
        return self.const(np.array(value, dtype=np.float32))

    # ------------------------------------------------------------ int8 helpers

    def dequantize(self, q: ir.Value, scale_attr: str) -> ir.Value:
        """int8 -> fp32, one scale or one per channel of the last axis (broadcast)."""
        return self("Mul", self("Cast", q, to=FLOAT), self.attr(scale_attr))

    def quantize(self, x: ir.Value, scale_attr: str) -> ir.Value:
        """fp32 -> int8 as QuantizeLinear: round(x / scale) half to even, saturated. Per-channel
        scales ride on the last axis; QuantizeLinear's axis must be static, so the division is
        done here and the node sees a unit scale (exactly the same arithmetic)."""
        scaled = self("Div", x, self.attr(scale_attr))
        return self("QuantizeLinear", scaled, self.f32(1.0), self.const(np.array(0, dtype=np.int8)))

    def load(self, name: str, scale_attr: str | None) -> ir.Value:
        """An input as fp32: dequantized with ``scale_attr`` (an int8 op), or cast (an fp variant)."""
        return self("Cast", self[name], to=FLOAT) if scale_attr is None else self.dequantize(self[name], scale_attr)

    def store(self, x: ir.Value, s: Structure, scale_attr: str | None) -> ir.Value:
        """An fp32 result as the op outputs it: int8 codes, or the graph's float type."""
        return self.to_float(x, s) if scale_attr is None else self.quantize(x, scale_attr)

    def silu(self, x: ir.Value) -> ir.Value:
        return self("Mul", x, self("Sigmoid", x))

    def softplus(self, x: ir.Value) -> ir.Value:
        """log(1 + e^x), as torch computes it: x itself above 20 (no overflow, same value)."""
        return self("Where", self("Greater", x, self.f32(20.0)), x, self("Softplus", x))

    def rms(self, x: ir.Value, eps: ir.Value) -> ir.Value:
        """x * rsqrt(mean(x^2, last axis) + eps), fp32."""
        mean = self("ReduceMean", self("Mul", x, x), self.i64(-1), keepdims=1)
        return self("Mul", x, self("Reciprocal", self("Sqrt", self("Add", mean, eps))))

    def to_float(self, x: ir.Value, s: Structure) -> ir.Value:
        return self("Cast", x, to=ir.DataType.FLOAT16 if s.float_type == "float16" else FLOAT)

    def function(self, outputs: list[ir.Value], names: list[str], s: Structure) -> ir.Function:
        for v, n in zip(outputs, names, strict=True):
            v.name = n
        graph = ir.Graph(self.inputs, outputs, nodes=self.t.nodes, opset_imports={"": ONNX_OPSET}, name=self.op)
        attrs = [ir.Attr(n, k, None) for n, k in self.attributes.items()]
        return ir.Function(DOMAIN, self.op, overload_of(self.op, s), graph=graph, attributes=attrs)


# ---------------------------------------------------------------- Hadamard


def _hadamard(b: _Body, x: ir.Value, n: int) -> ir.Value:
    """x [..., n] fp32 -> x H^T / sqrt(n), H = H_m (x) H_2 (x) ... (x) H_2 (jetmamba's H):
    the base factor as one MatMul, each H_2 factor as an add/sub butterfly on its own axis."""
    from jetmamba.calibration.hadamard import base_matrix, factor

    m, power = factor(n)
    k = power.bit_length() - 1
    shape = b("Shape", x)
    lead = b("Slice", shape, b.i64(0), b.i64(-1))
    dims = [m] + [2] * k
    y = b("Reshape", x, b("Concat", b.i64(-1), b.i64(*dims), axis=0))  # [N, m, 2, ..., 2]
    for axis in range(2, 2 + k):
        lo, hi = b.multi("Split", [y, b.i64(1, 1)], 2, axis=axis)
        y = b("Concat", b("Add", lo, hi), b("Sub", lo, hi), axis=axis)
    if m > 1:
        # contract the base axis (1) with H_m: move it last, multiply by H_m^T, move it back
        perm = [0, *range(2, 2 + k), 1]
        inv = [0, 1 + k, *range(1, 1 + k)]
        hm_t = b.const(base_matrix(m).t().numpy().astype(np.float32))
        y = b("Transpose", b("MatMul", b("Transpose", y, perm=perm), hm_t), perm=inv)
    y = b("Reshape", y, b("Concat", lead, b.i64(n), axis=0))
    return b("Mul", y, b.f32(1.0 / math.sqrt(n)))


def hadamard_quant(s: Structure) -> ir.Function:
    b = _Body("HadamardQuant", ["x"], {"out_scale": A.FLOAT})
    y = b.quantize(_hadamard(b, b("Cast", b["x"], to=FLOAT), s.n), "out_scale")
    return b.function([y], ["y"], s)


# ---------------------------------------------------------------- norms


def _q(quant: bool, attr: str) -> str | None:
    """The scale attribute of an int8 tensor, or None in an fp variant."""
    return attr if quant else None


def rms_norm(s: Structure, quant: bool = True) -> ir.Function:
    has_res = "residual" in s.optional
    b = _Body("RMSNormQuant" if quant else "RMSNorm", ["x", "residual", "weight"] if has_res else ["x", "weight"],
              {"eps": A.FLOAT, "out_scale": A.FLOAT} if quant else {"eps": A.FLOAT})  # fmt: skip
    r32 = b("Cast", b["x"], to=FLOAT)
    if has_res:
        r32 = b("Add", r32, b("Cast", b["residual"], to=FLOAT))
    r = b.to_float(r32, s)  # the residual stream is stored in the graph's float type
    normed = b.rms(b("Cast", r, to=FLOAT), b.attr("eps"))
    y = b.store(b("Mul", normed, b("Cast", b["weight"], to=FLOAT)), s, _q(quant, "out_scale"))
    return b.function([y, b("Identity", r)], ["y", "residual_out"], s)


def gated_rms_norm(s: Structure, quant: bool = True) -> ir.Function:
    attrs = {"z_scale": A.FLOAT, "eps": A.FLOAT, "group_size": A.INT, "out_scale": A.FLOAT, "hadamard": A.INT}
    b = _Body("GatedRMSNormQuant" if quant else "GatedRMSNorm", ["y", "z", "weight"],
              attrs if quant else {"eps": A.FLOAT, "group_size": A.INT})  # fmt: skip
    y32 = b("Cast", b["y"], to=FLOAT)
    h = b("Mul", y32, b.silu(b.load("z", _q(quant, "z_scale"))))
    shape = b("Shape", h)
    grouped = b("Reshape", h, b("Concat", b("Slice", shape, b.i64(0), b.i64(-1)), b.i64(-1),
                                b("Unsqueeze", b("Cast", b.attr("group_size"), to=ir.DataType.INT64), b.i64(0)),
                                axis=0))  # fmt: skip
    normed = b("Reshape", b.rms(grouped, b.attr("eps")), shape)
    n = b("Mul", normed, b("Cast", b["weight"], to=FLOAT))
    if s.n:
        n = _hadamard(b, n, s.n)
    return b.function([b.store(n, s, _q(quant, "out_scale"))], ["out"], s)


# ---------------------------------------------------------------- conv


def causal_conv1d(s: Structure, quant: bool = True) -> ir.Function:
    has_bias = "bias" in s.optional
    names = ["x", "weight", "bias", "conv_state"] if has_bias else ["x", "weight", "conv_state"]
    b = _Body("CausalConv1d" if quant else "CausalConv1dFp", names,
              {"x_scale": A.FLOATS, "w_scale": A.FLOATS, "out_scale": A.FLOATS} if quant else {})  # fmt: skip
    k = s.k
    xq = b("Concat", b["conv_state"], b["x"], axis=1)  # [b, k-1+l, c], int8 or fp
    xs = b.dequantize(xq, "x_scale") if quant else b("Cast", xq, to=FLOAT)
    w = b("Cast", b("Transpose", b["weight"], perm=[1, 0]), to=FLOAT)  # [k, c] fp32
    if quant:
        w = b("Mul", w, b("Unsqueeze", b.attr("w_scale"), b.i64(0)))
    length = b("Sub", b("Shape", xs, start=1, end=2), b.i64(k - 1))
    y = None
    for j in range(k):
        tap = b("Slice", xs, b.i64(j), b("Add", length, b.i64(j)), b.i64(1))
        term = b("Mul", tap, b("Gather", w, b.i64(j), axis=0))
        y = term if y is None else b("Add", y, term)
    if has_bias:
        y = b("Add", y, b("Cast", b["bias"], to=FLOAT))
    out = b.store(b.silu(y), s, _q(quant, "out_scale"))
    state = b("Slice", xq, b.i64(-(k - 1)), b.i64(2**62), b.i64(1))
    return b.function([out, state], ["y", "conv_state_out"], s)


# ---------------------------------------------------------------- scans


def _scan(b: _Body, state: ir.Value, seq: list[ir.Value], body_fn, n_out: int = 1):
    """A Scan over axis 1 (time) of ``seq`` with one fp32 state; body_fn(bb, h, *steps) -> (h, ys)."""
    bb = _Body("step", ["h", *[f"s{i}" for i in range(len(seq))]], {})
    for v in bb.inputs:
        v.type = ir.TensorType(FLOAT)
    h, ys = body_fn(bb, bb["h"], *[bb[f"s{i}"] for i in range(len(seq))])
    for v, name in zip([h, *ys], ["h_out", *[f"y{i}" for i in range(n_out)]], strict=True):
        v.name = name
    for i, node in enumerate(bb.t.nodes):  # names of the body's own values: unique in the whole function
        node.name = f"step_node_{i}"
        for j, v in enumerate(node.outputs):
            if v not in (h, *ys):
                v.name = f"step_{i}_{j}"
    for v in bb.inputs:
        v.name = f"step_{v.name}"
    body = ir.Graph(bb.inputs, [h, *ys], nodes=bb.t.nodes, opset_imports={"": ONNX_OPSET}, name="scan_step")
    outs = b.multi("Scan", [state, *seq], 1 + n_out, body=body, num_scan_inputs=len(seq),
                   scan_input_axes=[1] * len(seq), scan_output_axes=[1] * n_out)  # fmt: skip
    return outs[0], outs[1:]


def _selective_scan(b: _Body, h0: ir.Value, quant: bool, smooth: bool) -> tuple[ir.Value, ir.Value]:
    """The Mamba1 scan from the fp32 state h0 [b, d, n]: (y [b, l, d], final h) in fp32."""
    u = b.load("u", _q(quant, "u_scale"))  # [b, l, d]
    dt = b.softplus(b("Add", b.load("dt", _q(quant, "dt_scale")), b["dt_bias"]))
    B, C = b.load("B", _q(quant, "B_scale")), b.load("C", _q(quant, "C_scale"))  # [b, l, n]
    z = b.load("z", _q(quant, "z_scale"))
    a = b["A"]

    def step(bb, h, dt_t, u_t, b_t, c_t):  # h [b, d, n]; dt_t, u_t [b, d]; b_t, c_t [b, n]
        one = bb.i64(-1)
        decay = bb("Exp", bb("Mul", bb("Unsqueeze", dt_t, one), a))
        drive = bb("Mul", bb("Unsqueeze", bb("Mul", dt_t, u_t), one), bb("Unsqueeze", b_t, bb.i64(1)))
        h = bb("Add", bb("Mul", decay, h), drive)
        y = bb("ReduceSum", bb("Mul", h, bb("Unsqueeze", c_t, bb.i64(1))), one, keepdims=0)
        return h, [y]

    h, (y,) = _scan(b, h0, [dt, u, B, C], step)
    y = b("Add", y, b("Mul", u, b["D"]))
    gate = b.silu(z) if not smooth else b("Mul", z, b("Sigmoid", b("Mul", z, b["gate_smooth"])))
    return b("Mul", y, gate), h


def selective_scan(s: Structure, quant: bool = True) -> ir.Function:
    smooth = "gate_smooth" in s.optional
    names = ["u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state"] + (["gate_smooth"] if smooth else [])
    b = _Body("SelectiveScan" if quant else "SelectiveScanFp", names,
              {f"{t}_scale": A.FLOAT for t in ("u", "dt", "B", "C", "z")} if quant else {})  # fmt: skip
    y, h = _selective_scan(b, b("Cast", b["ssm_state"], to=FLOAT), quant, smooth)
    # the int8 op's y has the state's dtype (none of its inputs carries the graph's float type, so
    # TensorRT's plugin could not know it); the fp variant's has its inputs' float type
    y = b("CastLike", y, b["ssm_state"]) if quant else b.to_float(y, s)
    return b.function([y, b("CastLike", h, b["ssm_state"])], ["y", "ssm_state_out"], s)


def selective_scan_int8_state(s: Structure) -> ir.Function:
    """SelectiveScan from and to an int8 state with a scale per (batch row, channel): dequantized
    on entry; at the end scale = max |h| / 127 over the channel's states and codes = rn(h / scale),
    saturated to +-127 (a zero channel divides by 1: zero codes, scale 0). y is float16."""
    smooth = "gate_smooth" in s.optional
    names = ["u", "dt", "A", "B", "C", "D", "z", "dt_bias", "ssm_state", "ssm_state_scale"]
    b = _Body("SelectiveScanInt8State", names + (["gate_smooth"] if smooth else []),
              {f"{t}_scale": A.FLOAT for t in ("u", "dt", "B", "C", "z")})  # fmt: skip
    last = b.i64(-1)
    h0 = b("Mul", b("Cast", b["ssm_state"], to=FLOAT), b("Unsqueeze", b["ssm_state_scale"], last))
    y, h = _selective_scan(b, h0, True, smooth)
    scale = b("Div", b("ReduceMax", b("Abs", h), last, keepdims=1), b.f32(127.0))  # [b, d, 1]
    safe = b("Where", b("Greater", scale, b.f32(0.0)), scale, b.f32(1.0))
    ratio = b("Clip", b("Div", h, safe), b.f32(-127.0), b.f32(127.0))  # clipped at integers: as after rounding
    codes = b("QuantizeLinear", ratio, b.f32(1.0), b.const(np.array(0, dtype=np.int8)))
    outs = [b("Cast", y, to=ir.DataType.FLOAT16), codes, b("Squeeze", scale, last)]
    return b.function(outs, ["y", "ssm_state_out", "ssm_state_scale_out"], s)


def ssd_scan(s: Structure, quant: bool = True) -> ir.Function:
    attrs = {"heads": A.INT, "dt_min": A.FLOAT, "dt_max": A.FLOAT}
    if quant:
        attrs |= {"x_scale": A.FLOATS, "B_scale": A.FLOATS, "C_scale": A.FLOATS}
    b = _Body("SSDScan" if quant else "SSDScanFp", ["x", "dt", "A", "B", "C", "D", "dt_bias", "ssm_state"], attrs)
    split_heads = b("Concat", b.i64(0, 0), b("Unsqueeze", b("Cast", b.attr("heads"), to=ir.DataType.INT64), b.i64(0)),
                    b.i64(-1), axis=0)  # fmt: skip
    x = b("Reshape", b("Cast", b["x"], to=FLOAT), split_heads)  # [b, l, H*P] -> [b, l, H, P]
    xshape = b("Shape", x)
    heads = b("Slice", xshape, b.i64(2), b.i64(4))  # [H, P]
    channels = b("ReduceProd", heads, keepdims=1)  # one scale or one per channel: expand, then [H, P]
    if quant:
        x = b("Mul", x, b("Reshape", b("Expand", b.attr("x_scale"), channels), heads))
    dt = b.softplus(b("Add", b("Cast", b["dt"], to=FLOAT), b["dt_bias"]))
    dt = b("Min", b("Max", dt, b.attr("dt_min")), b.attr("dt_max"))  # [b, l, H]
    # B, C [b, l, G, N] -> per head [b, l, H, N]: head h reads group h // (H / G)
    gshape = b("Shape", b["B"])
    per_group = b("Div", b("Slice", heads, b.i64(0), b.i64(1)), b("Slice", gshape, b.i64(2), b.i64(3)))

    def per_head(q, attr):
        v = b("Cast", q, to=FLOAT)  # [b, l, G, N]
        if quant:
            v = b("Mul", v, b("Unsqueeze", b.attr(attr), b.i64(-1)))
        v = b("Unsqueeze", v, b.i64(3))  # [b, l, G, 1, N]
        lead = b("Slice", gshape, b.i64(0), b.i64(3))
        n = b("Slice", gshape, b.i64(3), b.i64(4))
        v = b("Expand", v, b("Concat", lead, per_group, n, axis=0))
        return b("Reshape", v, b("Concat", b("Slice", gshape, b.i64(0), b.i64(2)), b.i64(-1), n, axis=0))

    B, C = per_head(b["B"], "B_scale"), per_head(b["C"], "C_scale")
    a = b["A"]

    def step(bb, h, dt_t, x_t, b_t, c_t):  # h [b, H, P, N]; dt_t [b, H]; x_t [b, H, P]; b_t, c_t [b, H, N]
        last = bb.i64(-1)
        decay = bb("Exp", bb("Mul", dt_t, a))  # [b, H]
        decay = bb("Unsqueeze", decay, bb.i64(2, 3))
        dx = bb("Unsqueeze", bb("Mul", x_t, bb("Unsqueeze", dt_t, last)), last)  # [b, H, P, 1]
        h = bb("Add", bb("Mul", decay, h), bb("Mul", dx, bb("Unsqueeze", b_t, bb.i64(2))))
        y = bb("ReduceSum", bb("Mul", h, bb("Unsqueeze", c_t, bb.i64(2))), last, keepdims=0)
        return h, [y]

    h, (y,) = _scan(b, b("Cast", b["ssm_state"], to=FLOAT), [dt, x, B, C], step)
    y = b("Add", y, b("Mul", x, b("Unsqueeze", b["D"], b.i64(-1))))
    return b.function([b.to_float(y, s), b("CastLike", h, b["ssm_state"])], ["y", "ssm_state_out"], s)


# ---------------------------------------------------------------- 4-bit weight GEMMs


def _int4_codes(b: _Body) -> ir.Value:
    """qweight uint8 [N, K/2] -> the int4 codes as fp32 [N, K]: low nibble = even k, two's complement."""
    packed = b["qweight"]
    lo = b("BitwiseAnd", packed, b.const(np.array(15, dtype=np.uint8)))
    hi = b("BitShift", packed, b.const(np.array(4, dtype=np.uint8)), direction="RIGHT")
    pair = b("Concat", b("Unsqueeze", lo, b.i64(-1)), b("Unsqueeze", hi, b.i64(-1)), axis=-1)  # [N, K/2, 2]
    nib = b("Cast", b("Reshape", pair, b.i64(0, -1)), to=FLOAT)  # [N, K]
    negative = b("Cast", b("Greater", nib, b.f32(7.5)), to=FLOAT)
    return b("Sub", nib, b("Mul", negative, b.f32(16.0)))


def _grouped(b: _Body, v: ir.Value) -> ir.Value:
    """[..., K] -> [..., K/G, G] with G the group_size attribute."""
    g = b("Unsqueeze", b("Cast", b.attr("group_size"), to=ir.DataType.INT64), b.i64(0))
    lead = b("Slice", b("Shape", v), b.i64(0), b.i64(-1))
    return b("Reshape", v, b("Concat", lead, b.i64(-1), g, axis=0))


def _linear_out(b: _Body, y: ir.Value, s: Structure) -> ir.Function:
    if "bias" in s.optional:
        y = b("Add", y, b["bias"])
    return b.function([b("Cast", y, to=ir.DataType.FLOAT16)], ["y"], s)


def w4a16_linear(s: Structure) -> ir.Function:
    names = ["x", "qweight", "scales"] + (["bias"] if "bias" in s.optional else [])
    b = _Body("W4A16Linear", names, {"group_size": A.INT})
    q = _int4_codes(b)
    # w = scale * q is exact in fp32 (11 x 4 significant bits), as in the reference
    w = b("Mul", _grouped(b, q), b("Unsqueeze", b("Cast", b["scales"], to=FLOAT), b.i64(-1)))
    w = b("Reshape", w, b("Shape", q))
    y = b("MatMul", b("Cast", b["x"], to=FLOAT), b("Transpose", w, perm=[1, 0]))
    return _linear_out(b, y, s)


def w4a8_linear(s: Structure) -> ir.Function:
    names = ["x", "qweight", "scales"] + (["bias"] if "bias" in s.optional else [])
    b = _Body("W4A8Linear", names, {"x_scale": A.FLOAT, "group_size": A.INT})
    q = _grouped(b, _int4_codes(b))  # [N, K/G, G]
    x = _grouped(b, b("Cast", b["x"], to=FLOAT))  # [b, l, K/G, G]
    # the per-group integer sums (exact in fp32: |sum| <= 128 * 8 * G < 2^24), scaled per group, summed
    isum = b("Einsum", x, q, equation="blgk,ngk->blng")
    y = b("ReduceSum", b("Mul", isum, b("Cast", b["scales"], to=FLOAT)), b.i64(-1), keepdims=0)
    return _linear_out(b, b("Mul", y, b.attr("x_scale")), s)


BUILDERS: dict[str, Callable[[Structure], ir.Function]] = {
    "HadamardQuant": hadamard_quant,
    "RMSNormQuant": rms_norm,
    "GatedRMSNormQuant": gated_rms_norm,
    "CausalConv1d": causal_conv1d,
    "SelectiveScan": selective_scan,
    "SelectiveScanInt8State": selective_scan_int8_state,
    "SSDScan": ssd_scan,
    # the fp variants: the same bodies with casts where the int8 ops dequantize and quantize
    "RMSNorm": functools.partial(rms_norm, quant=False),
    "GatedRMSNorm": functools.partial(gated_rms_norm, quant=False),
    "CausalConv1dFp": functools.partial(causal_conv1d, quant=False),
    "SelectiveScanFp": functools.partial(selective_scan, quant=False),
    "SSDScanFp": functools.partial(ssd_scan, quant=False),
    "W4A16Linear": w4a16_linear,
    "W4A8Linear": w4a8_linear,
}


def build_function(op: str, structure: Structure) -> ir.Function:
    """The body of ``op`` for one structure (cache by :func:`overload_of` when building a model)."""
    return BUILDERS[op](structure)
