"""Tensor functions of the fp Mamba model: scans, convolution, norms.

Each fast implementation has a reference twin with the same signature; tests compare them with
the tolerances in ``tests/tolerances.py``.
"""

from jetmamba.calibration.functional.conv import causal_conv1d, causal_conv1d_ref
from jetmamba.calibration.functional.norm import gated_rms_norm, rms_norm
from jetmamba.calibration.functional.selective_scan import (
    selective_scan,
    selective_scan_ref,
    selective_state_update,
)
from jetmamba.calibration.functional.ssd import ssd_scan, ssd_scan_ref, ssd_state_update

__all__ = [
    "causal_conv1d",
    "causal_conv1d_ref",
    "gated_rms_norm",
    "rms_norm",
    "selective_scan",
    "selective_scan_ref",
    "selective_state_update",
    "ssd_scan",
    "ssd_scan_ref",
    "ssd_state_update",
]
