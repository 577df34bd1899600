"""The TensorRT plugin library (plugins/common/trt_*, plugins/<op>/<op>_plugin.cpp), without TensorRT.

The library is built with the host compiler against TensorRT's public headers (10.3 and 10.16) and
the CUDA emulator, and driven by tests/plugins/trt_driver.cpp, which plays TensorRT's part: it
dlopen()s the library, calls getCreators / setLoggerFinder and goes through the IPluginV3
interfaces only (its own IExprBuilder, logger and resource context). The interface tests use a
library without the kernels (their launchers are weak references), so they do not depend on the
kernels' state; the enqueue tests link the kernels and compare with the op references.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import hashlib
import inspect
import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from jetmamba import native
from jetmamba.compiler.ops import OPSET
from jetmamba.plugins import emulation, gen_trt_ops
from jetmamba.plugins.gen_trt_ops import folder_of, parse_dim, parse_shape

pytestmark = pytest.mark.skipif(emulation.find_compiler() is None, reason="no C++ compiler (g++ / $CXX)")

PLUGINS = emulation.PLUGINS_DIR
DRIVER = Path(__file__).resolve().parent / "trt_driver.cpp"
VERSIONS = ("10.3", "10.16")

# TensorRT's numbers: DataType, TensorFormat, PluginFieldType, TensorRTPhase
F32, F16, I8, I32, U8 = 0, 1, 2, 3, 5
LINEAR, CHW32 = 0, 3
K_FLOAT32, K_FLOAT64, K_INT32, K_INT64, K_CHAR = 1, 2, 5, 10, 6
BUILD, RUNTIME = 0, 1
NP_DTYPES = {F32: np.float32, F16: np.float16, I8: np.int8, U8: np.uint8}
TORCH_DTYPES = {F32: torch.float32, F16: torch.float16, I8: torch.int8, U8: torch.uint8}
SPEC_DTYPES = {"float32": F32, "float16": F16, "int8": I8, "uint8": U8}

# The symbols of the spec's shapes, for concrete cases (sizes the kernels take: n = 16 is a Hadamard
# order and a d_state, P = 16 an SSD head_dim).
DIMS = {"b": 2, "l": 5, "d": 32, "c": 24, "k": 4, "n": 16, "H": 4, "P": 16, "G": 2, "N": 16}
# The int4 GEMMs' G is their group_size field (K = 64: two groups of 32).
OP_DIMS = {op: {**DIMS, "K": 64, "G": 32} for op in ("W4A16Linear", "W4A8Linear")}
# A valid set of attributes per op, sized for DIMS.
VALID = {
    "RMSNormQuant": {"eps": 1e-5, "out_scale": 0.03},
    "CausalConv1d": {"x_scale": [0.05], "w_scale": [0.01 + 0.001 * i for i in range(24)], "out_scale": [0.04]},
    "SelectiveScan": {"u_scale": 0.02, "dt_scale": 0.03, "B_scale": 0.04, "C_scale": 0.05, "z_scale": 0.06},
    "SelectiveScanInt8State": {"u_scale": 0.02, "dt_scale": 0.03, "B_scale": 0.04, "C_scale": 0.05, "z_scale": 0.06},
    "SSDScan": {
        "heads": 4,
        "x_scale": [0.02 + 0.0005 * i for i in range(64)],  # per channel (H*P)
        "B_scale": [0.03, 0.04],
        "C_scale": [0.05],
        "dt_min": 0.001,
        "dt_max": 0.1,
    },
    "GatedRMSNormQuant": {"z_scale": 0.05, "eps": 1e-5, "group_size": 8, "out_scale": 0.03, "hadamard": 0},
    "HadamardQuant": {"out_scale": 0.05},
    "RMSNorm": {"eps": 1e-6},
    "CausalConv1dFp": {},
    "SelectiveScanFp": {},
    "SSDScanFp": {"heads": 4},
    "GatedRMSNorm": {"eps": 1e-5, "group_size": 8},
    "W4A16Linear": {"group_size": 32},
    "W4A8Linear": {"x_scale": 0.02, "group_size": 32},
}


def test_every_op_has_a_test_case():
    assert set(VALID) == set(OPSET)


# ---------------------------------------------------------------- building


def _trt_include(version: str) -> Path:
    from shared import shared_path

    return shared_path("third_party", "tensorrt", version, "include")


def _glue_sources() -> list[Path]:
    common = [
        PLUGINS / "common" / "trt_core.cpp",
        PLUGINS / "common" / "trt_plugin.cpp",
        PLUGINS / "plugin_library.cpp",
    ]
    return common + [PLUGINS / folder_of(op) / f"{folder_of(op)}_plugin.cpp" for op in OPSET]


def _kernel_sources() -> list[Path]:
    return sorted(p for p in PLUGINS.glob("*/*.cu") if p.parent.name != "common")


def _build_parallel(jobs: dict) -> dict[str, Path]:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two compilers at a time
        futures = {k: pool.submit(f) for k, f in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


@functools.cache
def built(version: str) -> dict[str, Path]:
    """The library without kernels (glue only: the interface tests) and its driver; each build is
    cached by its sources' content (plugins/emulation.py)."""
    inc = [_trt_include(version)]
    return _build_parallel({
        "glue": lambda: emulation.build(_glue_sources(), name=f"jetmamba_plugins-trt{version}", include_dirs=inc),
        "driver": lambda: emulation.build([DRIVER], name=f"trt_driver-{version}", include_dirs=inc),
    })  # fmt: skip


@functools.cache
def built_with_kernels(version: str = "10.16") -> dict[str, Path]:
    """The library with every kernel there is, and a driver of its own (a driver holds one library)."""
    inc = [_trt_include(version)]
    sources = [*_glue_sources(), *_kernel_sources()]
    return _build_parallel({
        "library": lambda: emulation.build(sources, name=f"jetmamba_plugins_kernels-trt{version}", include_dirs=inc),
        "driver": lambda: emulation.build([DRIVER], name=f"trt_driver_kernels-{version}", include_dirs=inc),
    })  # fmt: skip


# ---------------------------------------------------------------- the driver


def _c_array(ctype, values):
    values = list(values)
    return (ctype * max(len(values), 1))(*values)


class Plugin:
    """An IPluginV3 in the plugin library, driven through the driver."""

    def __init__(self, drv: Driver, handle: int, op: str):
        self.drv, self.handle, self.op = drv, handle, op

    def _call(self, name, *args):
        return getattr(self.drv.lib, name)(ctypes.c_void_p(self.handle), *args)

    def info(self) -> dict:
        return json.loads(self._call("drv_info"))

    def serialized(self) -> list[dict]:
        return json.loads(self._call("drv_serialize"))

    def _wrap(self, handle) -> Plugin | None:
        return Plugin(self.drv, handle, self.op) if handle else None

    def clone(self) -> Plugin | None:
        return self._wrap(self._call("drv_clone"))

    def attach(self) -> Plugin | None:
        return self._wrap(self._call("drv_attach"))

    def recreate(self) -> Plugin | None:
        return self._wrap(self._call("drv_recreate", self.op.encode()))

    def destroy(self) -> None:
        self._call("drv_destroy")
        self.handle = None

    def output_shapes(self, dims: list[list]) -> dict:
        texts = [str(x).encode() for shape in dims for x in shape]
        ranks = _c_array(ctypes.c_int32, [len(s) for s in dims])
        names = _c_array(ctypes.c_char_p, texts)
        return json.loads(self._call("drv_output_shapes", len(dims), ranks, names, len(OPSET[self.op].outputs)))

    def output_types(self, types: list[int], nb_outputs: int | None = None) -> dict:
        n = len(OPSET[self.op].outputs) if nb_outputs is None else nb_outputs
        return json.loads(self._call("drv_output_types", len(types), _c_array(ctypes.c_int32, types), n))

    def supports(self, pos: int, types: list[int], nb_inputs: int, formats: list[int] | None = None) -> bool:
        """supportsFormatCombination(pos) with `types` for tensors 0..pos at least (TensorRT leaves
        the later ones undefined: they are padded with int32 here, which no plugin may look at)."""
        nb_outputs = len(OPSET[self.op].outputs)
        types = list(types) + [I32] * (nb_inputs + nb_outputs - len(types))
        formats = (formats or []) + [LINEAR] * (len(types) - len(formats or []))
        return bool(self._call("drv_supports", pos, nb_inputs, nb_outputs, _c_array(ctypes.c_int32, types),
                               _c_array(ctypes.c_int32, formats)))  # fmt: skip

    @staticmethod
    def _tensors(types, shapes):
        dims = [0] * (8 * max(len(shapes), 1))
        for i, s in enumerate(shapes):
            dims[8 * i : 8 * i + len(s)] = list(s)
        return (len(types), _c_array(ctypes.c_int32, types), _c_array(ctypes.c_int32, [len(s) for s in shapes]),
                _c_array(ctypes.c_int64, dims))  # fmt: skip

    def configure(self, in_types, in_shapes, out_types, out_shapes) -> int:
        return self._call("drv_configure", *self._tensors(in_types, in_shapes), *self._tensors(out_types, out_shapes))

    def workspace(self, in_types, in_shapes, out_types, out_shapes) -> int:
        return self._call("drv_workspace", *self._tensors(in_types, in_shapes), *self._tensors(out_types, out_shapes))

    def shape_change(self, in_types, in_shapes, out_types, out_shapes) -> int:
        return self._call("drv_shape_change", *self._tensors(in_types, in_shapes),
                          *self._tensors(out_types, out_shapes))  # fmt: skip

    def enqueue(self, inputs: list[np.ndarray], outputs: list[np.ndarray]) -> int:
        """enqueue with a workspace of getWorkspaceSize's bytes for these shapes (TensorRT's contract)."""
        code = {np.dtype(v): k for k, v in NP_DTYPES.items()}
        in_types, out_types = [code[a.dtype] for a in inputs], [code[a.dtype] for a in outputs]
        n_in, t_in, r_in, d_in = self._tensors(in_types, [a.shape for a in inputs])
        n_out, t_out, r_out, d_out = self._tensors(out_types, [a.shape for a in outputs])
        p_in = _c_array(ctypes.c_void_p, [a.ctypes.data for a in inputs])
        p_out = _c_array(ctypes.c_void_p, [a.ctypes.data for a in outputs])
        size = self.workspace(in_types, [a.shape for a in inputs], out_types, [a.shape for a in outputs])
        self._workspace = np.zeros(max(size, 0), np.uint8) if size > 0 else None  # alive until the next call
        # a pointer, not a Python int (ctypes would pass a C int: the address truncated)
        ws = None if self._workspace is None else ctypes.c_void_p(self._workspace.ctypes.data)
        return self._call("drv_enqueue", n_in, t_in, r_in, d_in, p_in, n_out, t_out, r_out, d_out, p_out, ws)


class Driver:
    """tests/plugins/trt_driver.cpp, loaded with ctypes, with one plugin library opened."""

    def __init__(self, driver_path: Path, library_path: Path):
        self.lib = lib = ctypes.CDLL(str(driver_path))
        text = ctypes.c_char_p
        for name in ("drv_error", "drv_library_error", "drv_log", "drv_creators"):
            getattr(lib, name).restype = text
        for name in ("drv_info", "drv_serialize", "drv_output_shapes", "drv_output_types"):
            getattr(lib, name).restype = text
        for name in ("drv_create", "drv_clone", "drv_attach", "drv_recreate"):
            getattr(lib, name).restype = ctypes.c_void_p
        lib.drv_workspace.restype = ctypes.c_int64
        lib.drv_open.argtypes = [text]
        if lib.drv_open(str(library_path).encode()) != 0:
            raise RuntimeError(f"drv_open({library_path}): {lib.drv_error().decode()}")
        self.path = library_path

    def creators(self) -> list[dict]:
        return json.loads(self.lib.drv_creators())

    def log(self) -> list[str]:
        return json.loads(self.lib.drv_log())

    def clear_log(self) -> None:
        self.lib.drv_clear_log()

    def last_error(self) -> str:
        return self.lib.drv_library_error().decode()

    def create_raw(self, op: str, fields: list[tuple[str, int, object]], phase: int = BUILD,
                   layer: str = "layer") -> Plugin | None:  # fmt: skip
        """createPlugin with raw fields (name, PluginFieldType, values)."""
        keep, names, types, data, lengths = [], [], [], [], []
        for name, kind, values in fields:
            dtype = {K_FLOAT32: np.float32, K_FLOAT64: np.float64, K_INT32: np.int32, K_INT64: np.int64,
                     K_CHAR: np.uint8}[kind]  # fmt: skip
            arr = np.ascontiguousarray(np.asarray(values, dtype=dtype).reshape(-1))
            keep.append(arr)
            names.append(name.encode())
            types.append(kind)
            data.append(arr.ctypes.data if arr.size else None)
            lengths.append(arr.size)
        handle = self.lib.drv_create(op.encode(), layer.encode(), len(fields), _c_array(ctypes.c_char_p, names),
                                     _c_array(ctypes.c_int32, types), _c_array(ctypes.c_void_p, data),
                                     _c_array(ctypes.c_int32, lengths), phase)  # fmt: skip
        return Plugin(self, handle, op) if handle else None

    def create(self, op: str, attrs: dict | None = None, **kwargs) -> Plugin | None:
        return self.create_raw(op, encode_fields(op, VALID[op] if attrs is None else attrs), **kwargs)


def encode_fields(op: str, attrs: dict) -> list[tuple[str, int, object]]:
    """The fields TensorRT's ONNX parser makes of a node's attributes (float/floats -> kFLOAT32, int -> kINT32)."""
    kinds = {a.name: a.kind for a in OPSET[op].attributes}
    return [(k, K_INT32 if kinds.get(k) == "int" else K_FLOAT32, v) for k, v in attrs.items()]


@pytest.fixture(scope="module", params=VERSIONS)
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def drv(version) -> Driver:
    paths = built(version)
    return Driver(paths["driver"], paths["glue"])


@pytest.fixture(scope="module")
def kernels_drv() -> Driver:
    paths = built_with_kernels()
    return Driver(paths["driver"], paths["library"])


# ---------------------------------------------------------------- shapes of the spec


def _eval_dim(text: str, values: dict[str, int]) -> int:
    node = parse_dim(text)

    def ev(n):
        if isinstance(n, gen_trt_ops.Num):
            return n.value
        if isinstance(n, gen_trt_ops.Sym):
            return values[n.name]
        a, b = ev(n.lhs), ev(n.rhs)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[n.op]

    return ev(node)


def spec_shape(shape: str, values: dict[str, int] = DIMS) -> list[int]:
    ellipsis, dims = parse_shape(shape)
    lead = [values["b"], values["l"]] if ellipsis else []
    return lead + [_eval_dim(d, values) for d in dims]


def input_shapes(op: str, with_optional: bool = True, values: dict[str, int] | None = None) -> list[list[int]]:
    values = values or OP_DIMS.get(op, DIMS)
    return [spec_shape(t.shape, values) for t in OPSET[op].inputs if with_optional or not t.optional]


def output_shapes(op: str, values: dict[str, int] | None = None) -> list[list[int]]:
    values = values or OP_DIMS.get(op, DIMS)
    return [spec_shape(t.shape, values) for t in OPSET[op].outputs]


def first_types(op: str, with_optional: bool = True, prefer=F16) -> tuple[list[int], list[int]]:
    """A dtype per input (the preferred float type where allowed) and the outputs' dtypes."""

    def pick(t):
        codes = [SPEC_DTYPES[x] for x in t.dtypes]
        return prefer if prefer in codes else codes[0]

    ins = [pick(t) for t in OPSET[op].inputs if with_optional or not t.optional]
    return ins, [pick(t) for t in OPSET[op].outputs]


# ---------------------------------------------------------------- the generated header


def test_generated_header_and_readme_are_current():
    assert gen_trt_ops.HEADER.read_text(encoding="utf-8") == gen_trt_ops.render_header(), (
        "plugins/common/trt_ops.h is stale: run python -m jetmamba.plugins.gen_trt_ops"
    )
    readme = gen_trt_ops.README.read_text(encoding="utf-8")
    assert readme == gen_trt_ops.splice_readme(readme, gen_trt_ops.render_readme_tables())


def test_generator_reads_the_specs_rules():
    ssd = gen_trt_ops.translate(OPSET["SSDScan"])
    y = ssd.outputs[0]
    assert y.copy_dims_of == -1 and [ssd.pool.nodes[e] for e in y.dims] == [
        ("kInputDim", 0, 0, 0), ("kInputDim", 0, 1, 0), ("kField", 0, 0, 0), ("kFloorDiv", 3, 0, 0)]  # fmt: skip
    assert ssd.pool.nodes[3] == ("kInputDim", 0, 2, 0)  # x's H*P, divided by the heads field
    assert [f.name for f in ssd.fields if f.required] == ["heads", "x_scale", "B_scale", "C_scale"]
    conv = gen_trt_ops.translate(OPSET["CausalConv1d"])
    assert [lim.allowed for lim in conv.limits] == [[2, 3, 4]]
    gated = gen_trt_ops.translate(OPSET["GatedRMSNormQuant"])
    assert gated.limits[0].gate_field == [f.name for f in gated.fields].index("hadamard")
    assert 768 in gated.limits[0].allowed and 36 not in gated.limits[0].allowed
    scan = gen_trt_ops.translate(OPSET["SelectiveScan"])
    assert scan.outputs[0].same_dtype_as == 8 and scan.inputs[8].same_dtype_as == -1  # y follows ssm_state
    assert (
        gen_trt_ops.folder_of("SSDScanFp") == "ssd_scan_fp"
        and gen_trt_ops.folder_of("RMSNormQuant") == "rms_norm_quant"
    )


def test_the_generator_refuses_what_it_cannot_express():
    from dataclasses import replace

    spec = OPSET["RMSNormQuant"]
    two_optional = replace(
        spec, inputs=(spec.inputs[0], replace(spec.inputs[1]), replace(spec.inputs[2], optional=True))
    )
    with pytest.raises(gen_trt_ops.GenerationError, match="optional"):
        gen_trt_ops.translate(two_optional)
    unknown_dim = replace(spec, outputs=(replace(spec.outputs[0], shape="[b, l, q]"), spec.outputs[1]))
    with pytest.raises(gen_trt_ops.GenerationError, match="q"):
        gen_trt_ops.translate(unknown_dim)


# ---------------------------------------------------------------- the library file


def _needed(path: Path) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf is not installed")
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def test_library_needs_no_tensorrt_library(version):
    libraries = [built(version)["glue"]] + ([built_with_kernels()["library"]] if version == "10.16" else [])
    for library in libraries:
        needed = _needed(library)
        assert needed and not any("nvinfer" in n or "nvonnxparser" in n for n in needed), needed


def test_creators_match_the_op_specs(drv):
    creators = drv.creators()
    assert [c["name"] for c in creators] == list(OPSET)
    for c in creators:
        spec = OPSET[c["name"]]
        assert c["interface"] == {"kind": "PLUGIN CREATOR_V3ONE", "major": 1, "minor": 0}
        assert (c["version"], c["namespace"]) == ("1", "jetmamba")
        assert [f["name"] for f in c["fields"]] == [a.name for a in spec.attributes]
        for f, a in zip(c["fields"], spec.attributes, strict=True):
            assert f["type"] == (K_INT32 if a.kind == "int" else K_FLOAT32)
            assert f["length"] == (0 if a.kind == "floats" else 1)


@pytest.mark.parametrize("op", list(OPSET))
def test_plugin_core_capabilities_and_serialization(drv, op):
    plugin = drv.create(op)
    assert plugin is not None, drv.last_error()
    info = plugin.info()
    assert info["interface"] == {"kind": "PLUGIN", "major": 1, "minor": 0}
    assert info["core"]["kind"] == "PLUGIN_V3ONE_CORE"
    assert info["build"]["kind"] == "PLUGIN_V3ONE_BUILD"
    assert info["runtime"]["kind"] == "PLUGIN_V3ONE_RUNTIME"
    assert (info["name"], info["version"], info["namespace"]) == (op, "1", "jetmamba")
    assert info["nb_outputs"] == len(OPSET[op].outputs)

    # every field, defaults included, with the given values (as float32 / int32)
    fields = plugin.serialized()
    expected = OPSET[op].check_attributes(VALID[op])
    assert [f["name"] for f in fields] == list(expected)
    for f in fields:
        want = expected[f["name"]]
        want = [want] if not isinstance(want, list) else want
        assert np.array_equal(np.float32(f["values"]), np.float32(want))  # 9 digits read back exactly
        assert f["type"] == (K_INT32 if isinstance(want[0], int) else K_FLOAT32)

    # createPlugin(getFieldsToSerialize()) in the runtime phase: the same plugin
    again = plugin.recreate()
    assert again is not None, drv.last_error()
    assert again.serialized() == fields and again.info()["metadata"] == info["metadata"]
    for copy in (plugin.clone(), plugin.attach()):
        assert copy is not None and copy.handle != plugin.handle
        assert copy.serialized() == fields and copy.info() == info
        copy.destroy()
    again.destroy()
    plugin.destroy()


# ---------------------------------------------------------------- fields


def _bad_field_cases(op: str):
    """(case, raw fields, expected message part) for every way an op's fields can be wrong."""
    spec = OPSET[op]
    good = encode_fields(op, VALID[op])
    named = {f[0]: i for i, f in enumerate(good)}

    def replaced(name, field):
        return [field if f[0] == name else f for f in good]

    yield "unknown", [*good, ("not_a_field", K_FLOAT32, [1.0])], "unknown field not_a_field"
    for a in spec.attributes:
        if a.name not in named:
            continue
        if a.default is None:
            yield f"missing {a.name}", [f for f in good if f[0] != a.name], f"missing field {a.name}"
        yield f"twice {a.name}", [*good, good[named[a.name]]], f"field {a.name} is given twice"
        wrong = (a.name, K_FLOAT32, [1.0]) if a.kind == "int" else (a.name, K_INT32, [1])
        yield f"type {a.name}", replaced(a.name, wrong), "expected"
        yield f"char {a.name}", replaced(a.name, (a.name, K_CHAR, [49])), "kCHAR"
        if a.kind == "floats":
            yield f"empty {a.name}", replaced(a.name, (a.name, K_FLOAT32, [])), "at least one value"
        else:
            kind = K_INT32 if a.kind == "int" else K_FLOAT32
            yield f"length {a.name}", replaced(a.name, (a.name, kind, [1, 1])), "one value"
        if a.kind != "int":
            yield f"nan {a.name}", replaced(a.name, (a.name, K_FLOAT32, [math.nan])), "NaN"
            if a.finite:
                yield f"inf {a.name}", replaced(a.name, (a.name, K_FLOAT32, [math.inf])), "not finite"
        kind = K_INT32 if a.kind == "int" else K_FLOAT32
        if a.minimum is not None:
            below = a.minimum - 1 if a.kind == "int" else (-1.0 if a.minimum >= 0 else a.minimum * 2)
            if a.kind != "int" and a.minimum > 0:
                below = a.minimum / 4  # a positive subnormal scale: still below the normal minimum
            yield f"below {a.name}", replaced(a.name, (a.name, kind, [below])), "is below"
        if a.maximum is not None:
            yield f"above {a.name}", replaced(a.name, (a.name, kind, [a.maximum + 1])), "is above"


@pytest.mark.parametrize("op", list(OPSET))
def test_bad_fields_are_rejected_with_the_reason(drv, op):
    cases = list(_bad_field_cases(op))
    assert cases
    for case, fields, message in cases:
        drv.clear_log()
        assert drv.create_raw(op, fields, layer="layers.3.bad") is None, case
        error = drv.last_error()
        assert message in error and op in error and "layers.3.bad" in error, (case, error)
        assert drv.log() == [f"1:jetmamba plugin: {error}"], case  # kERROR through the logger finder


def test_fields_accept_float64_and_int64_and_fill_defaults(drv):
    plugin = drv.create_raw("SSDScanFp", [("heads", K_INT64, [8]), ("dt_min", K_FLOAT64, [0.25])])
    assert plugin is not None, drv.last_error()
    values = {f["name"]: f["values"] for f in plugin.serialized()}
    assert values == {"heads": [8], "dt_min": [0.25], "dt_max": [math.inf]}
    assert drv.create_raw("SSDScanFp", [("heads", K_INT64, [2**40])]) is None
    assert "does not fit int32" in drv.last_error()
    assert drv.create_raw("RMSNorm", [("eps", K_FLOAT64, [1e300])]) is None  # above 1, and not a float32
    gated = drv.create("GatedRMSNormQuant", {k: v for k, v in VALID["GatedRMSNormQuant"].items() if k != "hadamard"})
    assert {f["name"]: f["values"] for f in gated.serialized()}["hadamard"] == [0]
    for p in (plugin, gated):
        p.destroy()


def test_ops_without_fields_take_none(drv):
    assert drv.create("CausalConv1dFp", {}) is not None
    assert drv.create_raw("SelectiveScanFp", [("eps", K_FLOAT32, [0.1])]) is None
    assert "unknown field eps (fields: none)" in drv.last_error()


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("op", list(OPSET))
def test_output_shapes_with_constant_dims_follow_the_spec(drv, op):
    plugin = drv.create(op)
    for with_optional in (True, False):
        if not with_optional and not any(t.optional for t in OPSET[op].inputs):
            continue
        got = plugin.output_shapes(input_shapes(op, with_optional))
        assert got["rc"] == 0, drv.last_error()
        assert got["outputs"] == [[str(x) for x in s] for s in output_shapes(op)]


@pytest.mark.parametrize("op", list(OPSET))
def test_output_shapes_with_symbolic_dims(drv, op):
    """Runtime dims stay expressions: an output is an input's dims, or (SSDScan's y) built with
    IExprBuilder from x's H*P and the heads field."""
    spec = OPSET[op]
    plugin = drv.create(op)
    names = []
    for i, t in enumerate(spec.inputs):
        ellipsis, dims = parse_shape(t.shape)
        lead = ["b", "l"] if ellipsis else []
        names.append(lead + [d if d in ("b", "l") else f"x{i}.{j}" for j, d in enumerate(dims)])
    got = plugin.output_shapes(names)
    assert got["rc"] == 0, drv.last_error()
    for o, t in enumerate(spec.outputs):
        same = [i for i, s in enumerate(spec.inputs) if s.shape == t.shape and not s.optional]
        if same:
            twin = t.name.removesuffix("_out")
            i = next((i for i in same if spec.inputs[i].name == twin), same[0])
            assert got["outputs"][o] == names[i]
        elif t.shape == "[b, l, N]":  # the int4 GEMMs: N is qweight's dim 0
            assert got["outputs"][o] == ["b", "l", "x1.0"]
        else:
            heads = VALID[op]["heads"]
            assert t.shape == "[b, l, H, P]" and got["outputs"][o] == ["b", "l", str(heads), f"(x0.2//{heads})"]
            assert got["operations"] == 1 and got["constants"] == 2


BAD_SHAPES = [
    # op, changes to the DIMS-based input shapes (input index, dim, value), message part
    ("RMSNormQuant", [(2, 0, 31)], "input weight [d] has dims [31]: dim 0 should be 32"),
    ("RMSNormQuant", [(1, 1, 6)], "input residual"),
    ("CausalConv1d", [(1, 1, 5), (3, 1, 4)], "5 is outside the kernels' limit (kernel width k in 2..4)"),
    ("CausalConv1d", [(3, 1, 2)], "input conv_state"),
    ("CausalConv1dFp", [(1, 1, 1), (3, 1, 0)], "kernel width"),
    ("SelectiveScan", [(3, 2, 8)], "input B"),
    ("SSDScan", [(0, 2, 18)], "input x"),  # 18 channels are not 4 heads
    ("SSDScan", [(1, 2, 5)], "input dt"),
    ("SSDScan", [(7, 2, 5)], "input ssm_state"),
    ("SSDScanFp", [(4, 2, 3)], "input C"),
    ("HadamardQuant", [(0, 2, 36)], "36 is outside the kernels' limit (n = 2^k"),
    ("GatedRMSNorm", [(2, 0, 8)], "input weight"),
    ("W4A16Linear", [(1, 1, 31)], "input qweight"),  # not K/2
    ("W4A8Linear", [(2, 1, 3)], "input scales"),  # not K/G
    ("W4A8Linear", [(3, 0, 15)], "input bias"),
]


@pytest.mark.parametrize(("op", "changes", "message"), BAD_SHAPES)
def test_inconsistent_input_dims_are_rejected(drv, op, changes, message):
    plugin = drv.create(op, layer="layers.7.mixer")
    shapes = input_shapes(op)
    for i, j, value in changes:
        shapes[i][j] = value
    got = plugin.output_shapes(shapes)
    assert got["rc"] != 0 and message in drv.last_error(), drv.last_error()
    assert drv.last_error().startswith(f"layers.7.mixer: {op}: ")
    in_types, out_types = first_types(op)
    assert plugin.configure(in_types, shapes, out_types, output_shapes(op)) != 0
    assert plugin.shape_change(in_types, shapes, out_types, output_shapes(op)) != 0


def test_field_lengths_and_gated_limits_are_checked_against_dims(drv):
    conv = drv.create("CausalConv1d", {**VALID["CausalConv1d"], "x_scale": [0.1, 0.2, 0.3]})
    assert conv.output_shapes(input_shapes("CausalConv1d"))["rc"] != 0
    assert "field x_scale has 3 values for 24 channels" in drv.last_error()
    ssd = drv.create("SSDScan", {**VALID["SSDScan"], "B_scale": [0.1, 0.2, 0.3]})
    assert ssd.output_shapes(input_shapes("SSDScan"))["rc"] != 0 and "B_scale" in drv.last_error()
    # the Hadamard order limit applies only with hadamard = 1
    dims36 = {**DIMS, "d": 36}
    shapes = input_shapes("GatedRMSNormQuant", values=dims36)
    plain = drv.create("GatedRMSNormQuant", {**VALID["GatedRMSNormQuant"], "group_size": 9})
    assert plain.output_shapes(shapes)["rc"] == 0, drv.last_error()
    rotated = drv.create("GatedRMSNormQuant", {**VALID["GatedRMSNormQuant"], "group_size": 9, "hadamard": 1})
    assert rotated.output_shapes(shapes)["rc"] != 0 and "n = 2^k" in drv.last_error()
    # glue-level kernel rules: group_size divides d
    uneven = drv.create("GatedRMSNorm", {"eps": 1e-5, "group_size": 5})
    assert uneven.output_shapes(input_shapes("GatedRMSNorm"))["rc"] != 0
    assert "group_size 5 does not divide d = 32" in drv.last_error()


def test_wrong_ranks_and_counts_are_rejected(drv):
    plugin = drv.create("RMSNormQuant")
    shapes = input_shapes("RMSNormQuant")
    assert plugin.output_shapes([shapes[0][:2], shapes[1], shapes[2]])["rc"] != 0
    assert "input x [b, l, d] has rank 2, expected rank 3" in drv.last_error()
    assert plugin.output_shapes([shapes[0]])["rc"] != 0 and "1 inputs, expected 2 or 3" in drv.last_error()
    assert plugin.output_shapes([*shapes, shapes[2]])["rc"] != 0
    hadamard = drv.create("HadamardQuant")
    for shape in ([16], [3, 16], [2, 3, 4, 5, 16]):  # "[..., n]": any leading dims
        assert hadamard.output_shapes([shape])["outputs"] == [[str(x) for x in shape]]
    assert hadamard.output_shapes([[]])["rc"] != 0


# ---------------------------------------------------------------- dtypes and formats


def test_output_dtypes(drv):
    def types(op, ins):
        got = drv.create(op).output_types(ins)
        assert got["rc"] == 0, drv.last_error()
        return got["types"]

    assert types("RMSNormQuant", [F16, F16, F32]) == [I8, F16]
    assert types("RMSNormQuant", [F32, F16]) == [I8, F32]  # no residual: x, weight
    assert types("RMSNorm", [F16, F32]) == [F16, F16]
    assert types("CausalConv1d", [I8, I8, F32, I8]) == [I8, I8]
    assert types("CausalConv1dFp", [F32, F32, F32]) == [F32, F32]
    scan = [I8, I8, F32, I8, I8, F32, I8, F32]
    assert types("SelectiveScan", [*scan, F32]) == [F32, F32]  # y follows the state
    assert types("SelectiveScan", [*scan, F16, F32]) == [F16, F16]
    assert types("SelectiveScanFp", [F16, F16, F32, F16, F16, F32, F16, F32, F32]) == [F16, F32]
    # an int8 state with its scales, with and without gate_smooth: y fp16, codes, scales
    assert types("SelectiveScanInt8State", [*scan, I8, F32, F32]) == [F16, I8, F32]
    assert types("SelectiveScanInt8State", [*scan, I8, F32]) == [F16, I8, F32]
    int8_scan = drv.create("SelectiveScanInt8State")
    assert int8_scan.supports(8, [*scan, I8], 10) and not int8_scan.supports(8, [*scan, F16], 10)
    assert not int8_scan.supports(9, [*scan, I8, F16], 10)  # the scales are fp32
    assert int8_scan.supports(12, [*scan, I8, F32, F32, F16, I8, F32], 11)
    assert not int8_scan.supports(10, [*scan, I8, F32, F32], 10)  # 10 inputs: position 10 is y (fp16)
    assert types("SSDScan", [I8, F16, F32, I8, I8, F32, F32, F32]) == [F16, F32]  # y follows dt
    assert types("SSDScanFp", [F32, F32, F32, F32, F32, F32, F32, F16]) == [F32, F16]
    assert types("GatedRMSNormQuant", [F16, I8, F32]) == [I8]
    assert types("GatedRMSNorm", [F32, F32, F16]) == [F32]
    assert types("HadamardQuant", [F16]) == [I8]
    assert types("W4A16Linear", [F16, U8, F16, F32]) == [F16] and types("W4A16Linear", [F16, U8, F16]) == [F16]
    assert types("W4A8Linear", [I8, U8, F16, F32]) == [F16]
    w4 = drv.create("W4A16Linear")
    assert w4.supports(1, [F16, U8], 4) and not w4.supports(1, [F16, I8], 4)  # qweight is uint8, not int8
    plugin = drv.create("SSDScan")
    assert plugin.output_types([I8, I32, F32, I8, I8, F32, F32, F32])["rc"] != 0  # dt of a type y cannot have
    assert plugin.output_types([I8, F16, F32, I8, I8, F32, F32, F32], nb_outputs=1)["rc"] != 0


@pytest.mark.parametrize("op", list(OPSET))
def test_supports_format_combination(drv, op):
    """Every tensor accepts exactly its spec's dtypes (given valid choices before it), in linear
    format only, with and without the optional input."""
    plugin = drv.create(op)
    spec = OPSET[op]
    for with_optional in (True, False):
        tensors = [t for t in spec.inputs if with_optional or not t.optional] + list(spec.outputs)
        nb_in = len(tensors) - len(spec.outputs)
        if not with_optional and nb_in == len(spec.inputs):
            continue
        ins, outs = first_types(op, with_optional)
        base = ins + outs
        for pos, t in enumerate(tensors):
            allowed = {SPEC_DTYPES[x] for x in t.dtypes}
            assert plugin.supports(pos, base, nb_in), (op, t.name)
            assert not plugin.supports(
                pos, base, nb_in, formats=[CHW32 if k == pos else LINEAR for k in range(len(base))]
            )
            for dtype in (F32, F16, I8, I32):
                if dtype not in allowed:
                    assert not plugin.supports(pos, [*base[:pos], dtype, *base[pos + 1 :]], nb_in), (op, t.name, dtype)


def test_dtype_ties(drv):
    """The graph's float type is shared by the activations; parameters and the SSM state keep their
    own; outputs follow their inputs."""
    rms = drv.create("RMSNormQuant")
    assert rms.supports(1, [F16, F16], 3) and not rms.supports(1, [F16, F32], 3)  # residual follows x
    assert rms.supports(2, [F16, F16, F32], 3)  # the weight may be fp32 next to fp16 activations
    assert rms.supports(4, [F32, F32, F16, I8, F32], 3) and not rms.supports(4, [F32, F32, F16, I8, F16], 3)
    assert rms.supports(1, [F32, F16], 2) and rms.supports(3, [F32, F16, I8, F32], 2)  # no residual
    scan = drv.create("SelectiveScanFp")
    ins = [F16, F16, F32, F16, F16, F32, F16, F32]
    assert scan.supports(8, [*ins, F32], 9)  # an fp32 state with fp16 activations
    assert not scan.supports(3, [F16, F16, F32, F32], 9)  # B follows u
    assert scan.supports(9, [*ins, F32, F16], 9) and not scan.supports(9, [*ins, F32, F32], 9)  # y follows u
    assert scan.supports(10, [*ins, F32, F16, F32], 9) and not scan.supports(10, [*ins, F32, F16, F16], 9)
    ssd = drv.create("SSDScan")
    assert ssd.supports(8, [I8, F32, F32, I8, I8, F32, F32, F16, F32], 8)  # y follows dt, not the state
    assert not ssd.supports(8, [I8, F32, F32, I8, I8, F32, F32, F16, F16], 8)
    # the kernel of CausalConv1dFp has one dtype for every tensor (narrower than the spec)
    conv = drv.create("CausalConv1dFp")
    assert conv.supports(1, [F16, F16], 4) and not conv.supports(1, [F16, F32], 4)
    assert not conv.supports(2, [F32, F32, F16], 4)


def test_configure_shape_change_and_workspace(drv):
    op = "SSDScan"
    plugin = drv.create(op)
    ins, outs = first_types(op)
    shapes, out_shapes = input_shapes(op), output_shapes(op)
    assert plugin.configure(ins, shapes, outs, out_shapes) == 0, drv.last_error()
    assert plugin.workspace(ins, shapes, outs, out_shapes) == 0
    assert plugin.shape_change(ins, shapes, outs, out_shapes) == 0, drv.last_error()
    wrong = list(ins)
    wrong[1] = I8  # dt in int8
    assert plugin.configure(wrong, shapes, outs, out_shapes) != 0 and "dt: int8" in drv.last_error()
    assert plugin.configure(ins, shapes, [F32, F32], out_shapes) != 0  # y must follow dt (fp16)
    assert plugin.configure(ins, shapes, outs[:1], out_shapes[:1]) != 0 and "1 outputs" in drv.last_error()
    # build-time wildcards: batch and length unknown, the rest checked
    dynamic = []
    for t, s in zip(OPSET[op].inputs, shapes, strict=True):
        names = parse_shape(t.shape)[1]
        dynamic.append([-1 if name in ("b", "l") else x for name, x in zip(names, s, strict=True)])
    assert plugin.configure(ins, dynamic, outs, out_shapes) == 0, drv.last_error()
    dynamic[7][1] = 5  # ssm_state's H
    assert plugin.configure(ins, dynamic, outs, out_shapes) != 0 and "ssm_state" in drv.last_error()
    plugin.destroy()


def test_enqueue_in_a_library_without_kernels_says_so(drv):
    plugin = drv.create("HadamardQuant")
    x = np.zeros((2, 16), np.float16)
    y = np.zeros((2, 16), np.int8)
    assert plugin.shape_change([F16], [x.shape], [I8], [y.shape]) == 0
    assert plugin.enqueue([x], [y]) != 0
    assert "jm_hadamard_quant is not linked into this library" in drv.last_error()


# ---------------------------------------------------------------- enqueue through the kernels


def _case(op: str, dtype: int, with_optional: bool, seed: int = 0):
    """Inputs (spec order, None for an absent optional one) for a small case of `op`."""
    g = torch.Generator().manual_seed(seed)
    spec = OPSET[op]
    tensors = []
    for t in spec.inputs:
        if t.optional and not with_optional:
            tensors.append(None)
            continue
        shape = spec_shape(t.shape, OP_DIMS.get(op, DIMS))
        codes = [SPEC_DTYPES[x] for x in t.dtypes]
        code = dtype if dtype in codes else codes[0]
        if code == I8:
            v = torch.randint(-100, 101, shape, generator=g, dtype=torch.int32).to(torch.int8)
        elif code == U8:  # packed int4 codes: every byte is two valid codes
            v = torch.randint(0, 256, shape, generator=g, dtype=torch.int32).to(torch.uint8)
        elif t.name == "A":
            v = -torch.exp(torch.rand(shape, generator=g) * 2 - 1)
        elif t.name in ("dt_bias", "dt"):
            v = torch.rand(shape, generator=g) - 0.5
        elif t.name == "gate_smooth":
            v = torch.rand(shape, generator=g) + 0.5
        elif t.name == "ssm_state_scale":  # an int8 state's per-channel scales: >= 0
            v = torch.rand(shape, generator=g) * 0.02
        else:
            v = torch.randn(shape, generator=g)
        tensors.append(v.to(TORCH_DTYPES[code]))
    return tensors


ENQUEUE_CASES = [
    ("RMSNormQuant", F16, True), ("RMSNormQuant", F32, False),
    ("RMSNorm", F16, True), ("RMSNorm", F32, False),
    ("HadamardQuant", F16, True), ("HadamardQuant", F32, True),
    ("GatedRMSNormQuant", F16, True), ("GatedRMSNormQuant/hadamard", F16, True), ("GatedRMSNorm", F32, True),
    ("CausalConv1d", F32, True), ("CausalConv1d", F32, False),
    ("CausalConv1dFp", F16, True), ("CausalConv1dFp", F32, False),
    ("SelectiveScan", F16, True), ("SelectiveScan", F32, False),
    ("SelectiveScanInt8State", F16, True), ("SelectiveScanInt8State", F16, False),
    ("SelectiveScanFp", F32, True),
    ("SSDScan", F16, True), ("SSDScan", F32, True), ("SSDScanFp", F16, True), ("SSDScanFp", F32, True),
    ("W4A16Linear", F16, True), ("W4A16Linear", F16, False), ("W4A8Linear", F16, True), ("W4A8Linear", F16, False),
]  # fmt: skip


@pytest.mark.parametrize(("op", "dtype", "with_optional"), ENQUEUE_CASES)
def test_enqueue_runs_the_kernel_like_the_reference(kernels_drv, op, dtype, with_optional):
    """The plugin fills the kernel's params from TensorRT's descriptors and its fields (per-channel
    scales through its device copies) and gives the reference's answer on the emulated kernel.
    "Op/hadamard": the op with hadamard = 1 (a workspace: the fp32 rows HadamardQuant transforms)."""
    op, _, variant = op.partition("/")
    spec = OPSET[op]
    fields = {**VALID[op], "hadamard": 1} if variant == "hadamard" else VALID[op]
    plugin = kernels_drv.create(op, fields)
    assert plugin is not None, kernels_drv.last_error()
    tensors = _case(op, dtype, with_optional)
    present = [t for t in tensors if t is not None]
    in_types = {v: k for k, v in TORCH_DTYPES.items()}
    ins = [in_types[t.dtype] for t in present]
    types = plugin.output_types(ins)
    assert types["rc"] == 0, kernels_drv.last_error()
    outs = types["types"]
    out_shapes = output_shapes(op)
    inputs = [np.ascontiguousarray(t.numpy()) for t in present]
    outputs = [np.full(s, 0x55, NP_DTYPES[t]) for s, t in zip(out_shapes, outs, strict=True)]
    assert plugin.configure(ins, [a.shape for a in inputs], outs, out_shapes) == 0, kernels_drv.last_error()
    assert plugin.shape_change(ins, [a.shape for a in inputs], outs, out_shapes) == 0, kernels_drv.last_error()
    assert plugin.enqueue(inputs, outputs) == 0, kernels_drv.last_error()

    attrs = spec.check_attributes(fields)
    kwargs = dict(attrs)
    if "out_dtype" in inspect.signature(spec.reference).parameters:  # int8 scans: y in the plugin's type
        kwargs["out_dtype"] = TORCH_DTYPES[outs[0]]
    expected = spec.reference(*tensors, **kwargs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for name, got, want in zip([t.name for t in spec.outputs], outputs, expected, strict=True):
        want = want.numpy()
        assert got.dtype == want.dtype, name
        if got.dtype == np.int8:
            diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
            assert diff.max() <= 1 and (diff == 0).mean() >= 0.97, (name, diff.max(), (diff == 0).mean())
        else:
            tol = 2e-2 if got.dtype == np.float16 else 2e-4
            np.testing.assert_allclose(
                got.astype(np.float32), want.astype(np.float32), rtol=tol, atol=tol, err_msg=name
            )
    plugin.destroy()


def test_enqueue_needs_a_known_number_of_inputs(kernels_drv):
    plugin = kernels_drv.create("RMSNorm")
    x = np.zeros((1, 2, 8), np.float32)
    assert plugin.enqueue([x, np.ones(8, np.float32)], [x.copy(), x.copy()]) != 0
    assert "before configurePlugin / onShapeChange" in kernels_drv.last_error()


# ---------------------------------------------------------------- the real build


def _cmake_build(include: Path, arch: str) -> Path:
    """The CMake build of plugins/ for `arch` with the local CUDA toolkit, cached by content."""
    digest = hashlib.sha256(f"{arch}\0{include}".encode())
    for f in sorted([*PLUGINS.rglob("*.cu"), *PLUGINS.rglob("*.cuh"), *PLUGINS.rglob("*.h"), *PLUGINS.rglob("*.cpp"),
                     PLUGINS / "CMakeLists.txt"]):  # fmt: skip
        digest.update(str(f).encode() + b"\0" + f.read_bytes())
    out = native.cache_dir() / "trt-cmake" / f"libjetmamba_plugins-{arch}-{digest.hexdigest()[:20]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    nvcc = emulation.find_nvcc()
    with tempfile.TemporaryDirectory(prefix="jm-cmake-", dir=out.parent) as tmp:
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        configure = ["cmake", "-S", str(PLUGINS), "-B", tmp, *gen, f"-DCMAKE_CUDA_COMPILER={nvcc}",
                     f"-DCMAKE_CUDA_ARCHITECTURES={arch}", f"-DJETMAMBA_TENSORRT_INCLUDE_DIR={include}"]  # fmt: skip
        for cmd in (configure, ["cmake", "--build", tmp, "-j", "2"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
        shutil.copy(Path(tmp) / "libjetmamba_plugins.so", out)
    return out


@pytest.mark.nvcc
@pytest.mark.slow
@pytest.mark.skipif(emulation.find_nvcc() is None or shutil.which("cmake") is None, reason="needs nvcc and cmake")
def test_cmake_builds_the_real_library_for_orin_against_tensorrt_10_16():
    library = _cmake_build(_trt_include("10.16"), "87")
    needed = _needed(library)
    assert any(n.startswith("libcudart.so") for n in needed), needed
    assert not any("nvinfer" in n for n in needed), needed
    nm = shutil.which("nm")
    if nm:
        exported = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
        names = {line.split()[-1] for line in exported.splitlines() if line.strip()}
        assert {"getCreators", "setLoggerFinder", "jm_trt_last_error"} <= names
        # the glue's weak references to the launchers all resolved: every kernel is in the library
        symbols = subprocess.run([nm, str(library)], capture_output=True, text=True).stdout
        unresolved = [line.split()[-1] for line in symbols.splitlines() if line.split()[:1] == ["w"]]
        assert not [s for s in unresolved if s.startswith("jm_")], unresolved


def test_int4_group_size_must_divide_k(drv):
    """qweight and scales of K = 80 pass the floor-division checks with G = 32 (40 and 2 columns);
    the kernels' own rule (G divides K) rejects them when the engine is built."""
    plugin = drv.create("W4A16Linear", {"group_size": 32})
    ins, outs = first_types("W4A16Linear")
    shapes = [[2, 5, 80], [16, 40], [16, 2], [16]]
    assert plugin.configure(ins, shapes, outs, [[2, 5, 16]]) != 0
    assert "group_size 32 does not divide K = 80" in drv.last_error()
    assert drv.create("W4A8Linear", {"x_scale": 0.1, "group_size": 48}) is not None  # a valid field ...
    bad = drv.create("W4A8Linear", {"x_scale": 0.1, "group_size": 48})
    assert bad.configure([I8, U8, F16, F32], [[2, 5, 96], [16, 48], [16, 2], [16]], outs, [[2, 5, 16]]) != 0
    assert "not a multiple of 32" in drv.last_error()  # ... that no kernel runs
