"""Building the deployed graph: an onnx_ir model under construction, with the I/O contract.

:class:`GraphBuilder` wraps onnx_ir's tape with what every lowering needs: initializers from
torch tensors, standard ops, jetmamba custom nodes (checked against their spec when created;
their overload recorded, so the function bodies can be attached later), int8 Q/DQ in
TensorRT's explicit-quantization form, the 4-bit GEMM nodes, the fp Hadamard in standard ops,
and graph inputs/outputs with symbolic shapes.

The I/O contract of a lowered model (one graph for prefill and decode):

- ``input_ids`` int64 ``[batch, seq]``;
- per layer ``i``: ``conv_state.{i}`` ``[batch, d_conv - 1, conv_dim]`` (int8 in a quantized
  graph's int8-activation layers, the float type in an unquantized graph and in W4A16 layers) and
  ``ssm_state.{i}`` (the state dtype) ``[batch, d_inner, d_state]`` (Mamba1) or
  ``[batch, heads, head_dim, d_state]`` (Mamba2), zeros for a fresh sequence;
- outputs ``logits`` fp32 ``[batch, seq, vocab]`` and ``conv_state_out.{i}``,
  ``ssm_state_out.{i}`` of the same shapes and dtypes as the inputs, to feed the next call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir
import torch
from onnx_ir import tape

from jetmamba.compiler.functions import ONNX_OPSET, Structure, overload_of
from jetmamba.compiler.ops import OPSET
from jetmamba.compiler.ops.spec import DOMAIN
from jetmamba.errors import UnsupportedError

BATCH, SEQ = "batch", "seq"
DTYPES = {
    torch.int8: ir.DataType.INT8,
    torch.float16: ir.DataType.FLOAT16,
    torch.float32: ir.DataType.FLOAT,
    torch.int64: ir.DataType.INT64,
}
FLOAT_NAMES = {torch.float16: "float16", torch.float32: "float32"}


@dataclass(frozen=True)
class TensorIO:
    """One graph input or output of the contract."""

    name: str
    dtype: str  # "int64", "int8", "float16", "float32"
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass
class GraphBuilder:
    name: str
    float_dtype: torch.dtype = torch.float16
    t: tape.Tape = field(default_factory=tape.Tape)
    inputs: list[ir.Value] = field(default_factory=list)
    outputs: list[ir.Value] = field(default_factory=list)
    _counter: int = 0
    _shared: dict = field(default_factory=dict)  # constants built once per graph (Hadamard matrices)

    # ------------------------------------------------------------ values

    def _fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}.{self._counter}"

    def input(self, name: str, dtype: torch.dtype, shape) -> ir.Value:
        v = ir.Value(name=name, type=ir.TensorType(DTYPES[dtype]), shape=ir.Shape(list(shape)))
        self.inputs.append(v)
        return v

    def output(self, value: ir.Value, name: str, dtype: torch.dtype, shape) -> None:
        value.name = name
        value.type = ir.TensorType(DTYPES[dtype])
        value.shape = ir.Shape(list(shape))
        self.outputs.append(value)

    def initializer(self, name: str, tensor) -> ir.Value:
        """A constant of the graph (weights, scales), stored as given (dtype included)."""
        array = tensor.detach().cpu().contiguous().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
        return self.t.initializer(ir.tensor(array, name=name), name=name)

    def const_i64(self, *values: int) -> ir.Value:
        return self.initializer(self._fresh("const"), np.array(values, dtype=np.int64))

    def scalar(self, value: float, dtype=np.float32) -> ir.Value:
        return self.initializer(self._fresh("scale"), np.array(value, dtype=dtype))

    # ------------------------------------------------------------ nodes

    def structure(self, **kw) -> Structure:
        """A jetmamba node's static structure in this graph's float type (selects its body)."""
        return Structure(float_type=FLOAT_NAMES[self.float_dtype], **kw)

    def op(self, op_type: str, *inputs: ir.Value | None, name: str | None = None, **attrs) -> ir.Value:
        return self.t.op(op_type, list(inputs), attrs or None, name=name)

    def ops(self, op_type: str, inputs, n: int, name: str | None = None, **attrs) -> tuple[ir.Value, ...]:
        return tuple(self.t.op_multi_out(op_type, list(inputs), attrs or None, num_outputs=n, name=name))

    def custom(self, op: str, inputs: dict[str, ir.Value | None], attrs: dict, structure: Structure,
               name: str) -> tuple[ir.Value, ...]:  # fmt: skip
        """A jetmamba node: inputs by spec name (None for an absent optional one), attributes
        checked and completed by the spec, the overload of its structure (with the optional
        inputs present) set."""
        spec = OPSET[op]
        known = {t.name for t in spec.inputs}
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise ValueError(f"{spec.qualified_name}: unknown inputs {unknown}")
        ordered = []
        for t in spec.inputs:
            v = inputs.get(t.name)
            if v is None and not t.optional:
                raise ValueError(f"{spec.qualified_name}: input {t.name} is required")
            if v is not None:
                ordered.append(v)
        try:
            attributes = spec.check_attributes(attrs)
        except ValueError as exc:
            raise UnsupportedError(f"{spec.qualified_name} ({name}) cannot be lowered: {exc}") from None
        reason = spec.unsupported({"k": structure.k, "n": structure.n, **attributes})
        if reason is not None:
            raise UnsupportedError(f"{spec.qualified_name} ({name}) cannot be lowered: {reason}")
        # which optional inputs are present is part of the structure: derived here, once
        present = tuple(sorted(t.name for t in spec.inputs if t.optional and inputs.get(t.name) is not None))
        overload = overload_of(op, dataclasses.replace(structure, optional=present))
        outs = self.t.op_multi_out(op, ordered, attributes, domain=DOMAIN, overload=overload,
                                   num_outputs=len(spec.outputs), name=name)  # fmt: skip
        return tuple(outs)

    # ------------------------------------------------------------ int8

    def _scale(self, scale) -> ir.Value:
        if isinstance(scale, torch.Tensor) and scale.numel() > 1:
            return self.initializer(self._fresh("scale"), scale.detach().float().reshape(-1))
        return self.scalar(float(scale))

    def quantize(self, x: ir.Value, scale, name: str, axis: int | None = None) -> ir.Value:
        """QuantizeLinear to int8 (zero point 0): per tensor, or per channel along ``axis``."""
        s = self._scale(scale)
        zp = np.zeros(() if axis is None else (s.const_value.shape[0],), dtype=np.int8)
        kw = {} if axis is None else {"axis": axis}
        return self.op("QuantizeLinear", x, s, self.initializer(self._fresh("zero_point"), zp), name=name, **kw)

    def dequantize(self, q: ir.Value, scale, name: str, axis: int | None = None) -> ir.Value:
        """DequantizeLinear of int8 codes to fp32: per tensor, or per channel along ``axis``."""
        kw = {} if axis is None else {"axis": axis}
        return self.op("DequantizeLinear", q, self._scale(scale), name=name, **kw)

    def qgemm(self, x_q: ir.Value, x_scale: float, weight: torch.Tensor, w_scale: torch.Tensor,
              bias: torch.Tensor | None, prefix: str) -> ir.Value:  # fmt: skip
        """TensorRT's explicit-quantization int8 GEMM: DQ(x) @ DQ(W)^T (+ bias), fp32 out.

        W int8 [out, in] and its per-output-channel scales as initializers, DequantizeLinear on
        axis 0; the activation per tensor. fp32 scales and output, as the QuantizedModel
        computes it (TensorRT runs it as one int8 GEMM)."""
        w = self.initializer(f"{prefix}.weight", weight)
        ws = self.initializer(f"{prefix}.weight_scale", w_scale.float())
        x = self.op("DequantizeLinear", x_q, self.scalar(x_scale), name=f"{prefix}.dq_input")
        wd = self.op("DequantizeLinear", w, ws, axis=0, name=f"{prefix}.dq_weight")
        y = self.op("MatMul", x, self.op("Transpose", wd, perm=[1, 0]), name=f"{prefix}.matmul")
        if bias is not None:
            y = self.op("Add", y, self.initializer(f"{prefix}.bias", bias.float()))
        return y

    def linear(self, x: ir.Value, weight: torch.Tensor, bias: torch.Tensor | None, prefix: str) -> ir.Value:
        """The fp GEMM x @ W^T (+ bias) in the graph's float type: W [out, in] stored as given,
        as in the checkpoint (TensorRT folds the transpose of a constant)."""
        w = self.initializer(f"{prefix}.weight", weight.to(self.float_dtype))
        y = self.op("MatMul", x, self.op("Transpose", w, perm=[1, 0]), name=f"{prefix}.matmul")
        if bias is not None:
            y = self.op("Add", y, self.initializer(f"{prefix}.bias", bias.to(self.float_dtype)))
        return y

    # ------------------------------------------------------------ 4-bit weights

    def int4_gemm(self, x: ir.Value, x_scale: float | None, layer, prefix: str) -> ir.Value:
        """A packed 4-bit layer (``qweight`` uint8 [N, K/2], ``scales`` fp16 [N, K/G], ``bias``) as
        jetmamba::W4A8Linear (int8 ``x`` with its static per-tensor ``x_scale``) or W4A16Linear
        (fp16 ``x``, ``x_scale`` None): fp16 out, as the kernels write it."""
        bias = None if layer.bias is None else self.initializer(f"{prefix}.bias", layer.bias.float())
        inputs = {"x": x, "qweight": self.initializer(f"{prefix}.qweight", layer.qweight),
                  "scales": self.initializer(f"{prefix}.scales", layer.scales), "bias": bias}  # fmt: skip
        attrs = {"group_size": int(layer.group_size)}
        if x_scale is not None:
            (y,) = self.custom("W4A8Linear", inputs, {**attrs, "x_scale": float(x_scale)}, self.structure(),
                               name=prefix)  # fmt: skip
            return y
        if self.float_dtype != torch.float16:  # the x of a W4A16 layer is in the graph's float type
            found = FLOAT_NAMES.get(self.float_dtype, self.float_dtype)
            raise UnsupportedError(f"jetmamba::W4A16Linear ({prefix}) cannot be lowered: its activations are "
                                   f"float16 only, this graph's are {found}")  # fmt: skip
        (y,) = self.custom("W4A16Linear", inputs, attrs, self.structure(), name=prefix)
        return y

    def gemm(self, x_q: ir.Value, x_scale: float, layer, prefix: str) -> ir.Value:
        """A quantized layer with int8 input, fp32 out: the Q/DQ int8 GEMM of an int8 layer
        (:meth:`qgemm`), W4A8Linear of a 4-bit one (its fp16 output widened, as the simulation
        computes on from it)."""
        if hasattr(layer, "qweight"):
            return self.cast(self.int4_gemm(x_q, x_scale, layer, prefix), torch.float32)
        return self.qgemm(x_q, x_scale, layer.weight, layer.weight_scale, layer.bias, prefix)

    def hadamard(self, x32: ir.Value, n: int) -> ir.Value:
        """x @ H^T / sqrt(n) over the last axis (n = m * 2^k), fp32, in standard MatMuls: x viewed as
        [..., m, 2^k], times the Sylvester block S (symmetric) on the right and the m x m base block
        on the left (H = kron(base, S)). The matrices are built here (±1, exact in fp16) and stored
        once per order, shared by every layer; TensorRT runs them as GEMMs."""
        from jetmamba.calibration.hadamard import base_matrix, factor, hadamard_matrix

        m, p = factor(n)
        key = f"hadamard.{n}"
        if key not in self._shared:
            self._shared[key] = (
                self.initializer(f"{key}.sylvester", hadamard_matrix(p).to(torch.float16)),
                None if m == 1 else self.initializer(f"{key}.base", base_matrix(m).to(torch.float16)),
            )
        sylvester, base = self._shared[key]
        lead = self.op("Slice", self.op("Shape", x32), self.const_i64(0), self.const_i64(-1))
        y = self.op("Reshape", x32, self.op("Concat", lead, self.const_i64(m, p), axis=0))
        y = self.op("MatMul", y, self.cast(sylvester, torch.float32))
        if base is not None:
            y = self.op("MatMul", self.cast(base, torch.float32), y)
        y = self.op("Reshape", y, self.op("Concat", lead, self.const_i64(n), axis=0))
        return self.op("Mul", y, self.scalar(1.0 / float(n) ** 0.5))

    def cast(self, x: ir.Value, dtype: torch.dtype) -> ir.Value:
        return self.op("Cast", x, to=DTYPES[dtype])

    def rms_norm(self, x32: ir.Value, weight: ir.Value | None, eps: float) -> ir.Value:
        """x * rsqrt(mean(x^2) + eps) (* weight), fp32 in and out, standard ops."""
        mean = self.op("ReduceMean", self.op("Mul", x32, x32), self.const_i64(-1), keepdims=1)
        y = self.op("Div", x32, self.op("Sqrt", self.op("Add", mean, self.scalar(eps))))
        return y if weight is None else self.op("Mul", y, weight)

    # ------------------------------------------------------------ result

    def model(self, metadata: dict[str, str] | None = None) -> ir.Model:
        """The graph as an onnx_ir Model (no function bodies: see passes.attach_functions)."""
        graph = ir.Graph(self.inputs, self.outputs, nodes=self.t.nodes, initializers=self.t.initializers,
                         opset_imports={"": ONNX_OPSET, DOMAIN: 1}, name=self.name)  # fmt: skip
        model = ir.Model(graph, ir_version=10, producer_name="jetmamba")
        for k, v in (metadata or {}).items():
            model.metadata_props[k] = v
        return model
