"""Function-preserving rewrites of the fp model: each returns a MambaLM with the same logits, a new
one unless ``inplace`` (the quantizer rewrites its own copy in place: a large model once in memory).

Maths is fp64 inside, the result is cast back to the model's dtype; tensors stay on the device
they were on. The residual-stream rewrites touch only the projections every Mamba family has
(embedding, ``in_proj`` input, ``out_proj`` output, final norm, LM head), so one implementation
serves Mamba1 and Mamba2.

- :func:`fuse_norms`: RMSNorm weights folded into the next projection (``in_proj``, LM head);
  the norms become weightless, which is what makes the stream rotatable.
- :func:`rotate_residual`: residual stream h -> h R for an orthogonal R.
- :func:`hadamard_before_out_proj`: an online Hadamard on out_proj's input, H^T fused into it.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from jetmamba.calibration.model import MambaLM
from jetmamba.errors import UnsupportedError


def _set(param: torch.nn.Parameter, value: torch.Tensor) -> None:
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


_CHUNK_ROWS = 4096  # rows rotated at a time: a vocab x d_model table in fp64 would be ~1 GB at once


def _right_multiply_(param: torch.nn.Parameter, R: torch.Tensor) -> None:
    """param <- param @ R in fp64, a block of rows at a time (bounded extra memory)."""
    with torch.no_grad():
        for start in range(0, param.shape[0], _CHUNK_ROWS):
            rows = param[start : start + _CHUNK_ROWS]
            rows.copy_((rows.double() @ R).to(param.dtype))


def _untie(model: MambaLM) -> None:
    """Give the model its own LM head (a copy of the embedding) so the two can be changed apart."""
    if model.lm_head is None:
        w = model.embedding.weight
        with torch.device("meta"):  # no throwaway initialisation of a vocab x d_model matrix
            model.lm_head = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        model.lm_head.weight = torch.nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
        model.config = dataclasses.replace(model.config, tie_embeddings=False)


def norms_are_fused(model: MambaLM) -> bool:
    ones = [b.norm.weight for b in model.layers] + [model.norm_f.weight]
    return all(bool((w == 1).all()) for w in ones)


def fuse_norms(model: MambaLM, *, inplace: bool = False) -> MambaLM:
    """in_proj.W <- in_proj.W diag(norm.w); lm_head.W <- lm_head.W diag(norm_f.w); norms <- 1.

    Unties the LM head from the embedding (the embedding still feeds the unfused stream).
    """
    out = model if inplace else copy.deepcopy(model)
    for block in out.layers:
        w = block.norm.weight.detach().double()
        _set(block.mixer.in_proj.weight, block.mixer.in_proj.weight.detach().double() * w)
        _set(block.norm.weight, torch.ones_like(w))
    _untie(out)
    w = out.norm_f.weight.detach().double()
    _right_multiply_(out.lm_head.weight, torch.diag(w))
    _set(out.norm_f.weight, torch.ones_like(w))
    return out


def rotate_residual(model: MambaLM, R: torch.Tensor, *, inplace: bool = False) -> MambaLM:
    """Rewrite the model so that its residual stream is h R (R orthogonal, d_model x d_model).

    RMSNorm commutes with R only when it has no weight, so the norms must be fused first.
    Embedding E <- E R; in_proj W <- W R; out_proj W <- R^T W, b <- b R; LM head W <- W R.
    """
    if not norms_are_fused(model):
        raise UnsupportedError("rotate_residual needs weightless norms: apply fuse_norms first")
    d = model.config.d_model
    R = R.to(dtype=torch.float64, device=model.device)
    if R.shape != (d, d) or not torch.allclose(R @ R.t(), torch.eye(d, dtype=R.dtype, device=R.device), atol=1e-8):
        raise UnsupportedError(f"rotate_residual needs an orthogonal {d} x {d} matrix")
    out = model if inplace else copy.deepcopy(model)
    _untie(out)
    _right_multiply_(out.embedding.weight, R)
    _right_multiply_(out.lm_head.weight, R)
    for block in out.layers:
        m = block.mixer
        _right_multiply_(m.in_proj.weight, R)
        _set(m.out_proj.weight, R.t() @ m.out_proj.weight.detach().double())
        if m.out_proj.bias is not None:
            _set(m.out_proj.bias, m.out_proj.bias.detach().double() @ R)
    return out


def hadamard_before_out_proj(model: MambaLM, *, inplace: bool = False) -> MambaLM:
    """Quamba's online Hadamard: out_proj's input y becomes y' = y H^T / sqrt(n) (computed online,
    fused with its int8 quantization in the deployed graph) and out_proj W <- W H^T / sqrt(n)."""
    from jetmamba.calibration.hadamard import hadamard_transform

    out = model if inplace else copy.deepcopy(model)
    for block in out.layers:
        m = block.mixer
        if m.out_hadamard:
            raise UnsupportedError("out_proj already has a Hadamard fused")
        _set(m.out_proj.weight, hadamard_transform(m.out_proj.weight.detach().double()))
        m.out_hadamard = True
    return out


# ---------------------------------------------------------------- MambaQuant


def klt_rotation(covariance: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """MambaQuant's KLT-enhanced rotation R = K diag(s) H^T / sqrt(n): K the eigenvectors of the
    activation covariance (decorrelate), then a random-sign Hadamard (spread the variance evenly
    over channels). Orthogonal, fp64. Where n is not a supported Hadamard order, R = K."""
    from jetmamba.calibration.hadamard import is_supported, random_hadamard

    cov = covariance.double()
    cov = (cov + cov.t()) / 2
    _, K = torch.linalg.eigh(cov)
    K = K.flip(-1)  # largest variance first
    n = cov.shape[0]
    return K @ random_hadamard(n, seed) if is_supported(n) else K


def rotate_dt_rank(model: MambaLM, rotations: list[torch.Tensor], *, inplace: bool = False) -> MambaLM:
    """Mamba1's dt_rank space (x_proj's dt rows -> dt_proj): dt_r -> dt_r Q per layer, Q orthogonal.
    x_proj dt rows W <- Q^T W; dt_proj W <- W Q. (FalconMamba's weightless RMSNorm of dt_r commutes
    with Q.)"""
    if model.config.arch != "mamba1":
        raise UnsupportedError(f"{model.config.arch} has no dt_rank space (rotate_dt_rank is for Mamba1)")
    out = model if inplace else copy.deepcopy(model)
    for block, Q in zip(out.layers, rotations, strict=True):
        m = block.mixer
        Q = Q.double().to(m.D.device)
        r = m.dt_rank
        w = m.x_proj.weight.detach().double().clone()
        w[:r] = Q.t() @ w[:r]
        _set(m.x_proj.weight, w)
        _set(m.dt_proj.weight, m.dt_proj.weight.detach().double() @ Q)
    return out


def smooth_out_proj(
    model: MambaLM, act_max: list[torch.Tensor], alpha: float = 0.5, floor: float = 1e-2, *, inplace: bool = False
) -> MambaLM:
    """MambaQuant's smoothing of out_proj's input, per layer: s = act_max^alpha / w_max^(1 - alpha)
    (w_max the per-input-channel max |W| of out_proj), clamped >= floor; the input is divided by s
    upstream (each architecture's exact place: S-SiLU gate rows in Mamba1, the gated norm's
    weight in Mamba2) and out_proj's columns multiplied by it."""
    out = model if inplace else copy.deepcopy(model)
    for block, a in zip(out.layers, act_max, strict=True):
        m = block.mixer
        w_max = m.out_proj.weight.detach().double().abs().amax(0).clamp_min(1e-8)
        s = (a.double().to(w_max.device).clamp_min(1e-8) ** alpha / w_max ** (1 - alpha)).clamp_min(floor)
        m.smooth_out_proj_input(s)
    return out


def smooth_ssm_state(model: MambaLM, scales: list[torch.Tensor], *, inplace: bool = False) -> MambaLM:
    """MambaQuant's per-state smoothing of the SSM output contraction (Mamba1), per layer: B rows
    of x_proj / s, C rows * s, so the scan carries h / s and y = h C is unchanged. MambaQuant
    corrects an incoming state at the first step (log(1/s) added to the first decay); here the
    mixer converts states at its boundary (in: / s, out: * s), which is the same correction and
    keeps chunked prefill and decode exact. (MambaQuant pairs it with quantizing h per token;
    jetmamba keeps h in fp16, so no recipe uses it by default.)"""
    if model.config.arch != "mamba1":
        raise UnsupportedError(f"per-state smoothing is defined for Mamba1's x_proj; this model is {model.config.arch}")
    out = model if inplace else copy.deepcopy(model)
    for block, s in zip(out.layers, scales, strict=True):
        block.mixer.smooth_ssm_state(s)
    return out


# ---------------------------------------------------------------- Quamba2


def reorder_mamba2(model: MambaLM, clusterings: list, *, inplace: bool = False) -> MambaLM:
    """Quamba2's offline reordering (per layer, from :func:`~jetmamba.calibration.cluster.sort_and_cluster`):
    channels of z, x, the gated norm and out_proj's input follow ``channel_index``; heads of dt,
    A_log, D and dt_bias follow ``head_index``. Heads stay inside their SSD group (and norm group),
    so the function is unchanged; the recurrent state is laid out in the new order. The mixer keeps
    the cluster of each channel (``x_clusters``) for the per-cluster scales."""
    if model.config.arch != "mamba2":
        raise UnsupportedError(f"sort-and-cluster reorders Mamba2 heads; this model is {model.config.arch}")
    out = model if inplace else copy.deepcopy(model)
    c = out.config
    for block, cl in zip(out.layers, clusterings, strict=True):
        m = block.mixer
        dev = m.D.device
        ch, heads = cl.channel_index.to(dev), cl.head_index.to(dev)
        rows = torch.arange(m.in_proj.out_features, device=dev)
        rows[: c.d_inner] = ch  # z
        rows[c.d_inner : 2 * c.d_inner] = c.d_inner + ch  # x (the first part of xBC)
        rows[c.d_inner + c.conv_dim :] = c.d_inner + c.conv_dim + heads  # dt
        conv = torch.arange(c.conv_dim, device=dev)
        conv[: c.d_inner] = ch
        with torch.no_grad():
            m.in_proj.weight.copy_(m.in_proj.weight[rows])
            if m.in_proj.bias is not None:
                m.in_proj.bias.copy_(m.in_proj.bias[rows])
            m.conv1d.weight.copy_(m.conv1d.weight[conv])
            if m.conv1d.bias is not None:
                m.conv1d.bias.copy_(m.conv1d.bias[conv])
            for p in (m.A_log, m.D, m.dt_bias):
                p.copy_(p[heads])
            m.norm.weight.copy_(m.norm.weight[ch])
            m.out_proj.weight.copy_(m.out_proj.weight[:, ch])
        m.x_clusters = cl.cluster.to(dev)
    return out
