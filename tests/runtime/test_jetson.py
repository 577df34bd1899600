"""Jetson probes on real output: tegrastats lines of Orin Nano / NX / AGX Orin in JetPack 5, 6 and 7
styles, /proc/device-tree/model strings, nvpmodel and jetson_clocks output; the tegrastats sampler
on a fake tegrastats; energy integration by hand.

The real output (quoted exactly, with its sources) is in tests/support/jetson_outputs.py; the fake
filesystems' files follow the real files' formats.
"""

from __future__ import annotations

import textwrap

import pytest
from jetson_outputs import (
    AGX_ORIN_64,
    AGX_ORIN_DLA,
    AGX_ORIN_R36,
    CLOCKS_FREE,
    CLOCKS_LOCKED,
    NVPMODEL_25W,
    ORIN_NANO_JP6,
    ORIN_NANO_JP6_EMC,
    ORIN_NANO_JP7,
    ORIN_NANO_MEMINFO,
    ORIN_NX_JP5,
    ORIN_NX_JP6,
    XAVIER_NX,
    fake_jetson_root,
    fake_runner,
    fake_tegrastats,
)

from jetmamba.boards import load_board
from jetmamba.runtime.jetson import (
    PowerModeReading,
    Rail,
    TegraSample,
    TegraStats,
    board_power_mode,
    detect_board,
    dpkg_version,
    input_rail,
    integrate,
    jetpack_for_l4t,
    mem_total_bytes,
    parse_jetson_clocks,
    parse_l4t_release,
    parse_nvpmodel,
    parse_tegrastats,
    probe_jetson,
)


def test_orin_nano_jetpack6():
    s = parse_tegrastats(ORIN_NANO_JP6)
    assert s.timestamp == "01-04-2025 16:02:59"
    assert (s.ram_used_mb, s.ram_total_mb) == (1273, 7620)
    assert (s.swap_used_mb, s.swap_total_mb, s.swap_cached_mb) == (286, 3810, 1)
    assert s.cpu_load_percent == (0, 0, 1, 0, 0, 0) and s.cpu_mhz == (1036,) * 4 + (729,) * 2
    assert s.emc_percent is None and s.emc_mhz is None  # this release prints no EMC_FREQ
    assert s.gpu_percent == 0 and s.gpu_mhz is None
    assert s.temperatures_c == {"cpu": 45.875, "soc2": 45.843, "soc0": 44.843, "gpu": 45.437, "tj": 46.312,
                                "soc1": 46.312}  # fmt: skip
    assert s.rails == {"VDD_IN": Rail(4968, 4968), "VDD_CPU_GPU_CV": Rail(436, 436), "VDD_SOC": Rail(1708, 1708)}
    assert input_rail(s.rails) == "VDD_IN"


def test_orin_nano_jetpack6_with_emc_and_gpu_clock():
    s = parse_tegrastats(ORIN_NANO_JP6_EMC)
    assert (s.emc_percent, s.emc_mhz, s.gpu_percent, s.gpu_mhz) == (0, 204, 0, 305)
    assert s.rails["VDD_IN"] == Rail(2957, 2957) and set(s.rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert "nvdec" not in s.temperatures_c and s.temperatures_c["tj"] == 44.531


def test_orin_nano_jetpack7_extra_figures():
    s = parse_tegrastats(ORIN_NANO_JP7)
    assert s.swap_total_mb is None and s.ram_total_mb == 7486
    assert s.temperatures_c["cpu"] == 45.812 and len(s.temperatures_c) == 6
    assert s.rails == {"VDD_IN": Rail(3582, 3582), "VDD_CPU_GPU_CV": Rail(523, 523), "VDD_SOC": Rail(1127, 1127)}


def test_orin_nx_jetpack5_and_6():
    s5 = parse_tegrastats(ORIN_NX_JP5)
    assert s5.timestamp is None and s5.ram_total_mb == 15388
    assert s5.cpu_load_percent == (6, 9, 5, 16, None, None, None, None)  # four cores off
    assert s5.cpu_mhz[:4] == (729,) * 4 and s5.cpu_mhz[4:] == (None,) * 4
    assert (s5.emc_percent, s5.emc_mhz, s5.gpu_mhz) == (0, 2133, 611)
    assert s5.temperatures_c["cpu"] == 47.937 and s5.temperatures_c["cv2"] == 45.75  # upper-case names folded
    assert s5.rails["VDD_CPU_GPU_CV"] == Rail(773, 773)
    s6 = parse_tegrastats(ORIN_NX_JP6)
    assert s6.cpu_load_percent == (80, 80, 100, 76, 87, 67, 70, 76) and s6.cpu_mhz[4] == 1574
    assert s6.gpu_percent == 50 and s6.temperatures_c["cv1"] == 54
    assert s6.rails["VDD_IN"] == Rail(10187, 8251)  # the reading and tegrastats' running average


def test_agx_orin_rails_and_formats():
    s = parse_tegrastats(AGX_ORIN_R36)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (29114, 30697, 4915)
    assert len(s.cpu_load_percent) == 12 and s.cpu_load_percent[5] == 100 and s.cpu_mhz[4] == 2201
    assert s.gpu_mhz == 305  # the first of the two GPCs
    assert s.rails == {"VDD_GPU_SOC": Rail(3205, 3205), "VDD_CPU_CV": Rail(4405, 4405), "VIN_SYS_5V0": Rail(4767, 4767)}
    assert input_rail(s.rails) == "VIN_SYS_5V0"  # AGX Orin has no VDD_IN
    s64 = parse_tegrastats(AGX_ORIN_64)
    assert s64.temperatures_c["cpu"] == 42.0 and s64.gpu_percent == 0 and s64.rails["VDD_GPU_SOC"].current_mw == 4940
    dla = parse_tegrastats(AGX_ORIN_DLA)
    assert dla.timestamp == "11-21-2025 08:49:48" and dla.gpu_percent == 14 and dla.gpu_mhz == 407
    assert dla.rails["VDDQ_VDD2_1V8AO"] == Rail(1091, 1091) and dla.rails["VDD_CPU_CV"] == Rail(14312, 12415)
    assert dla.temperatures_c["tboard"] == 62 and dla.temperatures_c["cv0"] == 73.625
    assert "nvdla0_freq" not in dla.temperatures_c and "NVDLA0_FREQ" not in dla.rails  # unknown fields skipped


def test_rails_without_a_unit_are_milliwatts():
    s = parse_tegrastats(XAVIER_NX)
    assert s.rails == {"VDD_IN": Rail(4067, 4067), "VDD_CPU_GPU_CV": Rail(738, 738), "VDD_SOC": Rail(1353, 1353)}
    assert s.temperatures_c["thermal"] == 42.55 and s.gpu_mhz == 306


def test_offline_sensor_is_dropped():
    line = ORIN_NX_JP5.replace("CV2@45.75C", "CV2@-256C")  # what a powered-down sensor prints
    assert "cv2" not in parse_tegrastats(line).temperatures_c


@pytest.mark.parametrize("text", ["", "hello", "RAM usage is high", "NV Power Mode: 15W", "VDD_IN 4968mW/4968mW",
                                  "Error: Run this script(/usr/bin/jetson_clocks) as a root user"])  # fmt: skip
def test_not_a_tegrastats_line(text):
    assert parse_tegrastats(text) is None


def test_sample_is_json_ready():
    import json

    d = parse_tegrastats(AGX_ORIN_DLA).to_dict()
    assert json.loads(json.dumps(d))["rails"]["VIN_SYS_5V0"] == {"current_mw": 4968.0, "average_mw": 5048.0}


# ---------------------------------------------------------------- board, L4T, nvpmodel, jetson_clocks

GIB = 1 << 30


@pytest.mark.parametrize(
    "model,memory,board",
    [
        ("NVIDIA Jetson Orin Nano Developer Kit", 7802736 * 1024, "orin-nano-8gb"),
        ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", 7802736 * 1024, "orin-nano-8gb"),
        ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", int(3.4 * GIB), "orin-nano-4gb"),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15656 << 20, "orin-nx-16gb"),
        ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 7620 << 20, "orin-nx-8gb"),
        ("NVIDIA Jetson AGX Orin Developer Kit", 30697 << 20, "agx-orin-32gb"),
        ("NVIDIA Jetson AGX Orin Developer Kit", 62840 << 20, "agx-orin-64gb"),
        ("NVIDIA Jetson AGX Orin", 62780 << 20, "agx-orin-64gb"),  # the module's own device tree
        ("Jetson AGX Orin for DSBOARD-AGX", 30697 << 20, "agx-orin-32gb"),  # a carrier board's name
        ("Lanner EAI-I233 Jetson AGX Orin", 62840 << 20, "agx-orin-64gb"),
        ("NVIDIA Jetson AGX Thor Developer Kit", 125770 << 20, "thor"),
        ("NVIDIA Jetson Orin Nano Developer Kit\x00", 7802736 * 1024, "orin-nano-8gb"),  # as the file ends
        ("NVIDIA Jetson Xavier NX Developer Kit", 7772 << 20, None),  # not a board jetmamba targets
        ("NVIDIA Jetson Nano Developer Kit", 3964 << 20, None),
        ("NVIDIA Jetson Orin Nano Developer Kit", None, None),  # the size tells 4GB from 8GB
    ],
)
def test_detect_board(model, memory, board):
    assert detect_board(model, memory) == board


def test_meminfo_and_l4t_release():
    assert mem_total_bytes(ORIN_NANO_MEMINFO) == 7802736 * 1024
    assert mem_total_bytes("nothing") is None
    r36 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64"  # the file's format
    assert parse_l4t_release(r36) == "36.4.3"
    # an AGX Orin's /etc/nv_tegra_release as an environment log quotes it (code index id 58103012036)
    r39 = (
        "# R39 (release), REVISION: 2.0, GCID: 45755727, BOARD: generic, EABI: aarch64, DATE: Mon Jun  1 09:28:48 PM "
        "UTC 2026"
    )
    assert parse_l4t_release(r39) == "39.2.0"
    assert parse_l4t_release("Ubuntu 22.04") is None
    assert jetpack_for_l4t("36.4.3") == "6.2" and jetpack_for_l4t("35.4.1") == "5.1.2"
    assert jetpack_for_l4t("36.4.7") == "6.2"  # not tabulated: the board files' L4T 36.4 row
    assert jetpack_for_l4t("39.2.0") is None and jetpack_for_l4t(None) is None


def test_dpkg_status():
    status = textwrap.dedent("""\
        Package: nvidia-l4t-camera
        Status: install ok installed
        Version: 36.4.3-20250107174145

        Package: nvidia-l4t-core
        Status: install ok installed
        Architecture: arm64
        Version: 36.4.3-20250107174145
        """)
    assert dpkg_version(status, "nvidia-l4t-core") == "36.4.3-20250107174145"
    assert dpkg_version(status, "nvidia-l4t-kernel") is None


def test_nvpmodel_output_maps_to_the_board_file():
    # `nvpmodel --query` on an Orin Nano 8GB (the nvpmodel snap's README, code index id 36180705146)
    reading = parse_nvpmodel("NV Power Mode: 15W\n0\n")
    assert reading == PowerModeReading("15W", 0)
    nano = load_board("orin-nano-8gb")
    assert board_power_mode(nano, reading).name == "15W"
    assert board_power_mode(nano, PowerModeReading("MAXN_SUPER", 2)).name == "MAXN_SUPER"
    assert board_power_mode(nano, PowerModeReading("something", 1)).name == "25W"  # by an id the file vouches for
    agx = load_board("agx-orin-64gb")
    assert board_power_mode(agx, PowerModeReading("MODE_30W", 2)) is None  # not tabulated: no guess
    assert board_power_mode(agx, PowerModeReading("MAXN", 0)).name == "MAXN"
    assert parse_nvpmodel("NVPM WARN: patching tpc_pg_mask\nNV Power Mode: MAXN_SUPER\n2\n") == PowerModeReading(
        "MAXN_SUPER", 2
    )
    assert parse_nvpmodel("NV Power Mode: MAXN 0 ") == PowerModeReading("MAXN", 0)  # a log that joined the lines
    assert parse_nvpmodel("bash: nvpmodel: command not found") is None


def test_jetson_clocks_locked_and_free():
    locked = parse_jetson_clocks(CLOCKS_LOCKED)
    assert locked.locked and set(locked.cpus) == {"cpu0", "cpu1"} and locked.power_mode == "MAXN_SUPER"
    assert locked.gpu.max_hz == 1020000000 and locked.emc.current_hz == 3199000000
    free = parse_jetson_clocks(CLOCKS_FREE)
    assert not free.locked and len(free.cpus) == 6 and free.cpus["cpu5"].current_hz == 1267200
    assert free.gpu.min_hz == 306000000 and free.power_mode is None
    assert parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user\n") is None


def test_probe_on_a_fake_jetson(tmp_path):
    root = fake_jetson_root(tmp_path)
    run = fake_runner({"nvpmodel": (0, NVPMODEL_25W), "jetson_clocks": (0, CLOCKS_FREE)})
    info = probe_jetson(root, run)
    assert info.is_jetson and info.board == "orin-nano-8gb" and info.memory_bytes == 7802736 * 1024
    assert (info.l4t, info.jetpack, info.l4t_core_package) == ("36.4.3", "6.2", "36.4.3-20250107174145")
    assert info.power_mode == PowerModeReading("25W", 1) and info.clocks_locked is False
    assert ["nvpmodel", "-q"] in run.calls and ["jetson_clocks", "--show"] in run.calls
    assert info.to_dict()["clocks_locked"] is False


def test_probe_without_root_rights_or_tools(tmp_path):
    root = fake_jetson_root(tmp_path)
    run = fake_runner({"jetson_clocks": (1, "Error: Run this script(/usr/bin/jetson_clocks) as a root user\n")})
    info = probe_jetson(root, run)
    assert info.is_jetson and info.power_mode is None and info.clocks is None and info.clocks_locked is None
    assert any("sudo" in n for n in info.notes)


def test_probe_on_a_workstation(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       32000000 kB\n")
    run = fake_runner({})
    info = probe_jetson(tmp_path, run)
    assert not info.is_jetson and info.board is None and info.memory_bytes == 32000000 * 1024
    assert run.calls == []  # no Jetson tools are run on a machine that is not one


# ---------------------------------------------------------------- energy and the sampler


def test_integration_by_hand():
    points = [(0.0, 1000.0), (1.0, 3000.0), (2.0, 3000.0)]  # mW at t s
    # 0..1: trapezoid (1000 + 3000) / 2 = 2000 mJ; 1..2: 3000 mJ
    assert integrate(points, 0, 2) == pytest.approx(5000)
    # 0.5..1.5: the value at 0.5 is 2000 mW: (2000 + 3000) / 2 x 0.5 + 3000 x 0.5
    assert integrate(points, 0.5, 1.5) == pytest.approx(2750)
    # beyond the samples the nearest value holds
    assert integrate(points, -1, 0) == pytest.approx(1000) and integrate(points, 2, 4) == pytest.approx(6000)
    assert integrate(points, 1, 1) == 0 and integrate([], 0, 1) == 0


def _sample(**rails_mw) -> TegraSample:
    return TegraSample(None, 1, 2, rails={k: Rail(v, v) for k, v in rails_mw.items()})


def test_sampler_energy_and_average_power():
    ts = TegraStats(command=["unused"])
    ts.samples = [(10.0, _sample(VDD_IN=4000, VDD_SOC=1000)), (11.0, _sample(VDD_IN=6000, VDD_SOC=1000)),
                  (12.0, _sample(VDD_IN=6000, VDD_SOC=1000))]  # fmt: skip
    energy = ts.energy_j([(10.0, 12.0)])
    assert energy == pytest.approx({"VDD_IN": 11.0, "VDD_SOC": 2.0})  # (4+6)/2 x 1 + 6 x 1 = 11 J
    two = ts.energy_j([(10.0, 11.0), (11.0, 12.0)])  # windows add up
    assert two == pytest.approx(energy)
    assert ts.average_power_mw([(10.0, 12.0)]) == pytest.approx({"VDD_IN": 5500.0, "VDD_SOC": 1000.0})
    assert ts.average_power_mw([]) == {}


def test_sampler_runs_a_fake_tegrastats(tmp_path):
    command = fake_tegrastats(tmp_path, [ORIN_NANO_JP6, ORIN_NANO_JP6_EMC])
    with TegraStats(interval_ms=20, command=command) as ts:
        assert ts.wait_for_samples(4)
        proc = ts._proc
    assert proc.poll() is not None  # stopped with the context
    samples = ts.snapshot()
    assert len(samples) >= 4 and all(t1 >= t0 for (t0, _), (t1, _) in zip(samples, samples[1:], strict=False))
    assert {s.rails["VDD_IN"].current_mw for _, s in samples} == {4968, 2957}
    assert ts.rails() == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    start, end = samples[0][0], samples[-1][0]
    power = ts.average_power_mw([(start, end)])["VDD_IN"]
    assert 2957 <= power <= 4968
