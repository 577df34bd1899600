"""int8 quantization primitives follow ONNX QuantizeLinear exactly."""

from __future__ import annotations

import torch

from jetmamba.compiler.ops.quant import dequantize, fake_quantize, quantize, saturation_count, scale_for


def test_round_half_to_even_and_saturate():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300.0, -300.0, 127.4, -128.6])
    assert quantize(x, 1.0).tolist() == [0, 2, 2, 0, -2, -2, 127, -128, 127, -128]
    assert saturation_count(x, 1.0) == 3


def test_per_channel_axis():
    w = torch.tensor([[1.0, -2.0], [10.0, 20.0]])
    s = scale_for(w.abs().amax(1))
    q = quantize(w, s, axis=0)
    assert q.tolist() == [[64, -127], [64, 127]]
    torch.testing.assert_close(dequantize(q, s, axis=0), w, atol=0.08, rtol=0)


def test_zero_range_does_not_divide_by_zero():
    s = scale_for(torch.tensor(0.0))
    assert s > 0 and quantize(torch.zeros(3), s).tolist() == [0, 0, 0]


def test_fake_quantize_keeps_dtype_and_error_bound():
    x = torch.randn(1000, dtype=torch.float64)
    s = scale_for(x.abs().max())
    y = fake_quantize(x, s)
    assert y.dtype == torch.float64 and float((y - x).abs().max()) <= float(s) / 2 + 1e-9
