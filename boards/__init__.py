"""Jetson boards jetmamba targets.

What the compiler needs of a board today: its name (recorded in a bundle's manifest) and its GPU
architecture (what the plugins are built for). The full per-board data files (memory size and
bandwidth per power mode, peaks, JetPack versions) belong to the planner and runtime.
"""

from __future__ import annotations

from jetmamba.errors import UsageError

# name -> CUDA architecture of its GPU (Orin: Ampere, sm_87; Thor: Blackwell, sm_110)
BOARD_ARCH: dict[str, str] = {
    "orin-nano-4gb": "sm_87",
    "orin-nano-8gb": "sm_87",
    "orin-nx-8gb": "sm_87",
    "orin-nx-16gb": "sm_87",
    "agx-orin-32gb": "sm_87",
    "agx-orin-64gb": "sm_87",
    "thor": "sm_110",
}


def board_arch(name: str) -> str:
    if name not in BOARD_ARCH:
        raise UsageError(f"unknown board {name!r}; choose from {', '.join(BOARD_ARCH)}")
    return BOARD_ARCH[name]
