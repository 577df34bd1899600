"""The TensorRT backend's control flow, with a fake ``tensorrt`` module and fake CUDA memory.

NOT a test of TensorRT: the fake engine below does arithmetic a test can predict (logits say which
token came in and how many calls the state has been through), so the backend's own logic is
checked: buffer binding per profile, state ping-pong between the two buffer sets, ``init_state``'s
memset, decode CUDA graphs captured once per (batch, direction) and replayed, consumed-state and
shape errors, and teardown. Real memory (ctypes buffers) stands in for device memory, so every
copy the backend makes is a real copy.
"""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest
import torch
from bundles import fp_bundle

from jetmamba.errors import UsageError
from jetmamba.runtime import build, cudamem
from jetmamba.runtime.backends import tensorrt as backend_module


def test_module_imports_and_says_why_it_cannot_run_here():
    reason = backend_module.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are here")
    assert "TensorRT" in reason or "CUDA" in reason
    assert "\n" not in reason


class FakeCuda(cudamem.CudaApi):
    """CudaApi over host memory; a capture records the stream's work as closures."""

    name = "fake"

    def __init__(self) -> None:
        self.blocks: dict[int, ctypes.Array] = {}
        self.capturing: list | None = None
        self.launches = 0
        self.graphs_made = 0
        self.freed: list[int] = []

    def device_name(self) -> str:
        return "Fake GPU"

    def compute_capability(self) -> tuple[int, int]:
        return 8, 7

    def mem_get_info(self) -> tuple[int, int]:
        return 1 << 30, 1 << 30

    def malloc(self, nbytes: int) -> int:
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return ctypes.addressof(block)

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)

    def host_alloc(self, nbytes: int) -> cudamem.HostBuffer:
        return cudamem.HostBuffer(self.malloc(nbytes), nbytes)

    def host_free(self, buffer: cudamem.HostBuffer) -> None:
        self.freed.append(buffer.ptr)

    def _do(self, fn) -> None:
        if self.capturing is not None:
            self.capturing.append(fn)
        else:
            fn()

    def copy_htod(self, dst, src, nbytes, stream):
        self._do(lambda: ctypes.memmove(dst, src, nbytes))

    copy_dtoh = copy_dtod = copy_htod

    def memset(self, ptr, value, nbytes, stream):
        self._do(lambda: ctypes.memset(ptr, value, nbytes))

    def stream_create(self) -> int:
        return 1

    def stream_synchronize(self, stream) -> None:
        return None

    def stream_destroy(self, stream) -> None:
        return None

    def event_create(self):
        return object()

    def event_record(self, event, stream) -> None:
        return None

    def event_elapsed_ms(self, start, end) -> float:
        return 0.0

    def event_destroy(self, event) -> None:
        return None

    def begin_capture(self, stream) -> None:
        self.capturing = []

    def end_capture(self, stream):
        work, self.capturing = self.capturing, None
        self.graphs_made += 1
        return work

    def graph_launch(self, graph, stream) -> None:
        self.launches += 1
        for fn in graph:
            fn()

    def graph_destroy(self, graph) -> None:
        return None


def _array(ptr, dtype, shape):
    count = int(np.prod(shape))
    raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


class FakeContext:
    """Logits[b, s, :] = calls the state has seen (its first fp16 value) and +100 at the input token;
    every state output = its input + 1."""

    def __init__(self, engine, cuda):
        self.cuda, self.shapes, self.addresses, self.profile = cuda, {}, {}, None
        self.contract = engine.contract

    def set_device_memory(self, ptr, size):
        self.scratch = (ptr, size)

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        return True

    def set_input_shape(self, name, dims):
        self.shapes[name] = tuple(dims)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        shapes, addresses = dict(self.shapes), dict(self.addresses)  # what a graph would freeze

        def run():
            b, s = shapes["input_ids"]
            ids = _array(addresses["input_ids"], np.int64, (b, s))
            first = self.contract.state_inputs[0]
            seen = _array(addresses[first.name], np.float16, shapes[first.name])[:, 0, 0].astype(np.float32)
            logits = _array(addresses["logits"], np.float32, (b, s, self.contract.vocab_size))
            logits[...] = seen[:, None, None]
            np.put_along_axis(logits, ids[..., None], seen[:, None, None] + 100, axis=-1)
            for spec in self.contract.state_inputs:
                src = _array(addresses[spec.name], np.float16, shapes[spec.name])
                dst = _array(addresses[spec.name.replace(".", "_out.")], np.float16, shapes[spec.name])
                dst[...] = src + 1

        self.cuda._do(run)
        return True


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, mamba1_fixture):
    return fp_bundle(mamba1_fixture, tmp_path_factory.mktemp("t") / "m1")[1]


@pytest.fixture
def fake(monkeypatch, tmp_path, bundle):
    from jetmamba.compiler.bundle import verify_bundle
    from jetmamba.runtime import engine as eng

    cuda = FakeCuda()
    contract = eng.io_contract(verify_bundle(bundle))
    trt = types.ModuleType("tensorrt")  # the few names the backend touches

    class Engine:
        num_optimization_profiles = 2

        def __init__(self):
            self.contract = contract

        def get_device_memory_size_for_profile_v2(self, index):
            return 4096 if index == 0 else 256

        def create_execution_context(self, strategy):
            return FakeContext(self, cuda)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"plan" else None

    class ILogger:
        class Severity:
            VERBOSE, WARNING, ERROR, INTERNAL_ERROR = 4, 2, 1, 0

        def __init__(self):
            pass

    trt.Builder, trt.Runtime, trt.ILogger, trt.__version__ = object, Runtime, ILogger, "10.3.0"
    trt.Dims = tuple
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED="user")
    loaded = []
    trt.get_plugin_registry = lambda: types.SimpleNamespace(load_library=loaded.append)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cudamem, "open_cuda", lambda device=0, prefer=None: cuda)
    library = tmp_path / "libjetmamba_plugins.so"
    library.write_bytes(b"ELF")
    monkeypatch.setattr(build, "find_plugin_library", lambda bundle=None, arch=None, tensorrt_version=None: library)
    monkeypatch.setattr(build, "_LOADED", set())
    (tmp_path / "engine.plan").write_bytes(b"plan")
    return cuda, tmp_path / "engine.plan", loaded


def test_prefill_then_decode_ping_pongs_the_state_on_the_device(fake, bundle):
    cuda, plan, loaded = fake
    with backend_module.TensorRTBackend(bundle, engine=plan, max_prompt=16, max_batch=2) as be:
        assert loaded and be.max_prompt == 16 and be.max_batch == 2 and be.name == "tensorrt"
        ids = torch.tensor([[5, 6, 7], [1, 2, 3]])
        logits, state = be.prefill(ids)
        assert logits.dtype == torch.float32 and logits.shape == (2, 3, 256)
        assert torch.equal(logits.argmax(-1), ids) and float(logits[0, 0, 0]) == 0.0  # from the zero state
        assert isinstance(state, backend_module.DeviceState) and state.buffer_set == 1
        assert set(state) == set(be.contract.state_names)
        for step in range(1, 6):
            token = torch.tensor([step, 200 + step])
            logits, state = be.decode(token, state)
            assert logits.shape == (2, 256) and torch.equal(logits.argmax(-1), token)
            assert float(logits[1, 0]) == step  # the state went through prefill + step - 1 decodes
            assert state.buffer_set == (1 + step) % 2
        # decode graphs: one per direction (A->B, B->A) for batch 2, captured after the eager first run
        assert cuda.graphs_made == 2 and cuda.launches == 3
        logits, state = be.prefill(torch.tensor([[9], [9]]), state)  # a chunk continues the sequence
        assert float(logits[0, 0, 0]) == 6.0


def test_init_state_zeroes_and_states_are_consumed(fake, bundle):
    _, plan, _ = fake
    be = backend_module.TensorRTBackend(bundle, engine=plan, max_prompt=8, max_batch=2, cuda_graph=False)
    _, s1 = be.prefill(torch.tensor([[1, 2]]))
    _, s2 = be.decode(torch.tensor([3]), s1)
    with pytest.raises(UsageError, match="consumed"):
        be.decode(torch.tensor([3]), s1)
    with pytest.raises(UsageError, match="batch 1"):
        be.decode(torch.tensor([3, 4]), s2)
    fresh = be.init_state(1)
    logits, _ = be.decode(torch.tensor([4]), fresh)
    assert float(logits[0, 0]) == 0.0  # memset to zero
    with pytest.raises(UsageError, match="maximum of 8"):
        be.prefill(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(UsageError, match="maximum of 2"):
        be.init_state(3)
    with pytest.raises(UsageError, match="does not belong"):
        be.decode(torch.tensor([1]), {"conv_state.0": 0})
    be.close()
    be.close()  # idempotent
    with pytest.raises(UsageError, match="closed"):
        be.init_state(1)


def test_teardown_frees_every_buffer(fake, bundle):
    cuda, plan, _ = fake
    be = backend_module.TensorRTBackend(bundle, engine=plan, max_prompt=8)
    allocated = set(cuda.blocks)
    be.close()
    assert set(cuda.freed) == allocated


def test_a_foreign_engine_is_refused(fake, bundle, tmp_path):
    other = tmp_path / "other.plan"
    other.write_bytes(b"not a plan")
    with pytest.raises(UsageError, match="rebuild with jetmamba build --force"):
        backend_module.TensorRTBackend(bundle, engine=other)
