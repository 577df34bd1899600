"""The TensorRT backend: a bundle's engine on the device (Jetson, or a CUDA workstation).

One engine, two execution contexts: profile 0 (prefill, ``[B, 1..max_prompt]``) and profile 1
(decode, ``[B, 1]``), sharing the engine's weights and one scratch allocation (the two never run at
the same time: one stream). Every I/O buffer is allocated once through :mod:`jetmamba.runtime.cudamem`
at the largest shape (:func:`jetmamba.runtime.engine.buffer_plan`): the ids and logits, with pinned
host twins, and two sets of state buffers. A call reads its state from one set and writes the next
state into the other, so the state never leaves the device; the state object returned holds the
set's device buffers, and :meth:`init_state` zeroes a set with a memset.

A decode step (ids copied in, the engine, logits copied out) is captured into a CUDA graph the first
time a batch size and state direction is seen, and replayed after that: two graphs per batch size
(A->B and B->A). A graph is captured again if a buffer address ever changes (it does not, with the
buffers allocated once). Logits come back as fp32 torch tensors on the CPU.

TensorRT and the CUDA bindings are imported when a backend is made; importing this module needs
neither (:func:`unavailable_reason` says what is missing).
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from jetmamba.errors import UsageError
from jetmamba.runtime import engine as eng
from jetmamba.runtime.backends.base import Backend, State

if TYPE_CHECKING:
    import tensorrt as trt

    from jetmamba.runtime.cudamem import CudaApi, HostBuffer

log = logging.getLogger(__name__)

NUMPY_DTYPES = {"int64": np.int64, "int32": np.int32, "float32": np.float32, "float16": np.float16, "int8": np.int8}


def unavailable_reason() -> str | None:
    """None when this machine can run the backend (a real ``tensorrt`` module, a CUDA Python
    binding, a CUDA device), else one line saying what is missing and how to fix it."""
    from jetmamba.runtime.build import tensorrt_unavailable_reason
    from jetmamba.runtime.cudamem import available_binding, open_cuda

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        return reason
    binding = available_binding()
    if binding is None:
        return ("no CUDA Python binding: pip install 'cuda-python==<CUDA major>.*' (12 for JetPack 6, 13 for "
                "JetPack 7), or pip install pycuda")  # fmt: skip
    try:
        open_cuda(0, prefer=binding)
    except Exception as exc:  # a missing driver or device, whatever the binding calls it
        return f"no usable CUDA device ({exc}): check the driver with nvidia-smi or tegrastats"
    return None


class DeviceState(Mapping[str, int]):
    """A state on the device: state input name -> device pointer of its buffer in one of the two
    buffer sets, for ``batch`` sequences. Consumed by the call it is passed to."""

    def __init__(self, owner: int, buffer_set: int, batch: int, pointers: dict[str, int], serial: int):
        self.owner = owner
        self.buffer_set = buffer_set
        self.batch = batch
        self.serial = serial
        self._pointers = pointers

    def __getitem__(self, name: str) -> int:
        return self._pointers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._pointers)

    def __len__(self) -> int:
        return len(self._pointers)

    def __repr__(self) -> str:
        return f"DeviceState(set {self.buffer_set}, batch {self.batch}, {len(self)} tensors)"


@dataclass
class _Graph:
    handle: Any
    addresses: tuple[int, ...]


class TensorRTBackend(Backend):
    """``bundle``: a bundle directory; ``engine``: a serialized engine to use instead of the
    cache's (built there when absent); ``max_prompt`` / ``max_batch``: the profiles' limits (a
    different value means a different engine); ``device``: the CUDA device; ``cuda_graph``: replay
    decode steps as CUDA graphs; ``opt_level``: the builder optimization level if it must build;
    ``binding``: ``cuda-python`` or ``pycuda`` (None: the first installed)."""

    name = "tensorrt"

    def __init__(self, bundle: str | Path, *, engine: str | Path | None = None, max_prompt: int = 2048,
                 max_batch: int = 1, device: int = 0, cuda_graph: bool = True, opt_level: int = 3,
                 binding: str | None = None, quiet: bool = False):  # fmt: skip
        from jetmamba.calibration.arch import config_from_dict
        from jetmamba.compiler.bundle import verify_bundle
        from jetmamba.runtime import build
        from jetmamba.runtime.cudamem import open_cuda

        self._closed = True  # until everything below exists
        self.bundle = Path(bundle)
        manifest = verify_bundle(self.bundle)
        build.require_tensorrt()
        import tensorrt as trt

        self.options = eng.EngineOptions(max_prompt=max_prompt, max_batch=max_batch, opt_level=opt_level)
        self.contract = eng.io_contract(manifest)
        self.plan = eng.buffer_plan(self.contract, self.options)
        self.config = config_from_dict(manifest["config"])
        self.manifest = manifest
        self.max_prompt, self.max_batch = max_prompt, max_batch
        self.device = "cpu"  # where prefill wants its ids: they are staged through pinned host memory
        self.cuda: CudaApi = open_cuda(device, prefer=binding)
        self.use_graphs = cuda_graph and self.cuda.supports_graphs

        if engine is None:
            built = build.ensure_engine(self.bundle, self.options, device=device, quiet=quiet, cuda=self.cuda)
            engine_path, library = built.engine, built.plugin_library
        else:
            engine_path = Path(engine)
            major, minor = self.cuda.compute_capability()
            found = build.find_plugin_library(self.bundle, arch=f"{major}{minor}")
            if found is None:
                raise UsageError(f"no plugin library for sm_{major}{minor} is built: run jetmamba build --bundle "
                                 f"{self.bundle}")  # fmt: skip
            library = found
        build.load_plugin_library(library)
        self.logger = build._Logger.create()
        self.runtime = trt.Runtime(self.logger)
        try:
            data = engine_path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the engine {engine_path}: {exc.strerror}") from None
        engine_obj = self.runtime.deserialize_cuda_engine(data)
        if engine_obj is None:
            errors = "; ".join(build.logged_errors(self.logger)[-2:]) or "no reason given"
            raise UsageError(f"TensorRT could not load {engine_path} ({errors}): an engine from another TensorRT "
                             "version or GPU; rebuild with jetmamba build --force")  # fmt: skip
        self.engine: trt.ICudaEngine = engine_obj
        if self.engine.num_optimization_profiles != len(eng.PROFILES):
            raise UsageError(f"{engine_path} has {self.engine.num_optimization_profiles} profiles, not jetmamba's "
                             "two (prefill, decode): rebuild with jetmamba build --force")  # fmt: skip
        self._allocate(trt)
        self._closed = False

    # ------------------------------------------------------------ setup

    def _allocate(self, trt: Any) -> None:
        cuda, plan = self.cuda, self.plan
        self.stream = cuda.stream_create()
        self._device_buffers: list[int] = []
        self._host_buffers: list[HostBuffer] = []
        self.ids_dev = self._malloc(plan.input_ids_bytes)
        self.logits_dev = self._malloc(plan.logits_bytes)
        self.ids_host = self._host(plan.input_ids_bytes)
        self.logits_host = self._host(plan.logits_bytes)
        self.sets = [{name: self._malloc(n) for name, n in plan.state_bytes.items()} for _ in range(plan.state_sets)]
        # one scratch for both contexts: prefill and decode never overlap on the one stream
        scratch = max(self.engine.get_device_memory_size_for_profile_v2(i) for i in range(len(eng.PROFILES)))
        self.scratch = self._malloc(scratch)
        self.contexts: list[trt.IExecutionContext] = []
        for index in range(len(eng.PROFILES)):
            context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is None:
                raise UsageError("TensorRT could not create an execution context (out of device memory?)")
            context.set_device_memory(self.scratch, scratch)
            if not context.set_optimization_profile_async(index, self.stream):
                raise UsageError(f"TensorRT refused optimization profile {index} for a context")
            self.contexts.append(context)
        cuda.stream_synchronize(self.stream)
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._serials = itertools.count(1)
        self._live: int | None = None

    def _malloc(self, nbytes: int) -> int:
        ptr = self.cuda.malloc(nbytes)
        self._device_buffers.append(ptr)
        return ptr

    def _host(self, nbytes: int) -> HostBuffer:
        buffer = self.cuda.host_alloc(nbytes)
        self._host_buffers.append(buffer)
        return buffer

    # ------------------------------------------------------------ state

    def _new_state(self, buffer_set: int, batch: int) -> DeviceState:
        state = DeviceState(id(self), buffer_set, batch, dict(self.sets[buffer_set]), next(self._serials))
        self._live = state.serial
        return state

    def init_state(self, batch_size: int) -> State:
        self._check_open()
        self.check_shape(batch_size, 1)
        for name, ptr in self.sets[0].items():
            nbytes = self.contract.state_inputs[self.contract.state_names.index(name)].nbytes(batch_size, 1)
            self.cuda.memset(ptr, 0, nbytes, self.stream)
        return self._new_state(0, batch_size)

    def _take(self, state: State | None, batch: int) -> DeviceState:
        if state is None:
            return self._as_device_state(self.init_state(batch))
        if not isinstance(state, DeviceState) or state.owner != id(self):
            raise UsageError("this state does not belong to this TensorRT backend: start from its init_state()")
        if state.serial != self._live:
            raise UsageError("this state was consumed by a later call: continue from the state that call returned")
        if state.batch != batch:
            raise UsageError(f"the state is for batch {state.batch}, the ids for batch {batch}")
        return state

    @staticmethod
    def _as_device_state(state: State) -> DeviceState:
        assert isinstance(state, DeviceState)
        return state

    # ------------------------------------------------------------ running

    def _bind(self, profile: int, batch: int, seq: int, source: DeviceState) -> tuple[int, ...]:
        """Shapes and addresses for one call; returns the addresses (a captured graph's identity)."""
        context = self.contexts[profile]
        target = self.sets[1 - source.buffer_set]
        addresses: list[int] = []
        for spec in (self.contract.input_ids, *self.contract.state_inputs):
            shape = spec.resolve(batch, seq)
            if not context.set_input_shape(spec.name, trt_dims(shape)):
                raise UsageError(f"TensorRT refused shape {list(shape)} for {spec.name}")
        for name, ptr in [("input_ids", self.ids_dev), ("logits", self.logits_dev), *source.items(),
                          *((eng.state_output_name(n), p) for n, p in target.items())]:  # fmt: skip
            if not context.set_tensor_address(name, ptr):
                raise UsageError(f"TensorRT has no I/O tensor {name}: the engine does not match the bundle")
            addresses.append(ptr)
        return tuple(addresses)

    def _stage_ids(self, input_ids: torch.Tensor) -> int:
        ids = np.ascontiguousarray(input_ids.detach().cpu().numpy().astype(np.int64))
        self.ids_host.array(np.int64, ids.shape)[...] = ids
        return ids.nbytes

    def _run(self, profile: int, input_ids: torch.Tensor, state: DeviceState) -> torch.Tensor:
        from jetmamba.runtime.build import logged_errors

        batch, seq = input_ids.shape
        cuda, stream, context = self.cuda, self.stream, self.contexts[profile]
        ids_bytes = self._stage_ids(input_ids)
        logits_bytes = self.contract.logits.nbytes(batch, seq)
        key = (batch, state.buffer_set)
        graph = self._graphs.get(key) if profile == 1 and self.use_graphs else None
        if graph is not None and graph.addresses == self._addresses(state):
            cuda.graph_launch(graph.handle, stream)
        else:
            addresses = self._bind(profile, batch, seq, state)
            cuda.copy_htod(self.ids_dev, self.ids_host.ptr, ids_bytes, stream)
            if not context.execute_async_v3(stream):
                errors = "; ".join(logged_errors(self.logger)[-2:]) or "no reason given"
                raise UsageError(f"TensorRT failed to run the {eng.PROFILES[profile]} step: {errors}")
            cuda.copy_dtoh(self.logits_host.ptr, self.logits_dev, logits_bytes, stream)
            if profile == 1 and self.use_graphs:
                self._capture(key, addresses, ids_bytes, logits_bytes)
        cuda.stream_synchronize(stream)
        logits = self.logits_host.array(np.float32, (batch, seq, self.contract.vocab_size))
        return torch.from_numpy(logits.copy())  # the host buffer is reused by the next call

    def _addresses(self, state: DeviceState) -> tuple[int, ...]:
        target = self.sets[1 - state.buffer_set]
        return (self.ids_dev, self.logits_dev, *state.values(), *target.values())

    def _capture(self, key: tuple[int, int], addresses: tuple[int, ...], ids_bytes: int, logits_bytes: int) -> None:
        """Record ids in, the decode engine, logits out as one graph (the eager run has just set the
        context's shapes and let TensorRT do its deferred work, as capture requires)."""
        cuda, stream = self.cuda, self.stream
        old = self._graphs.pop(key, None)
        if old is not None:
            cuda.graph_destroy(old.handle)
        try:
            cuda.begin_capture(stream)
            try:
                cuda.copy_htod(self.ids_dev, self.ids_host.ptr, ids_bytes, stream)
                ok = self.contexts[1].execute_async_v3(stream)
                cuda.copy_dtoh(self.logits_host.ptr, self.logits_dev, logits_bytes, stream)
            finally:
                handle = cuda.end_capture(stream)
            if not ok:
                raise UsageError("TensorRT could not enqueue the decode step under capture")
        except Exception as exc:  # a plugin or TensorRT tactic that cannot be captured: run eagerly
            log.warning("CUDA graph capture of the decode step failed (%s); decoding without graphs", exc)
            print(f"jetmamba: CUDA graph capture failed ({exc}); decoding without graphs", file=sys.stderr)
            self.use_graphs = False
            return
        self._graphs[key] = _Graph(handle, addresses)

    def prefill(self, input_ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self._check_open()
        if input_ids.dim() != 2:
            raise UsageError(f"prefill takes ids [batch, length], got shape {list(input_ids.shape)}")
        batch, seq = input_ids.shape
        self.check_shape(batch, seq)
        source = self._take(state, batch)
        logits = self._run(0, input_ids, source)
        return logits, self._new_state(1 - source.buffer_set, batch)

    def decode(self, input_ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        self._check_open()
        if input_ids.dim() != 1:
            raise UsageError(f"decode takes one token per sequence, ids [batch], got shape {list(input_ids.shape)}")
        batch = input_ids.shape[0]
        self.check_shape(batch, 1)
        source = self._take(state, batch)
        logits = self._run(1, input_ids[:, None], source)
        return logits[:, 0], self._new_state(1 - source.buffer_set, batch)

    # ------------------------------------------------------------ teardown

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this TensorRT backend is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        cuda = self.cuda
        for graph in self._graphs.values():
            cuda.graph_destroy(graph.handle)
        self._graphs.clear()
        self.contexts.clear()  # contexts before their engine, the engine before the memory
        del self.engine
        for ptr in self._device_buffers:
            cuda.free(ptr)
        for buffer in self._host_buffers:
            cuda.host_free(buffer)
        self._device_buffers, self._host_buffers = [], []
        cuda.stream_destroy(self.stream)


def trt_dims(shape: tuple[int, ...]) -> trt.Dims:
    import tensorrt as trt

    return trt.Dims(list(shape))
