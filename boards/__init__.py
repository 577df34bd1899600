"""Jetson boards jetmamba targets: one data file per board (``boards/<name>.json``).

A board file holds what the compiler, the planner and the runtime need to know of a board: its GPU
architecture (what the plugins are built for), SMs and cores, memory size and type, what the OS
leaves of the memory (an estimate), its power modes (GPU clock, memory bandwidth and dense INT8 /
FP16 peaks per mode), the JetPack releases it runs (TensorRT and CUDA versions), the documents
the figures come from, and a note for every figure that is derived or uncertain.

Every file is checked against the schema below when it is read; a broken file is a one-line
:class:`BoardFileError` naming the file and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jetmamba.errors import JetmambaError, UsageError

GIB = 1 << 30  # NVIDIA quotes Jetson DRAM sizes in binary gigabytes
GB = 10**9  # bandwidths, peaks and the OS estimates are decimal


class BoardFileError(JetmambaError):
    """A board data file that does not follow the schema."""


@dataclass(frozen=True)
class PowerMode:
    """One nvpmodel mode. Peaks are dense (no 2:4 sparsity) and of the GPU alone (no DLA)."""

    name: str
    nvpmodel_id: int | None  # None: not documented well enough to vouch for
    watts: float | None  # the mode's power budget; None: not capped by the mode (MAXN)
    gpu_max_mhz: float
    memory_bandwidth_gbs: float
    int8_tops_dense: float
    fp16_tflops_dense: float
    requires_jetpack: str | None  # the first JetPack that has the mode (the "Super" modes: 6.2)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbs * GB

    @property
    def int8_ops_per_s(self) -> float:
        return self.int8_tops_dense * 1e12

    @property
    def fp16_flops_per_s(self) -> float:
        return self.fp16_tflops_dense * 1e12


@dataclass(frozen=True)
class JetPack:
    version: str
    l4t: str | None
    tensorrt: str
    cuda: str


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    module: str | None
    gpu_arch: str  # CUDA architecture, e.g. sm_87
    gpu_architecture: str  # e.g. Ampere
    sms: int
    cuda_cores: int
    tensor_cores: int
    memory_gb: float  # DRAM size as NVIDIA quotes it (GiB), shared by CPU and GPU
    memory_type: str
    memory_bus_bits: int
    os_reserved_desktop_gb: float  # estimate: carve-outs + an idle desktop
    os_reserved_headless_gb: float  # estimate: carve-outs + a console-only boot
    power_modes: tuple[PowerMode, ...]
    default_power_mode: str
    jetpack: tuple[JetPack, ...]
    sources: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * GIB)

    def usable_bytes(self, headless: bool = False) -> int:
        """What a model may use: the DRAM less what firmware, OS (and desktop) keep (an estimate)."""
        reserved = self.os_reserved_headless_gb if headless else self.os_reserved_desktop_gb
        return self.memory_bytes - int(reserved * GB)

    def fp32_flops_per_s(self, mode: PowerMode) -> float:
        """CUDA-core FP32 peak: cores x 2 (one FMA) x the mode's GPU clock (the scans' arithmetic)."""
        return self.cuda_cores * 2 * mode.gpu_max_mhz * 1e6

    def power_mode(self, name: str | None = None) -> PowerMode:
        """A mode by name (case-insensitive) or nvpmodel id; ``None``: the board's default (its maximum)."""
        wanted = self.default_power_mode if name is None else str(name)
        for mode in self.power_modes:
            by_id = mode.nvpmodel_id is not None and wanted == str(mode.nvpmodel_id)
            if by_id or mode.name.lower() == wanted.lower():
                return mode
        names = ", ".join(m.name for m in self.power_modes)
        raise UsageError(f"board {self.name} has no power mode {wanted!r}; choose from {names}")

    def to_dict(self) -> dict[str, Any]:
        """The board as its file has it."""
        return _board_to_dict(self)


# ---------------------------------------------------------------- schema


def _fail(where: str, message: str) -> BoardFileError:
    return BoardFileError(f"{where}: {message}")


def _field(d: dict, key: str, kinds: tuple[type, ...], where: str, *, nullable: bool = False, positive: bool = False):
    if key not in d:
        raise _fail(where, f"missing field {key!r}")
    v = d[key]
    if v is None and nullable:
        return None
    # bool is an int subclass; a true/false where a number belongs is a typo, not a count
    if isinstance(v, bool) or not isinstance(v, kinds):
        expected = " or ".join(k.__name__ for k in kinds) + (" or null" if nullable else "")
        raise _fail(where, f"field {key!r} must be {expected}, got {v!r}")
    if positive and not v > 0:
        raise _fail(where, f"field {key!r} must be positive, got {v!r}")
    if isinstance(v, str) and not v.strip():
        raise _fail(where, f"field {key!r} must not be empty")
    return v


_NUM = (int, float)
_BOARD_KEYS = {
    "name", "title", "module", "gpu_arch", "gpu_architecture", "sms", "cuda_cores", "tensor_cores", "memory_gb",
    "memory_type", "memory_bus_bits", "os_reserved_gb", "power_modes", "default_power_mode", "jetpack", "sources",
    "notes",
}  # fmt: skip
_MODE_KEYS = {"name", "nvpmodel_id", "watts", "gpu_max_mhz", "memory_bandwidth_gbs", "int8_tops_dense",
              "fp16_tflops_dense", "requires_jetpack"}  # fmt: skip
_JETPACK_KEYS = {"version", "l4t", "tensorrt", "cuda"}
_VERSION = re.compile(r"^\d+(\.\d+)*$")


def _no_unknown(d: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise _fail(where, f"unknown fields {unknown}")


def _strings(d: dict, key: str, where: str) -> tuple[str, ...]:
    items = _field(d, key, (list,), where)
    if not items or not all(isinstance(s, str) and s.strip() for s in items):
        raise _fail(where, f"field {key!r} must be a non-empty list of non-empty strings")
    return tuple(items)


def _version(d: dict, key: str, where: str, *, nullable: bool = False) -> str | None:
    v = _field(d, key, (str,), where, nullable=nullable)
    if v is not None and not _VERSION.match(v):
        raise _fail(where, f"field {key!r} must be a version such as 10.3, got {v!r}")
    return v


def _power_mode(d: Any, where: str) -> PowerMode:
    if not isinstance(d, dict):
        raise _fail(where, "a power mode must be an object")
    _no_unknown(d, _MODE_KEYS, where)
    nvp = _field(d, "nvpmodel_id", (int,), where, nullable=True)
    if nvp is not None and nvp < 0:
        raise _fail(where, f"field 'nvpmodel_id' must be >= 0, got {nvp}")
    return PowerMode(
        name=_field(d, "name", (str,), where),
        nvpmodel_id=nvp,
        watts=_field(d, "watts", _NUM, where, nullable=True, positive=True),
        gpu_max_mhz=_field(d, "gpu_max_mhz", _NUM, where, positive=True),
        memory_bandwidth_gbs=_field(d, "memory_bandwidth_gbs", _NUM, where, positive=True),
        int8_tops_dense=_field(d, "int8_tops_dense", _NUM, where, positive=True),
        fp16_tflops_dense=_field(d, "fp16_tflops_dense", _NUM, where, positive=True),
        requires_jetpack=_version(d, "requires_jetpack", where, nullable=True),
    )


def _jetpack(d: Any, where: str) -> JetPack:
    if not isinstance(d, dict):
        raise _fail(where, "a JetPack entry must be an object")
    _no_unknown(d, _JETPACK_KEYS, where)
    return JetPack(
        version=_version(d, "version", where),
        l4t=_version(d, "l4t", where, nullable=True),
        tensorrt=_version(d, "tensorrt", where),
        cuda=_version(d, "cuda", where),
    )


def board_from_dict(d: Any, where: str) -> Board:
    """Check ``d`` against the board schema; ``where`` names it in errors."""
    if not isinstance(d, dict):
        raise _fail(where, "a board file must hold one JSON object")
    _no_unknown(d, _BOARD_KEYS, where)
    arch = _field(d, "gpu_arch", (str,), where)
    if not re.fullmatch(r"sm_\d{2,3}", arch):
        raise _fail(where, f"field 'gpu_arch' must be a CUDA architecture such as sm_87, got {arch!r}")
    reserved = _field(d, "os_reserved_gb", (dict,), where)
    _no_unknown(reserved, {"desktop", "headless"}, f"{where} os_reserved_gb")
    modes_raw = _field(d, "power_modes", (list,), where)
    if not modes_raw:
        raise _fail(where, "field 'power_modes' must list at least one mode")
    modes = tuple(_power_mode(m, f"{where} power_modes[{i}]") for i, m in enumerate(modes_raw))
    names = [m.name.lower() for m in modes]
    if len(set(names)) != len(names):
        raise _fail(where, f"power mode names repeat: {[m.name for m in modes]}")
    ids = [m.nvpmodel_id for m in modes if m.nvpmodel_id is not None]
    if len(set(ids)) != len(ids):
        raise _fail(where, f"nvpmodel ids repeat: {ids}")
    default = _field(d, "default_power_mode", (str,), where)
    if default.lower() not in names:
        raise _fail(where, f"default_power_mode {default!r} is not one of its power modes")
    jetpack_raw = _field(d, "jetpack", (list,), where)
    if not jetpack_raw:
        raise _fail(where, "field 'jetpack' must list at least one JetPack release")
    board = Board(
        name=_field(d, "name", (str,), where),
        title=_field(d, "title", (str,), where),
        module=_field(d, "module", (str,), where, nullable=True),
        gpu_arch=arch,
        gpu_architecture=_field(d, "gpu_architecture", (str,), where),
        sms=_field(d, "sms", (int,), where, positive=True),
        cuda_cores=_field(d, "cuda_cores", (int,), where, positive=True),
        tensor_cores=_field(d, "tensor_cores", (int,), where, positive=True),
        memory_gb=_field(d, "memory_gb", _NUM, where, positive=True),
        memory_type=_field(d, "memory_type", (str,), where),
        memory_bus_bits=_field(d, "memory_bus_bits", (int,), where, positive=True),
        os_reserved_desktop_gb=_field(reserved, "desktop", _NUM, f"{where} os_reserved_gb", positive=True),
        os_reserved_headless_gb=_field(reserved, "headless", _NUM, f"{where} os_reserved_gb", positive=True),
        power_modes=modes,
        default_power_mode=default,
        jetpack=tuple(_jetpack(j, f"{where} jetpack[{i}]") for i, j in enumerate(jetpack_raw)),
        sources=_strings(d, "sources", where),
        notes=_strings(d, "notes", where),
    )
    if board.usable_bytes(headless=False) <= 0 or board.os_reserved_headless_gb > board.os_reserved_desktop_gb:
        raise _fail(where, "os_reserved_gb must leave memory free, and headless must reserve no more than desktop")
    return board


def _board_to_dict(board: Board) -> dict[str, Any]:
    return {
        "name": board.name, "title": board.title, "module": board.module, "gpu_arch": board.gpu_arch,
        "gpu_architecture": board.gpu_architecture, "sms": board.sms, "cuda_cores": board.cuda_cores,
        "tensor_cores": board.tensor_cores, "memory_gb": board.memory_gb, "memory_type": board.memory_type,
        "memory_bus_bits": board.memory_bus_bits,
        "os_reserved_gb": {"desktop": board.os_reserved_desktop_gb, "headless": board.os_reserved_headless_gb},
        "power_modes": [m.__dict__.copy() for m in board.power_modes],
        "default_power_mode": board.default_power_mode,
        "jetpack": [j.__dict__.copy() for j in board.jetpack],
        "sources": list(board.sources), "notes": list(board.notes),
    }  # fmt: skip


# ---------------------------------------------------------------- reading the files


def _board_dir() -> Path:
    return Path(str(resources.files("jetmamba.boards")))


def read_board_file(path: str | Path) -> Board:
    """One board file, validated; its ``name`` must match the file name."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BoardFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoardFileError(f"{path}: not valid JSON ({exc})") from None
    board = board_from_dict(raw, str(path))
    if board.name != path.stem:
        raise BoardFileError(f"{path}: name {board.name!r} does not match the file name {path.stem!r}")
    return board


def board_names() -> list[str]:
    """Names of the packaged board files, sorted."""
    return sorted(p.stem for p in _board_dir().glob("*.json"))


def list_boards() -> list[Board]:
    """Every packaged board, validated, smallest memory first (the order a planner suggests them in)."""
    return sorted((read_board_file(_board_dir() / f"{n}.json") for n in board_names()),
                  key=lambda b: (b.memory_gb, b.name))  # fmt: skip


def load_board(name: str) -> Board:
    if name not in board_names():
        raise UsageError(f"unknown board {name!r}; choose from {', '.join(BOARD_ARCH)}")
    return read_board_file(_board_dir() / f"{name}.json")


def _read_board_arch() -> dict[str, str]:
    return {b.name: b.gpu_arch for b in list_boards()}


# name -> CUDA architecture of its GPU (Orin: Ampere, sm_87; Thor: Blackwell, sm_110), from the files;
# what `jetmamba compile` records in a bundle and builds the plugins for
BOARD_ARCH: dict[str, str] = _read_board_arch()


def board_arch(name: str) -> str:
    if name not in BOARD_ARCH:
        raise UsageError(f"unknown board {name!r}; choose from {', '.join(BOARD_ARCH)}")
    return BOARD_ARCH[name]
