"""The built-in demo: a small byte-level Mamba trained by ``jetmamba.demo.train``, shipped with the package."""
