"""CUDA kernels and TensorRT plugins, one folder per custom op (not built yet)."""
