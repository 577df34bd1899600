"""jetmamba: an edge deployment compiler for Mamba language models on NVIDIA Jetson.

The import root holds the command line and shared utilities; the work lives in its
subpackages, one per folder of the repository:

- ``jetmamba.calibration``: checkpoint loading, the fp reference model, text data, evaluation;
- ``jetmamba.compiler``: lowering to ONNX with jetmamba custom ops, bundles;
- ``jetmamba.plugins``: CUDA kernels and TensorRT plugins, one folder per op;
- ``jetmamba.runtime``: backends, generation and benchmarks on the device;
- ``jetmamba.boards``: one data file per Jetson board.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jetmamba")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
