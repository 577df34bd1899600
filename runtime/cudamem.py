"""The little of CUDA the TensorRT runtime needs, behind one interface, on cuda-python or pycuda.

TensorRT's Python API takes device pointers and stream handles as plain ints; something else must
allocate the memory, copy to and from it, and own the stream. That is :class:`CudaApi`: device and
pinned host buffers, host<->device copies, memset, a stream, events for timing, and capturing a
stream's work into a CUDA graph and launching it. Two implementations:

- :class:`CudaPython` on NVIDIA's cuda-python (``cuda.bindings.runtime``, 12.x and 13.x; the older
  ``cuda.cudart`` module of cuda-python 12.0-12.5 too): what TensorRT's own samples use;
- :class:`PyCuda` on pycuda, where that is what a device image has (it uses the device's primary
  context, the one TensorRT and the CUDA runtime use).

:func:`open_cuda` picks the first that imports (or the one named), lazily: importing this module
needs neither. Every CUDA return code is checked; a failure is a :class:`CudaError` naming the
call and CUDA's own name for the error.

cuda-python ships no type information, so :class:`CudaPython` types the module it loads as
``Any``; the interface itself is fully typed.
"""

from __future__ import annotations

import abc
import ctypes
import importlib
from typing import Any

import numpy as np

from jetmamba.errors import JetmambaError, UsageError

IMPLEMENTATIONS = ("cuda-python", "pycuda")


class CudaError(JetmambaError):
    """A CUDA call that failed (no device, out of memory, a kernel fault reported at a sync)."""


class HostBuffer:
    """Page-locked host memory (copies to and from it are truly asynchronous, and may be captured in
    a CUDA graph); ``array(dtype, shape)`` views its start as a NumPy array."""

    def __init__(self, ptr: int, nbytes: int):
        self.ptr = ptr
        self.nbytes = nbytes

    def array(self, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dt.itemsize > self.nbytes:
            raise UsageError(f"a {dt} array of shape {shape} does not fit a {self.nbytes}-byte host buffer")
        raw = (ctypes.c_char * (count * dt.itemsize)).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dt, count=count).reshape(shape)


class CudaApi(abc.ABC):
    """One device's memory, copies, stream, events and graphs. Pointers and handles are ints, as
    TensorRT takes them (``set_tensor_address(name, ptr)``, ``execute_async_v3(stream)``)."""

    name: str = ""
    supports_graphs: bool = True

    # -- device
    @abc.abstractmethod
    def device_name(self) -> str: ...

    @abc.abstractmethod
    def compute_capability(self) -> tuple[int, int]: ...

    @abc.abstractmethod
    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""

    # -- memory
    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def host_alloc(self, nbytes: int) -> HostBuffer: ...

    @abc.abstractmethod
    def host_free(self, buffer: HostBuffer) -> None: ...

    @abc.abstractmethod
    def copy_htod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        """Asynchronous copy from host address ``src`` (pinned for true asynchrony) to device ``dst``."""

    @abc.abstractmethod
    def copy_dtoh(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...

    @abc.abstractmethod
    def copy_dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None: ...

    @abc.abstractmethod
    def memset(self, ptr: int, value: int, nbytes: int, stream: int) -> None: ...

    # -- streams and events
    @abc.abstractmethod
    def stream_create(self) -> int: ...

    @abc.abstractmethod
    def stream_synchronize(self, stream: int) -> None: ...

    @abc.abstractmethod
    def stream_destroy(self, stream: int) -> None: ...

    @abc.abstractmethod
    def event_create(self) -> Any: ...

    @abc.abstractmethod
    def event_record(self, event: Any, stream: int) -> None: ...

    @abc.abstractmethod
    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded events (waits for ``end``)."""

    @abc.abstractmethod
    def event_destroy(self, event: Any) -> None: ...

    # -- graphs
    @abc.abstractmethod
    def begin_capture(self, stream: int) -> None:
        """Record the stream's work into a graph instead of running it (thread-local mode)."""

    @abc.abstractmethod
    def end_capture(self, stream: int) -> Any:
        """Stop capturing and instantiate the graph; returns an executable graph handle."""

    @abc.abstractmethod
    def graph_launch(self, graph: Any, stream: int) -> None: ...

    @abc.abstractmethod
    def graph_destroy(self, graph: Any) -> None: ...


# ---------------------------------------------------------------- cuda-python


def _import_cuda_python() -> Any:
    """``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart``."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        pass
    try:
        return importlib.import_module("cuda.cudart")
    except ImportError:
        raise UsageError(
            "cuda-python is not installed: pip install 'cuda-python==<CUDA major>.*' matching the CUDA of "
            "your JetPack (12 for JetPack 6, 13 for JetPack 7), or install pycuda"
        ) from None


class CudaPython(CudaApi):
    name = "cuda-python"

    def __init__(self, device: int = 0, module: Any = None):
        self.rt: Any = module if module is not None else _import_cuda_python()
        self.device = device
        (count,) = self._call("cudaGetDeviceCount")
        if device >= count:
            raise CudaError(f"CUDA device {device} does not exist ({count} device(s) found)")
        self._call("cudaSetDevice", device)

    def _call(self, fn: str, *args: Any) -> tuple[Any, ...]:
        """Call ``cudaXxx`` and check its status; returns the values after the status."""
        result = getattr(self.rt, fn)(*args)
        status, values = (result[0], tuple(result[1:])) if isinstance(result, tuple) else (result, ())
        if int(status) != 0:
            raise CudaError(f"{fn} failed: {self._error_name(status)}")
        return values

    def _error_name(self, status: Any) -> str:
        try:
            ok, name = self.rt.cudaGetErrorName(status)
            text = name.decode() if isinstance(name, bytes) else str(name)
            ok2, desc = self.rt.cudaGetErrorString(status)
            detail = desc.decode() if isinstance(desc, bytes) else str(desc)
            return f"{text} ({detail})" if int(ok) == 0 and int(ok2) == 0 else str(status)
        except Exception:  # naming the error must not hide it
            return str(status)

    def device_name(self) -> str:
        (props,) = self._call("cudaGetDeviceProperties", self.device)
        name = props.name
        return (name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)).strip()

    def compute_capability(self) -> tuple[int, int]:
        attr = self.rt.cudaDeviceAttr
        (major,) = self._call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMajor, self.device)
        (minor,) = self._call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMinor, self.device)
        return int(major), int(minor)

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._call("cudaMemGetInfo")
        return int(free), int(total)

    def malloc(self, nbytes: int) -> int:
        (ptr,) = self._call("cudaMalloc", max(nbytes, 1))
        return int(ptr)

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def host_alloc(self, nbytes: int) -> HostBuffer:
        (ptr,) = self._call("cudaMallocHost", max(nbytes, 1))
        return HostBuffer(int(ptr), nbytes)

    def host_free(self, buffer: HostBuffer) -> None:
        self._call("cudaFreeHost", buffer.ptr)

    def _copy(self, dst: int, src: int, nbytes: int, kind: str, stream: int) -> None:
        self._call("cudaMemcpyAsync", dst, src, nbytes, getattr(self.rt.cudaMemcpyKind, kind), stream)

    def copy_htod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyHostToDevice", stream)

    def copy_dtoh(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyDeviceToHost", stream)

    def copy_dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._copy(dst, src, nbytes, "cudaMemcpyDeviceToDevice", stream)

    def memset(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        self._call("cudaMemsetAsync", ptr, value, nbytes, stream)

    def stream_create(self) -> int:
        # non-blocking: no implicit sync with the legacy default stream, which capture forbids
        (stream,) = self._call("cudaStreamCreateWithFlags", self.rt.cudaStreamNonBlocking)
        return int(stream)

    def stream_synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", stream)

    def stream_destroy(self, stream: int) -> None:
        self._call("cudaStreamDestroy", stream)

    def event_create(self) -> Any:
        (event,) = self._call("cudaEventCreate")
        return event

    def event_record(self, event: Any, stream: int) -> None:
        self._call("cudaEventRecord", event, stream)

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._call("cudaEventSynchronize", end)
        (ms,) = self._call("cudaEventElapsedTime", start, end)
        return float(ms)

    def event_destroy(self, event: Any) -> None:
        self._call("cudaEventDestroy", event)

    def begin_capture(self, stream: int) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call("cudaStreamBeginCapture", stream, mode)

    def end_capture(self, stream: int) -> Any:
        (graph,) = self._call("cudaStreamEndCapture", stream)
        try:
            (executable,) = self._call("cudaGraphInstantiate", graph, 0)
        finally:
            self._call("cudaGraphDestroy", graph)  # the executable graph keeps what it needs
        return executable

    def graph_launch(self, graph: Any, stream: int) -> None:
        self._call("cudaGraphLaunch", graph, stream)

    def graph_destroy(self, graph: Any) -> None:
        self._call("cudaGraphExecDestroy", graph)


# ---------------------------------------------------------------- pycuda


class PyCuda(CudaApi):
    """pycuda on the device's primary context (shared with TensorRT). Graph capture needs a pycuda
    with ``Stream.begin_capture`` (2022.1 and later); older ones decode without graphs."""

    name = "pycuda"

    def __init__(self, device: int = 0, module: Any = None):
        if module is None:
            try:
                module = importlib.import_module("pycuda.driver")
            except ImportError:
                raise UsageError("pycuda is not installed: pip install pycuda (or install cuda-python)") from None
        self.drv: Any = module
        try:
            self.drv.init()
            count = self.drv.Device.count()
            if device >= count:
                raise CudaError(f"CUDA device {device} does not exist ({count} device(s) found)")
            self.dev = self.drv.Device(device)
            self.context = self.dev.retain_primary_context()
            self.context.push()
        except self.drv.Error as exc:
            raise CudaError(f"pycuda could not open CUDA device {device}: {exc}") from None
        self._allocations: dict[int, Any] = {}
        self._host: dict[int, Any] = {}
        self._streams: dict[int, Any] = {}
        self._graph_streams: dict[int, Any] = {}
        self.supports_graphs = hasattr(self.drv.Stream, "begin_capture")

    def _guard(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.drv.Error as exc:
            raise CudaError(f"{what} failed: {exc}") from None

    def device_name(self) -> str:
        return str(self._guard("cuDeviceGetName", self.dev.name))

    def compute_capability(self) -> tuple[int, int]:
        major, minor = self._guard("cuDeviceComputeCapability", self.dev.compute_capability)
        return int(major), int(minor)

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._guard("cuMemGetInfo", self.drv.mem_get_info)
        return int(free), int(total)

    def malloc(self, nbytes: int) -> int:
        allocation = self._guard("cuMemAlloc", self.drv.mem_alloc, max(nbytes, 1))
        ptr = int(allocation)
        self._allocations[ptr] = allocation  # pycuda frees when the object goes
        return ptr

    def free(self, ptr: int) -> None:
        allocation = self._allocations.pop(ptr)
        self._guard("cuMemFree", allocation.free)

    def host_alloc(self, nbytes: int) -> HostBuffer:
        array = self._guard("cuMemHostAlloc", self.drv.pagelocked_empty, (max(nbytes, 1),), np.uint8)
        ptr = int(array.ctypes.data)
        self._host[ptr] = array
        return HostBuffer(ptr, nbytes)

    def host_free(self, buffer: HostBuffer) -> None:
        array = self._host.pop(buffer.ptr)
        base = getattr(array, "base", None)
        if base is not None and hasattr(base, "free"):
            self._guard("cuMemFreeHost", base.free)

    def _stream(self, stream: int) -> Any:
        return self._streams[stream] if stream else None

    def copy_htod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        view = (ctypes.c_char * nbytes).from_address(src)
        self._guard("cuMemcpyHtoDAsync", self.drv.memcpy_htod_async, dst, view, self._stream(stream))

    def copy_dtoh(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        view = (ctypes.c_char * nbytes).from_address(dst)
        self._guard("cuMemcpyDtoHAsync", self.drv.memcpy_dtoh_async, view, src, self._stream(stream))

    def copy_dtod(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        self._guard("cuMemcpyDtoDAsync", self.drv.memcpy_dtod_async, dst, src, nbytes, self._stream(stream))

    def memset(self, ptr: int, value: int, nbytes: int, stream: int) -> None:
        self._guard("cuMemsetD8Async", self.drv.memset_d8_async, ptr, value, nbytes, self._stream(stream))

    def stream_create(self) -> int:
        stream = self._guard("cuStreamCreate", self.drv.Stream)
        handle = int(stream.handle)
        self._streams[handle] = stream
        return handle

    def stream_synchronize(self, stream: int) -> None:
        self._guard("cuStreamSynchronize", self._streams[stream].synchronize)

    def stream_destroy(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def event_create(self) -> Any:
        return self._guard("cuEventCreate", self.drv.Event)

    def event_record(self, event: Any, stream: int) -> None:
        self._guard("cuEventRecord", event.record, self._stream(stream))

    def event_elapsed_ms(self, start: Any, end: Any) -> float:
        self._guard("cuEventSynchronize", end.synchronize)
        return float(self._guard("cuEventElapsedTime", start.time_till, end))

    def event_destroy(self, event: Any) -> None:
        return None  # pycuda destroys an event with its object

    def begin_capture(self, stream: int) -> None:
        if not self.supports_graphs:
            raise CudaError("this pycuda has no CUDA graph capture (Stream.begin_capture): pip install -U pycuda")
        mode = self.drv.capture_mode.THREAD_LOCAL
        self._guard("cuStreamBeginCapture", self._streams[stream].begin_capture, mode)

    def end_capture(self, stream: int) -> Any:
        graph = self._guard("cuStreamEndCapture", self._streams[stream].end_capture)
        return self._guard("cuGraphInstantiate", graph.instantiate)

    def graph_launch(self, graph: Any, stream: int) -> None:
        self._guard("cuGraphLaunch", graph.launch, self._streams[stream])

    def graph_destroy(self, graph: Any) -> None:
        return None  # pycuda destroys an executable graph with its object

    def close(self) -> None:
        self.context.pop()


# ---------------------------------------------------------------- choice


def open_cuda(device: int = 0, prefer: str | None = None) -> CudaApi:
    """The first CUDA binding that imports, in :data:`IMPLEMENTATIONS` order (or ``prefer``)."""
    order = IMPLEMENTATIONS if prefer is None else (prefer,)
    unknown = [name for name in order if name not in IMPLEMENTATIONS]
    if unknown:
        raise UsageError(f"unknown CUDA binding {unknown[0]!r}: choose {' or '.join(IMPLEMENTATIONS)}")
    reasons = []
    for name in order:
        try:
            return CudaPython(device) if name == "cuda-python" else PyCuda(device)
        except UsageError as exc:  # not installed: try the next
            reasons.append(str(exc))
    raise UsageError("no CUDA Python binding: " + "; ".join(reasons))


def available_binding() -> str | None:
    """The binding :func:`open_cuda` would use, by import alone (no device touched), or None."""
    for name, module in (("cuda-python", "cuda.bindings.runtime"), ("cuda-python", "cuda.cudart"),
                         ("pycuda", "pycuda.driver")):  # fmt: skip
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return name
    return None
