"""Lowering a quantized model to ONNX with jetmamba custom ops, and bundles (not built yet)."""
