"""Device probes for Jetson: tegrastats, the board, L4T / JetPack, nvpmodel and jetson_clocks.

Everything that reads the machine is split in two: a pure function on text (tested on real
output quoted from public sources, see ``tests/runtime/test_jetson.py``) and a thin reader that
takes ``root`` (the filesystem root, a fake tree in the tests) and ``run`` (a command runner, a
fake in the tests). Nothing here needs a Jetson to import or to be tested.

tegrastats differs between boards and JetPack releases: the rails are named after the board's
power monitor channels (Orin Nano / NX: ``VDD_IN``, ``VDD_CPU_GPU_CV``, ``VDD_SOC``; AGX Orin:
``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0``, ...), JetPack 5 prints temperatures as
``CPU@47.937C`` and the GPU clock as ``GR3D_FREQ 0%@611``, JetPack 6 as ``cpu@45.875C`` and
``GR3D_FREQ 0%@[305]`` (or no clock at all), releases before Orin print rails without a unit,
and JetPack 6 prefixes a date. The parser reads each field by its own pattern, so a field it
does not know is skipped and a field that is absent stays None.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A command runner: argv -> (exit status, stdout + stderr), or None where the program is absent.
Runner = Callable[[Sequence[str]], "tuple[int, str] | None"]


def run_command(argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str] | None:
    """Run a probe command; None when it is not installed (or hangs)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (FileNotFoundError, PermissionError, subprocess.TimeoutExpired, OSError):
        return None
    return done.returncode, done.stdout + done.stderr


# ---------------------------------------------------------------- tegrastats lines


@dataclass(frozen=True)
class Rail:
    """One power monitor channel: the reading when the line was printed and tegrastats' own
    running average since it started (both mW)."""

    current_mw: float
    average_mw: float | None


@dataclass(frozen=True)
class TegraSample:
    timestamp: str | None  # the date prefix (JetPack 6, or --timestamp), as printed
    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    swap_cached_mb: int | None = None
    cpu_load_percent: tuple[float | None, ...] = ()  # None: the core is off
    cpu_mhz: tuple[int | None, ...] = ()
    emc_percent: float | None = None
    emc_mhz: int | None = None
    gpu_percent: float | None = None
    gpu_mhz: int | None = None  # the first GPC's clock where tegrastats lists several
    temperatures_c: dict[str, float] = field(default_factory=dict)  # sensor names lower-cased
    rails: dict[str, Rail] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TIMESTAMP = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_CORE = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\d+))?$")
_EMC = re.compile(r"\bEMC_FREQ (\d+(?:\.\d+)?)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+(?:\.\d+)?)%(?:@\[?(\d+))?")
# name@value C, with the JetPack 7 form "cpu@45.812C/45.812C" (the extra figure is not kept)
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)*(?=\s|$)")
# NAME cur/avg with or without "mW" (before Orin there was no unit), and the JetPack 7 form
# cur/avg/third: the third figure is not documented where we looked and is not kept
_RAIL = re.compile(
    r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?(?:/\d+(?:\.\d+)?(?:mW)?)?(?=\s|$)"
)
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}
OFFLINE_SENSOR_C = -256.0  # what tegrastats prints for a sensor that is powered down


def parse_tegrastats(line: str) -> TegraSample | None:
    """One tegrastats line -> a sample; None for text that is not a tegrastats line."""
    ram = _RAM.search(line)
    if ram is None:
        return None
    ts = _TIMESTAMP.match(line)
    swap = _SWAP.search(line)
    loads: list[float | None] = []
    mhz: list[int | None] = []
    cpu = _CPU.search(line)
    if cpu is not None:
        shared_clock = int(cpu.group(2)) if cpu.group(2) else None  # old form: CPU [12%,off]@1734
        for entry in cpu.group(1).split(","):
            entry = entry.strip()
            core = _CORE.match(entry)
            if core is None:  # "off" (or something new): the core's figures are unknown
                loads.append(None)
                mhz.append(None)
                continue
            loads.append(float(core.group(1)))
            mhz.append(int(core.group(2)) if core.group(2) else shared_clock)
    emc = _EMC.search(line)
    gpu = _GR3D.search(line)
    temps = {}
    for name, value in _TEMP.findall(line):
        if float(value) != OFFLINE_SENSOR_C:
            temps[name.lower()] = float(value)
    rails = {}
    for name, cur, avg in _RAIL.findall(line):
        if name not in _NOT_RAILS:
            rails[name] = Rail(float(cur), float(avg))
    return TegraSample(
        timestamp=ts.group(1) if ts else None,
        ram_used_mb=int(ram.group(1)),
        ram_total_mb=int(ram.group(2)),
        swap_used_mb=int(swap.group(1)) if swap else None,
        swap_total_mb=int(swap.group(2)) if swap else None,
        swap_cached_mb=int(swap.group(3)) if swap and swap.group(3) else None,
        cpu_load_percent=tuple(loads),
        cpu_mhz=tuple(mhz),
        emc_percent=float(emc.group(1)) if emc else None,
        emc_mhz=int(emc.group(2)) if emc and emc.group(2) else None,
        gpu_percent=float(gpu.group(1)) if gpu else None,
        gpu_mhz=int(gpu.group(2)) if gpu and gpu.group(2) else None,
        temperatures_c=temps,
        rails=rails,
    )


# The rail that measures the whole module's input, where the board has one, in order of preference.
INPUT_RAILS = ("VDD_IN", "VIN", "VIN_SYS_5V0")


def input_rail(rails) -> str | None:
    """The rail closest to "the board's power" among ``rails`` (names)."""
    return next((r for r in INPUT_RAILS if r in rails), None)


# ---------------------------------------------------------------- power integration


def integrate(points: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """The integral over [start, end] of the value through ``points`` (time, value), sorted by
    time: linear between samples, held at the first / last value beyond them. Power in mW and
    time in s give mJ."""
    if not points or end <= start:
        return 0.0

    def value(t: float) -> float:
        if t <= points[0][0]:
            return points[0][1]
        if t >= points[-1][0]:
            return points[-1][1]
        for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
            if t0 <= t <= t1:
                return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        return points[-1][1]  # not reached: t lies between two samples

    knots = [start] + [t for t, _ in points if start < t < end] + [end]
    return sum((b - a) * (value(a) + value(b)) / 2 for a, b in zip(knots, knots[1:], strict=False))


class TegraStats:
    """``tegrastats --interval MS`` in a background thread, keeping every sample with the
    monotonic time it arrived. ``command`` replaces the program (tests run a script that prints
    lines). Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self, interval_ms: int = 100, command: Sequence[str] | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.interval_ms = interval_ms
        self.command = list(command) if command is not None else ["tegrastats", "--interval", str(interval_ms)]
        self.clock = clock
        self.samples: list[tuple[float, TegraSample]] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TegraStats:
        self._proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats(line)
            if sample is not None:
                with self._lock:
                    self.samples.append((self.clock(), sample))

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TegraStats:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for_samples(self, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` samples have arrived (or ``timeout`` s); whether they did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.snapshot()) >= n:
                return True
            time.sleep(0.01)
        return len(self.snapshot()) >= n

    def snapshot(self) -> list[tuple[float, TegraSample]]:
        with self._lock:
            return list(self.samples)

    def rails(self) -> list[str]:
        names: dict[str, None] = {}
        for _, s in self.snapshot():
            names.update(dict.fromkeys(s.rails))
        return list(names)

    def energy_j(self, windows: Sequence[tuple[float, float]]) -> dict[str, float]:
        """Energy per rail (J) over the windows (start, end) of the sampler's clock."""
        samples = self.snapshot()
        out = {}
        for rail in self.rails():
            points = [(t, s.rails[rail].current_mw) for t, s in samples if rail in s.rails]
            out[rail] = sum(integrate(points, a, b) for a, b in windows) / 1e3
        return out

    def average_power_mw(self, windows: Sequence[tuple[float, float]]) -> dict[str, float]:
        """Time-weighted average power per rail (mW) over the windows."""
        seconds = sum(max(0.0, b - a) for a, b in windows)
        if seconds <= 0:
            return {}
        return {rail: 1e3 * joules / seconds for rail, joules in self.energy_j(windows).items()}


# ---------------------------------------------------------------- the board


GIB = 1 << 30


def read_text(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def mem_total_bytes(meminfo: str) -> int | None:
    """``MemTotal`` of /proc/meminfo (what Linux sees: the DRAM less firmware carve-outs)."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def detect_board(model: str, memory_bytes: int | None) -> str | None:
    """``/proc/device-tree/model`` and the memory Linux sees -> a board name of ``jetmamba.boards``.

    Developer kits and modules name the family (``NVIDIA Jetson Orin Nano Developer Kit``,
    ``... Engineering Reference Developer Kit Super``, ``NVIDIA Jetson AGX Orin``, or a carrier's
    own name around ``Jetson AGX Orin``); the memory size tells the variants apart. The
    thresholds sit between what Linux reports for each size (about 0.6 GB under the DRAM)."""
    text = model.replace("\x00", " ").lower()
    if "thor" in text:
        return "thor"
    if "orin" not in text:
        return None
    gib = None if memory_bytes is None else memory_bytes / GIB
    if "agx" in text:
        return None if gib is None else ("agx-orin-32gb" if gib < 48 else "agx-orin-64gb")
    if " nx" in text or text.startswith("nx"):
        return None if gib is None else ("orin-nx-8gb" if gib < 12 else "orin-nx-16gb")
    if "nano" in text:
        return None if gib is None else ("orin-nano-4gb" if gib < 6 else "orin-nano-8gb")
    return None


def parse_l4t_release(text: str) -> str | None:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` (/etc/nv_tegra_release) -> ``36.4.3``."""
    m = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"


def dpkg_version(status: str, package: str) -> str | None:
    """A package's version from dpkg's status database (/var/lib/dpkg/status)."""
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.MULTILINE):
            m = re.search(r"^Version: (\S+)$", stanza, re.MULTILINE)
            return m.group(1) if m else None
    return None


# L4T release -> JetPack, from NVIDIA's JetPack archive (developer.nvidia.com/embedded/jetpack-archive);
# a release not listed falls back on the board files' JetPack table (major.minor).
L4T_JETPACK = {
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}


def jetpack_for_l4t(l4t: str | None) -> str | None:
    if l4t is None:
        return None
    if l4t in L4T_JETPACK:
        return L4T_JETPACK[l4t]
    from jetmamba.boards import list_boards

    major_minor = ".".join(l4t.split(".")[:2])
    for board in list_boards():
        for jp in board.jetpack:
            if jp.l4t == major_minor:
                return jp.version
    return None


@dataclass(frozen=True)
class PowerModeReading:
    name: str
    id: int | None


def parse_nvpmodel(text: str) -> PowerModeReading | None:
    """``nvpmodel -q``: ``NV Power Mode: 15W`` then the mode id on its own line (warnings such as
    ``NVPM WARN: ...`` may come first)."""
    m = re.search(r"NV Power Mode:\s*(\S+)\s*(\d+)?", text)
    if m is None:
        return None
    return PowerModeReading(m.group(1), int(m.group(2)) if m.group(2) else None)


def board_power_mode(board, reading: PowerModeReading | None):
    """The board file's power mode for an nvpmodel reading (by name, ``MODE_`` prefix ignored,
    then by an id the board file vouches for); None when the file does not tabulate it."""
    if reading is None:
        return None
    names = {reading.name.lower(), reading.name.lower().removeprefix("mode_")}
    for mode in board.power_modes:
        if mode.name.lower() in names:
            return mode
    for mode in board.power_modes:
        if reading.id is not None and mode.nvpmodel_id == reading.id:
            return mode
    return None


@dataclass(frozen=True)
class Clock:
    min_hz: int
    max_hz: int
    current_hz: int


@dataclass(frozen=True)
class ClockState:
    """``jetson_clocks --show``: per CPU core, the GPU and the memory (EMC) clocks."""

    cpus: dict[str, Clock]
    gpu: Clock | None
    emc: Clock | None
    power_mode: str | None

    @property
    def locked(self) -> bool:
        """What ``jetson_clocks`` does: every CPU and the GPU pinned (min = max), memory at its max."""
        cpus = bool(self.cpus) and all(c.min_hz == c.max_hz for c in self.cpus.values())
        gpu = self.gpu is not None and self.gpu.min_hz == self.gpu.max_hz
        emc = self.emc is None or self.emc.current_hz == self.emc.max_hz
        return cpus and gpu and emc


def _clock(text: str) -> Clock | None:
    m = re.search(r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", text)
    return Clock(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def parse_jetson_clocks(text: str) -> ClockState | None:
    """None when the output has no clock lines (e.g. ``Error: Run this script ... as a root user``)."""
    cpus, gpu, emc, mode = {}, None, None, None
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"(cpu\d+):", line):
            clock = _clock(line)
            if clock is not None:
                cpus[m.group(1)] = clock
        elif line.startswith("GPU "):
            gpu = _clock(line)
        elif line.startswith("EMC "):
            emc = _clock(line)
        elif m := re.match(r"NV Power Mode:\s*(\S+)", line):
            mode = m.group(1)
    if not cpus and gpu is None:
        return None
    return ClockState(cpus, gpu, emc, mode)


# ---------------------------------------------------------------- the probe


@dataclass(frozen=True)
class JetsonInfo:
    is_jetson: bool
    model: str | None  # /proc/device-tree/model
    board: str | None  # a jetmamba board name, when recognised
    memory_bytes: int | None
    l4t: str | None
    jetpack: str | None
    l4t_core_package: str | None  # the nvidia-l4t-core package's version
    power_mode: PowerModeReading | None
    clocks: ClockState | None  # None: unknown (jetson_clocks absent, or not run as root)
    notes: tuple[str, ...] = ()

    @property
    def clocks_locked(self) -> bool | None:
        return None if self.clocks is None else self.clocks.locked

    def to_dict(self) -> dict[str, Any]:
        return {
            "is_jetson": self.is_jetson,
            "model": self.model,
            "board": self.board,
            "memory_bytes": self.memory_bytes,
            "l4t": self.l4t,
            "jetpack": self.jetpack,
            "l4t_core_package": self.l4t_core_package,
            "power_mode": None if self.power_mode is None else asdict(self.power_mode),
            "clocks_locked": self.clocks_locked,
            "notes": list(self.notes),
        }


def probe_jetson(root: Path = Path("/"), run: Runner = run_command) -> JetsonInfo:
    """What this machine is, read from ``root`` and the probe commands ``run`` runs."""
    root = Path(root)
    model = read_text(root, "proc/device-tree/model")
    model = model.replace("\x00", "").strip() if model else None
    meminfo = read_text(root, "proc/meminfo")
    memory = mem_total_bytes(meminfo) if meminfo else None
    release = read_text(root, "etc/nv_tegra_release")
    l4t = parse_l4t_release(release) if release else None
    status = read_text(root, "var/lib/dpkg/status")
    core = dpkg_version(status, "nvidia-l4t-core") if status else None
    if l4t is None and core is not None:  # the package version starts with the L4T release
        m = re.match(r"(\d+\.\d+\.\d+)", core)
        l4t = m.group(1) if m else None
    is_jetson = l4t is not None or (model is not None and "jetson" in model.lower())
    if not is_jetson:
        return JetsonInfo(False, model, None, memory, None, None, None, None, None)
    notes = []
    board = detect_board(model or "", memory)
    if board is None:
        notes.append(f"board not recognised from model {model!r} and {memory} bytes of memory")
    mode = None
    out = run(["nvpmodel", "-q"])
    if out is not None:
        mode = parse_nvpmodel(out[1])
    if mode is None:
        notes.append("power mode unknown (nvpmodel -q gave no mode)")
    clocks = None
    out = run(["jetson_clocks", "--show"])
    if out is not None:
        clocks = parse_jetson_clocks(out[1])
    if clocks is None:
        notes.append("clock state unknown (jetson_clocks --show needs root: run with sudo)")
    return JetsonInfo(True, model, board, memory, l4t, jetpack_for_l4t(l4t), core, mode, clocks, tuple(notes))


__all__ = [
    "INPUT_RAILS",
    "ClockState",
    "JetsonInfo",
    "PowerModeReading",
    "Rail",
    "TegraSample",
    "TegraStats",
    "board_power_mode",
    "detect_board",
    "dpkg_version",
    "input_rail",
    "integrate",
    "jetpack_for_l4t",
    "mem_total_bytes",
    "parse_jetson_clocks",
    "parse_l4t_release",
    "parse_nvpmodel",
    "parse_tegrastats",
    "probe_jetson",
    "run_command",
]
