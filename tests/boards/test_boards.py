"""Board data files: every one loads and follows the schema, the figures agree with METHODS.md and
with each other, compile's board -> arch map is unchanged, and a broken file is a one-line error."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from jetmamba.boards import (
    BOARD_ARCH,
    BoardFileError,
    board_arch,
    board_from_dict,
    board_names,
    list_boards,
    load_board,
    read_board_file,
)
from jetmamba.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]

# what `jetmamba compile` had before the board files existed: it must not change
ARCH_BEFORE_THE_FILES = {
    "orin-nano-4gb": "sm_87",
    "orin-nano-8gb": "sm_87",
    "orin-nx-8gb": "sm_87",
    "orin-nx-16gb": "sm_87",
    "agx-orin-32gb": "sm_87",
    "agx-orin-64gb": "sm_87",
    "thor": "sm_110",
}


def test_every_board_file_loads_and_validates():
    boards = list_boards()
    assert [b.name for b in boards] == list(ARCH_BEFORE_THE_FILES)  # one file per board, smallest memory first
    for b in boards:
        assert b.power_mode().name == b.default_power_mode
        assert b.sources and b.notes and b.jetpack
        assert 0 < b.usable_bytes(headless=False) < b.usable_bytes(headless=True) < b.memory_bytes


def test_board_arch_is_unchanged_for_compile():
    assert BOARD_ARCH == ARCH_BEFORE_THE_FILES
    assert list(BOARD_ARCH) == list(ARCH_BEFORE_THE_FILES)  # the order compile's --help lists them in
    assert board_arch("orin-nano-8gb") == "sm_87" and board_arch("thor") == "sm_110"
    with pytest.raises(UsageError, match="unknown board 'orin-nano-2gb'; choose from orin-nano-4gb"):
        board_arch("orin-nano-2gb")
    with pytest.raises(UsageError, match="unknown board"):
        load_board("xavier-nx")


def test_figures_match_methods():
    """The figures METHODS.md ('TensorRT and Jetson facts') gives."""
    nano8 = load_board("orin-nano-8gb")
    assert (nano8.sms, nano8.cuda_cores, nano8.tensor_cores) == (8, 1024, 32)
    base, super_ = nano8.power_mode("15W"), nano8.power_mode("MAXN_SUPER")
    assert base.memory_bandwidth_gbs == 68 and super_.memory_bandwidth_gbs == 102 and super_.gpu_max_mhz == 1020
    assert base.int8_tops_dense == pytest.approx(20, rel=0.03) and super_.int8_tops_dense == pytest.approx(33, rel=0.03)
    assert super_.requires_jetpack == "6.2"
    nano4 = load_board("orin-nano-4gb")
    assert [m.memory_bandwidth_gbs for m in nano4.power_modes] == [34, 51]
    assert load_board("orin-nx-16gb").power_mode().memory_bandwidth_gbs == 102.4
    agx = load_board("agx-orin-64gb")
    assert agx.sms == 16 and agx.power_mode().memory_bandwidth_gbs == 204.8
    assert load_board("orin-nano-8gb").power_mode().nvpmodel_id == 2


def test_ampere_peaks_follow_cores_and_clock():
    """Orin's dense peaks are derived (board notes): tensor cores x 1024 INT8 ops (512 FP16 FLOPs) per
    clock; the CUDA-core FP32 peak reproduces the AGX Orin 64GB data sheet's 5.3 TFLOPS."""
    for b in list_boards():
        if b.gpu_arch != "sm_87":
            continue
        assert b.cuda_cores == 128 * b.sms == 32 * b.tensor_cores
        for m in b.power_modes:
            assert m.int8_tops_dense == pytest.approx(b.tensor_cores * 1024 * m.gpu_max_mhz / 1e6, rel=0.01)
            assert m.fp16_tflops_dense == pytest.approx(m.int8_tops_dense / 2, rel=0.01)
    agx = load_board("agx-orin-64gb")
    assert agx.fp32_flops_per_s(agx.power_mode()) == pytest.approx(5.3e12, rel=0.01)


def test_jetpack_versions():
    for b in list_boards():
        releases = {j.version: j for j in b.jetpack}
        assert (releases["7.2"].tensorrt, releases["7.2"].cuda) == ("10.16", "13.2")
        if b.gpu_arch == "sm_87":
            assert (releases["6.2"].tensorrt, releases["6.2"].cuda) == ("10.3", "12.6")
        else:  # Thor is sm_110, which needs CUDA 13: JetPack 7
            assert all(v.startswith("7.") for v in releases)


def test_power_mode_lookup():
    b = load_board("orin-nano-8gb")
    assert b.power_mode("maxn_super") is b.power_mode("2") is b.power_mode()
    assert b.power_mode("15w").nvpmodel_id == 0
    with pytest.raises(UsageError, match="no power mode '99W'; choose from 15W, 25W, MAXN_SUPER"):
        b.power_mode("99W")


def _raw(name="orin-nano-8gb") -> dict:
    return json.loads((ROOT / "boards" / f"{name}.json").read_text())


def _mutate(raw: dict, how: str) -> dict:
    raw = copy.deepcopy(raw)
    if how == "missing_bandwidth":
        del raw["power_modes"][0]["memory_bandwidth_gbs"]
    elif how == "string_sms":
        raw["sms"] = "8"
    elif how == "bool_cores":
        raw["cuda_cores"] = True
    elif how == "unknown_field":
        raw["dla_count"] = 0
    elif how == "bad_arch":
        raw["gpu_arch"] = "ampere"
    elif how == "default_not_a_mode":
        raw["default_power_mode"] = "MAXN"
    elif how == "negative_bandwidth":
        raw["power_modes"][1]["memory_bandwidth_gbs"] = -1
    elif how == "no_sources":
        raw["sources"] = []
    elif how == "bad_version":
        raw["jetpack"][0]["tensorrt"] = "ten"
    elif how == "repeated_mode":
        raw["power_modes"].append(dict(raw["power_modes"][0], nvpmodel_id=7))
    return raw


@pytest.mark.parametrize("how,expect", [
    ("missing_bandwidth", "power_modes[0]: missing field 'memory_bandwidth_gbs'"),
    ("string_sms", "field 'sms' must be int, got '8'"),
    ("bool_cores", "field 'cuda_cores' must be int, got True"),
    ("unknown_field", "unknown fields ['dla_count']"),
    ("bad_arch", "must be a CUDA architecture such as sm_87, got 'ampere'"),
    ("default_not_a_mode", "default_power_mode 'MAXN' is not one of its power modes"),
    ("negative_bandwidth", "power_modes[1]: field 'memory_bandwidth_gbs' must be positive"),
    ("no_sources", "field 'sources' must be a non-empty list"),
    ("bad_version", "jetpack[0]: field 'tensorrt' must be a version"),
    ("repeated_mode", "power mode names repeat"),
])  # fmt: skip
def test_a_broken_file_is_a_clear_one_line_error(tmp_path, how, expect):
    path = tmp_path / "orin-nano-8gb.json"
    path.write_text(json.dumps(_mutate(_raw(), how)))
    with pytest.raises(BoardFileError) as info:
        read_board_file(path)
    message = str(info.value)
    assert expect in message and str(path) in message and "\n" not in message


def test_broken_json_and_misnamed_files(tmp_path):
    bad = tmp_path / "thor.json"
    bad.write_text('{"name": "thor",')
    with pytest.raises(BoardFileError, match=r"thor.json: not valid JSON"):
        read_board_file(bad)
    misnamed = tmp_path / "orin-nano-9gb.json"
    misnamed.write_text(json.dumps(_raw()))
    with pytest.raises(BoardFileError, match="name 'orin-nano-8gb' does not match the file name 'orin-nano-9gb'"):
        read_board_file(misnamed)
    with pytest.raises(BoardFileError, match="cannot read"):
        read_board_file(tmp_path / "absent.json")


def test_round_trip_through_the_schema():
    for name in board_names():
        b = load_board(name)
        assert board_from_dict(b.to_dict(), name) == b


def test_board_files_are_package_data():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 (JetPack 6)
        tomllib = pytest.importorskip("tomli")
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.json" in table["jetmamba.boards"]
