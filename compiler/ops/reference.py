"""Reference semantics of the jetmamba custom ops (int8 in or out), in PyTorch.

Each op is defined as: dequantize its int8 inputs exactly, compute in fp32 with the fp model's
own functions (the same maths the fp reference model was checked with against transformers),
quantize its int8 outputs with ONNX QuantizeLinear semantics. The CUDA kernels, the ONNX
function bodies and the QuantizedModel simulation all implement these. Shapes are time-major,
``[b, l, channels]``; scales are op attributes (per tensor, or per channel where a spec says so).
"""

from __future__ import annotations

import torch

from jetmamba.calibration.functional import causal_conv1d, gated_rms_norm, rms_norm, selective_scan, ssd_scan
from jetmamba.calibration.hadamard import hadamard_transform
from jetmamba.compiler.ops.quant import dequantize, quantize


def _channel_scale(scale, n: int) -> torch.Tensor:
    s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    if s.numel() not in (1, n):
        raise ValueError(f"a scale has {s.numel()} values for {n} channels")
    return s


def qlinear(x_q, x_scale, w_q, w_scale, bias=None):
    """The int8 GEMM of the standard Q/DQ pattern: x_q [..., k] int8, w_q [n, k] int8 with per
    output channel scales [n] (or one) -> fp32 [..., n] = (x_q w_q^T) x_scale w_scale + bias.
    Integer products are accumulated in fp32 (exact below 2^24, as every int8 GEMM's int32 is)."""
    acc = torch.nn.functional.linear(x_q.float(), w_q.float())
    y = acc * (float(x_scale) * _channel_scale(w_scale, w_q.shape[0]).to(acc.device))
    return y if bias is None else y + bias.float()


def rms_norm_quant(x, residual, weight, *, eps: float, out_scale: float):
    """jetmamba::RMSNormQuant. x, residual: [..., d] fp16/fp32 (residual optional, the residual
    add fused); weight: [d]. r = x + residual (fp32, stored in x's dtype);
    y = Q(rmsnorm(r) * weight, out_scale) int8. Returns (y, r)."""
    r = x.float() if residual is None else x.float() + residual.float()
    r = r.to(x.dtype)
    return quantize(rms_norm(r.float(), weight.float(), eps), out_scale), r


def _per_channel(scale, c: int, device) -> torch.Tensor:
    """A scale given for one or for every one of the c channels of the last axis -> [c]."""
    return _channel_scale(scale, c).to(device).expand(c)


def causal_conv1d_quant(x, weight, bias, conv_state, *, x_scale, w_scale, out_scale):
    """jetmamba::CausalConv1d (int8, SiLU fused). x: [b, l, c] int8; weight: [c, k] int8; bias:
    [c] fp32 or None; conv_state: [b, k-1, c] int8, the previous int8 inputs (zeros when None).
    Every scale is one value or one per channel [c] (Quamba2 scales x, B and C apart).
    y = Q(silu(conv(DQ(x), DQ(w)) + bias), out_scale). Returns (y int8, new state int8 = the last
    k-1 inputs, exact)."""
    b, l, c = x.shape
    k = weight.shape[1]
    if conv_state is None:
        conv_state = torch.zeros(b, k - 1, c, dtype=torch.int8, device=x.device)
    xs = _per_channel(x_scale, c, x.device)
    w = dequantize(weight, _per_channel(w_scale, c, weight.device), axis=0)
    y, _ = causal_conv1d(
        dequantize(x, xs, axis=-1), w, None if bias is None else bias.float(), dequantize(conv_state, xs, axis=-1)
    )
    return quantize(y, _per_channel(out_scale, c, x.device), axis=-1), torch.cat([conv_state, x], dim=1)[:, l:].clone()


def selective_scan_quant(
    u, dt, A, B, C, D, z, dt_bias, ssm_state, gate_smooth=None,
    *, u_scale: float, dt_scale: float, B_scale: float, C_scale: float, z_scale: float,
    out_dtype: torch.dtype | None = None,
):  # fmt: skip
    """jetmamba::SelectiveScan (Mamba1). u, dt, z: [b, l, d] int8; B, C: [b, l, n] int8;
    A: [d, n], D, dt_bias: [d] fp32; ssm_state: [b, d, n] (fp16 by default) or None;
    gate_smooth: [d] fp32 or None. fp32 maths: dt <- softplus(DQ(dt) + dt_bias), the scan, D skip,
    gate DQ(z) * sigmoid(gate_smooth * DQ(z)) (MambaQuant's S-SiLU; SiLU when absent).
    Returns (y [b, l, d] in out_dtype, default the state's dtype as the op gives it, and the state
    in the state's dtype)."""
    h0 = None if ssm_state is None else ssm_state.float()
    zf = dequantize(z, z_scale)
    y, h = selective_scan(
        dequantize(u, u_scale), dequantize(dt, dt_scale), A.float(), dequantize(B, B_scale),
        dequantize(C, C_scale), D.float(), zf if gate_smooth is None else None, h0, dt_bias.float(), True,
    )  # fmt: skip
    if gate_smooth is not None:
        y = y * zf * torch.sigmoid(gate_smooth.float() * zf)
    state_dtype = torch.float16 if ssm_state is None else ssm_state.dtype
    return y.to(state_dtype if out_dtype is None else out_dtype), h.to(state_dtype)


def quantize_ssm_state(h):
    """An SSM state [..., n] as int8 codes with a dynamic scale per row (Mamba1: per (batch row,
    channel)): scale = max |h| / 127 over the row's n values (fp32 division), codes =
    round-half-to-even(h / scale) clamped to [-127, 127]. A row of zeros (or one whose scale
    underflows to 0) gets scale 0 and zero codes, which dequantize to zeros: the all-zero state and
    scale of a fresh sequence. Returns (codes int8 [..., n], scale fp32 [...])."""
    h = h.float()
    scale = h.abs().amax(-1) / 127.0
    nonzero = scale > 0
    safe = torch.where(nonzero, scale, torch.ones_like(scale)).unsqueeze(-1)
    codes = torch.where(nonzero.unsqueeze(-1), torch.round(h / safe).clamp(-127, 127), torch.zeros_like(h))
    return codes.to(torch.int8), scale


def dequantize_ssm_state(codes, scale):
    """codes [..., n] int8 times the row's scale [...] fp32: the state in fp32."""
    return codes.float() * scale.float().unsqueeze(-1)


def selective_scan_int8_state(
    u, dt, A, B, C, D, z, dt_bias, ssm_state, ssm_state_scale, gate_smooth=None,
    *, u_scale: float, dt_scale: float, B_scale: float, C_scale: float, z_scale: float,
    out_dtype: torch.dtype = torch.float16,
):  # fmt: skip
    """jetmamba::SelectiveScanInt8State: :func:`selective_scan_quant` with an int8 state. ssm_state:
    [b, d, n] int8 codes, ssm_state_scale: [b, d] fp32 (:func:`quantize_ssm_state`); the state is
    dequantized, scanned in fp32 and quantized again at the end. Returns (y [b, l, d] in out_dtype,
    codes [b, d, n] int8, scales [b, d] fp32)."""
    h0 = dequantize_ssm_state(ssm_state, ssm_state_scale)
    y, h = selective_scan_quant(
        u, dt, A, B, C, D, z, dt_bias, h0, gate_smooth, u_scale=u_scale, dt_scale=dt_scale, B_scale=B_scale,
        C_scale=C_scale, z_scale=z_scale, out_dtype=out_dtype,
    )  # fmt: skip
    return (y, *quantize_ssm_state(h))


def hadamard_quant(x, *, out_scale: float):
    """jetmamba::HadamardQuant. x: [..., n] fp16/fp32, n a supported Hadamard order;
    y = Q(x H^T / sqrt(n), out_scale) int8 (H as in jetmamba.calibration.hadamard)."""
    return quantize(hadamard_transform(x.float()), out_scale)


def ssd_scan_quant(
    x, dt, A, B, C, D, dt_bias, ssm_state,
    *, heads: int, x_scale, B_scale, C_scale, dt_min: float = 0.0, dt_max: float = float("inf"),
    out_dtype: torch.dtype = torch.float16,
):  # fmt: skip
    """jetmamba::SSDScan (Mamba2). x: [b, l, H*P] int8 (``heads`` = H) with one scale or one per channel [H*P]
    (Quamba2's clustered scales); dt: [b, l, H] fp16/fp32 (Mamba2's dt stays fp16); B, C:
    [b, l, G, N] int8 with one scale or one per SSD group [G]; A, D, dt_bias: [H] fp32;
    ssm_state: [b, H, P, N] (fp16 by default) or None. fp32 maths:
    dt <- clamp(softplus(dt + dt_bias), dt_min, dt_max), the chunked recurrence, D skip.
    Returns (y [b, l, H, P] in out_dtype, state in the state's dtype)."""
    b, l, channels = x.shape
    H, P = heads, channels // heads
    x = x.reshape(b, l, H, P)
    G = B.shape[2]
    xs = _per_channel(x_scale, H * P, x.device).reshape(H, P)
    bs = _per_channel(B_scale, G, B.device).reshape(G, 1)
    cs = _per_channel(C_scale, G, C.device).reshape(G, 1)
    d = torch.nn.functional.softplus(dt.float() + dt_bias.float()).clamp(min=dt_min, max=dt_max)
    h0 = None if ssm_state is None else ssm_state.float()
    y, h = ssd_scan(x.float() * xs, d, A.float(), B.float() * bs, C.float() * cs, D.float(), h0)
    state_dtype = torch.float16 if ssm_state is None else ssm_state.dtype
    return y.to(out_dtype), h.to(state_dtype)


def gated_rms_norm_quant(y, z, weight, *, z_scale: float, eps: float, group_size: int, out_scale: float, hadamard: int):
    """jetmamba::GatedRMSNormQuant (Mamba2). y: [b, l, d] fp16/fp32 (the SSD output); z: [b, l, d]
    int8; weight: [d]. n = RMSNorm(y * silu(DQ(z))) per group of ``group_size`` channels, times
    weight; out = Q(hadamard ? n H^T / sqrt(d) : n, out_scale) int8."""
    n = gated_rms_norm(y.float(), dequantize(z, z_scale), weight.float(), eps, group_size)
    return quantize(hadamard_transform(n) if hadamard else n, out_scale)


# ---------------------------------------------------------------- fp variants
# The unquantized baseline's ops: the same maths with fp inputs and outputs (fp32 inside, the
# outputs in the inputs' float type).


def rms_norm_fp(x, residual, weight, *, eps: float):
    """jetmamba::RMSNorm. x, residual: [..., d] fp16/fp32 (residual optional); weight: [d].
    r = x + residual (fp32, stored in x's dtype); y = rmsnorm(r) * weight in x's dtype.
    Returns (y, r)."""
    r = (x.float() if residual is None else x.float() + residual.float()).to(x.dtype)
    return rms_norm(r.float(), weight.float(), eps).to(x.dtype), r


def causal_conv1d_fp(x, weight, bias, conv_state):
    """jetmamba::CausalConv1dFp. x: [b, l, c] fp16/fp32; weight: [c, k]; bias: [c] or None;
    conv_state: [b, k-1, c] (zeros when None). y = silu(conv(x, w) + bias) in x's dtype, fp32
    inside. Returns (y, new state = the last k-1 inputs, exact)."""
    b, l, c = x.shape
    k = weight.shape[1]
    if conv_state is None:
        conv_state = torch.zeros(b, k - 1, c, dtype=x.dtype, device=x.device)
    y, _ = causal_conv1d(x.float(), weight.float(), None if bias is None else bias.float(), conv_state.float())
    return y.to(x.dtype), torch.cat([conv_state.to(x.dtype), x], dim=1)[:, l:].clone()


def selective_scan_fp(u, dt, A, B, C, D, z, dt_bias, ssm_state):
    """jetmamba::SelectiveScanFp (Mamba1). u, dt, z: [b, l, d] fp16/fp32; B, C: [b, l, n];
    A: [d, n], D, dt_bias: [d] fp32; ssm_state: [b, d, n] or None (zeros, fp16). fp32 maths as
    SelectiveScan. Returns (y [b, l, d] in u's dtype, state in the state's dtype)."""
    h0 = None if ssm_state is None else ssm_state.float()
    y, h = selective_scan(u.float(), dt.float(), A.float(), B.float(), C.float(), D.float(), z.float(), h0,
                          dt_bias.float(), True)  # fmt: skip
    state_dtype = torch.float16 if ssm_state is None else ssm_state.dtype
    return y.to(u.dtype), h.to(state_dtype)


def ssd_scan_fp(x, dt, A, B, C, D, dt_bias, ssm_state, *, heads: int, dt_min: float = 0.0,
                dt_max: float = float("inf")):  # fmt: skip
    """jetmamba::SSDScanFp (Mamba2). x: [b, l, H*P] fp16/fp32 (``heads`` = H); dt: [b, l, H];
    B, C: [b, l, G, N]; A, D, dt_bias: [H] fp32; ssm_state: [b, H, P, N] or None. fp32 maths as
    SSDScan. Returns (y [b, l, H, P] in x's dtype, state in the state's dtype)."""
    b, l, channels = x.shape
    d = torch.nn.functional.softplus(dt.float() + dt_bias.float()).clamp(min=dt_min, max=dt_max)
    h0 = None if ssm_state is None else ssm_state.float()
    y, h = ssd_scan(x.float().reshape(b, l, heads, channels // heads), d, A.float(), B.float(), C.float(),
                    D.float(), h0)  # fmt: skip
    state_dtype = torch.float16 if ssm_state is None else ssm_state.dtype
    return y.to(x.dtype), h.to(state_dtype)


def gated_rms_norm_fp(y, z, weight, *, eps: float, group_size: int):
    """jetmamba::GatedRMSNorm (Mamba2). y, z: [b, l, d] fp16/fp32; weight: [d].
    out = RMSNorm(y * silu(z)) per group of ``group_size`` channels, times weight, in y's dtype."""
    return gated_rms_norm(y.float(), z.float(), weight.float(), eps, group_size).to(y.dtype)


# ---------------------------------------------------------------- 4-bit weight GEMMs
# Packed int4 weights (layout: jetmamba.compiler.ops.int4): qweight uint8 [N, K/2], scales fp16
# [N, K/G]; y = x W^T (+ bias) with fp32 accumulation, fp16 out.


def w4a16_linear(x, qweight, scales, bias=None, *, group_size: int = 128):
    """jetmamba::W4A16Linear. x: [..., K] fp16; qweight: uint8 [N, K/2]; scales: fp16 [N, K/G];
    bias: fp32 [N] or None. y = x W^T + bias in fp32 with W = dequantize_int4(...) (exact in fp32),
    rounded to fp16 [..., N]."""
    from jetmamba.compiler.ops.int4 import dequantize_int4

    w = dequantize_int4(qweight, scales, group_size).to(x.device)
    y = torch.nn.functional.linear(x.float(), w)
    return (y if bias is None else y + bias.float()).to(torch.float16)


def w4a8_linear(x, qweight, scales, bias=None, *, x_scale: float, group_size: int = 128):
    """jetmamba::W4A8Linear. x: [..., K] int8 with the static per-tensor scale ``x_scale``;
    qweight, scales, bias as W4A16Linear. y = x_scale * sum_g scales[n, g] * (sum_{k in g} q[n, k]
    x[k]) + bias: the group sums are integers (exact: |sum| <= 128 * 8 * G < 2^24 in fp32), the
    sum over groups fp32; rounded to fp16 [..., N]."""
    from jetmamba.compiler.ops.int4 import check_layout, unpack_int4

    q = unpack_int4(qweight).to(x.device)
    n, k = q.shape
    check_layout(n, k, group_size)
    groups = k // group_size
    xg = x.reshape(-1, groups, group_size).float()
    isum = torch.einsum("mgk,ngk->mng", xg, q.float().reshape(n, groups, group_size))  # integer-valued
    y = (isum * scales.float().to(x.device)).sum(-1) * float(x_scale)
    if bias is not None:
        y = y + bias.float()
    return y.reshape(*x.shape[:-1], n).to(torch.float16)
