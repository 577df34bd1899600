"""A QuantizedModel run through the CUDA kernels (emulated on the CPU) equals the QuantizedModel simulation.

:mod:`jetmamba.plugins.torch_ops` puts the kernels' launchers where the simulation calls the op
references (RMSNormQuant, CausalConv1d, SelectiveScan, HadamardQuant, SSDScan, GatedRMSNormQuant);
the int8 GEMMs and the quantizations between ops stay in PyTorch. The op tests (tests/plugins/<op>/)
check each kernel on random data; these run them on the fixtures' real activations, scales and
states: every op call against its reference on the same inputs, one layer, a whole prefill, and a
prefill followed by single-token steps (the decode kernels, states fed back).
"""

from __future__ import annotations

import inspect
from unittest import mock

import pytest
import torch
from tolerances import assert_close, nmse

import jetmamba.calibration.quantized as quantized_module
from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.quantize import quantize_model
from jetmamba.calibration.recipes import RECIPES
from jetmamba.compiler.ops import reference
from jetmamba.plugins import emulation, torch_ops
from jetmamba.plugins.torch_ops import KernelLaunchError, kernels_in

# the recipes with the online Hadamard before out_proj: Quamba's and MambaQuant's (S-SiLU gate,
# gate_smooth) for Mamba1, Quamba2's (per-channel x, per-group B and C scales, the Hadamard inside
# GatedRMSNormQuant) for Mamba2
CASES = [("mamba1_fixture", "w8a8-quamba"), ("mamba1_fixture", "w8a8-mambaquant"),
         ("mamba2_fixture", "w8a8-quamba2")]  # fmt: skip
OPS = {
    "mamba1": ("rms_norm_quant", "causal_conv1d_quant", "selective_scan_quant", "hadamard_quant"),
    "mamba2": ("rms_norm_quant", "causal_conv1d_quant", "ssd_scan_quant", "gated_rms_norm_quant"),
}

# Kernels and references compute the same fp32 operations in other orders (sums of squares, the
# scans' products, the GPU's exponentials), so on the same inputs an int8 code may go to the
# neighbouring value where its quotient lies within an ulp of a rounding tie (observed: 3 of 7.7
# million codes over the three models and 5 x 2 x 64 tokens; the op tests bound the tie distance
# too), and a scan's fp16 output may round a step apart (3e-4 of them). What each output is:
OUTPUT_KINDS = {
    "rms_norm_quant": ("codes", "exact"),  # y; the residual sum (one fp32 add, then the fp16 store)
    "causal_conv1d_quant": ("codes", "exact"),  # y; the state (the last inputs, copied)
    "selective_scan_quant": ("fp", "fp"),  # y, state: fp16, "kernel.scan.fp16" relative to max |reference|
    "hadamard_quant": ("codes",),
    "ssd_scan_quant": ("fp", "fp"),
    "gated_rms_norm_quant": ("codes",),
}
MAX_TIE_FRACTION = 1e-4  # of an op's int8 outputs over a run (the op tests' bound)

# A scan output a rounding step apart, or a code flipped at a tie, changes everything downstream of
# it in its token (the next op's ties, the next GEMM, the state from then on), so the model's
# outputs are compared as values, by NMSE. Measured over 30 random seeds per model (worst of the
# three models; the median draw of every figure is 0 or below 1e-9):
# - one layer (layers 0 and 3, 2 x 80 tokens, non-zero incoming states): mixer output 2.0e-6, SSM
#   state 3.0e-8 (1e-6 would be every element a whole fp16 rounding step off), conv state 0;
# - whole models, 2 x 32 prefill and prefill 16 + 8 steps: logits 1.2e-4 (1.07e-4 for a prefill:
#   ONNX Runtime's 1e-4 in tests/compiler/test_lowering.py has no margin here), conv state 7.8e-4,
#   SSM state 2.3e-3 (any layer).
# The bounds sit 4x (logits, SSM state) or more above the worst draw, so that a GPU run (other
# exponentials, so other ties) passes too; a kernel bug beyond ties fails the op check above at once.
NMSE_BOUNDS = {
    "layer.out": 1e-5,
    "layer.ssm_state": 1e-6,
    "logits": 5e-4,
    "conv_state": 1e-2,
    "ssm_state": 1e-2,
}


@pytest.fixture(scope="module", autouse=True)
def emulated():
    if emulation.find_compiler() is None:
        pytest.skip("no C++ compiler (g++ / $CXX) for the CUDA emulator")


@pytest.fixture(scope="module")
def quantized(request):
    cache = {}

    def get(fixture, recipe):
        if (fixture, recipe) not in cache:
            model = load_model(request.getfixturevalue(fixture))
            windows = torch.randint(0, 256, (4, 128), generator=torch.Generator().manual_seed(0))
            cache[fixture, recipe] = quantize_model(model, RECIPES[recipe], windows, show_progress=False)
        return cache[fixture, recipe]

    return get


def tokens(shape, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def assert_states_close(got, want) -> None:
    for i, (g, w) in enumerate(zip(got.layers, want.layers, strict=True)):
        assert g.conv.dtype == w.conv.dtype and g.ssm.dtype == w.ssm.dtype, i
        assert nmse(g.conv.float(), w.conv.float()) <= NMSE_BOUNDS["conv_state"], i
        assert nmse(g.ssm.float(), w.ssm.float()) <= NMSE_BOUNDS["ssm_state"], i


def decode_chain(q, ids: torch.Tensor, prompt: int):
    """A prefill of ``prompt`` tokens, then one step per remaining token: the logits of every position."""
    logits, state = q.prefill(ids[:, :prompt])
    steps = [logits]
    for t in range(prompt, ids.shape[1]):
        step_logits, state = q.step(ids[:, t], state)
        steps.append(step_logits[:, None])
    return torch.cat(steps, dim=1), state


def test_twins_have_the_references_signatures():
    for name, twin in torch_ops.TWINS.items():
        assert inspect.signature(twin) == inspect.signature(getattr(reference, name)), name


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_every_custom_op_runs_on_the_kernels(quantized, fixture, recipe):
    """Inside kernels_in each op the architecture uses is called once a layer, through its twin;
    outside, the modules call the references again."""
    q = quantized(fixture, recipe)
    spies = {name: mock.Mock(wraps=twin) for name, twin in torch_ops.TWINS.items()}
    with mock.patch.dict(torch_ops.TWINS, spies), kernels_in(q):
        q.prefill(tokens((1, 4), 0))
    calls = {name: spy.call_count for name, spy in spies.items() if spy.call_count}
    assert calls == dict.fromkeys(OPS[q.config.arch], q.config.n_layer)
    assert quantized_module.rms_norm_quant is reference.rms_norm_quant
    with pytest.raises(ValueError, match="calls an op reference"), kernels_in(torch.nn.Linear(2, 2)):
        pass


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_every_op_call_matches_its_reference(quantized, fixture, recipe):
    """Each kernel call of a prefill and a decode chain against its reference on the very same
    inputs (the chain itself runs on the kernels' outputs)."""
    q = quantized(fixture, recipe)
    seen = {}  # (op, output) -> [outputs, codes off by one]

    def checking(name):
        twin = torch_ops.TWINS[name]

        def run(*args, **kwargs):
            got, want = twin(*args, **kwargs), getattr(reference, name)(*args, **kwargs)
            got_all, want_all = (t if isinstance(t, tuple) else (t,) for t in (got, want))
            for i, (kind, g, w) in enumerate(zip(OUTPUT_KINDS[name], got_all, want_all, strict=True)):
                assert g.dtype == w.dtype and g.shape == w.shape, (name, i)
                counts = seen.setdefault((name, i), [0, 0])
                counts[0] += g.numel()
                if kind == "codes":
                    diff = (g.int() - w.int()).abs()
                    assert int(diff.max()) <= 1, f"{name} output {i}: a code {int(diff.max())} off"
                    counts[1] += int((diff > 0).sum())
                elif kind == "exact":
                    assert torch.equal(g, w), f"{name} output {i}"
                else:
                    scale = w.float().abs().max().clamp_min(1e-30)
                    assert_close(g.float() / scale, w.float() / scale, "kernel.scan.fp16")
            return got

        return run

    with mock.patch.dict(torch_ops.TWINS, {name: checking(name) for name in torch_ops.TWINS}), kernels_in(q):
        decode_chain(q, tokens((2, 24), 3), prompt=16)
    assert {name for name, _ in seen} == set(OPS[q.config.arch])
    for (name, i), (total, flipped) in seen.items():
        assert flipped <= max(1, MAX_TIE_FRACTION * total), f"{name} output {i}: {flipped} of {total} codes off by one"


@pytest.mark.parametrize("layer", [0, -1], ids=["first", "last"])
@pytest.mark.parametrize("fixture,recipe", CASES)
def test_one_layer_through_the_kernels(quantized, fixture, recipe, layer):
    """A layer (its RMSNormQuant, then the mixer) on the inputs and non-zero states the simulation
    gives it: the kernels' residual sum is exact, the mixer output and states within the bounds.
    80 tokens: past the Mamba1 prefill kernel's first 64-step chunk, ten of SSDScan's 8-step chunks."""
    q = quantized(fixture, recipe)
    index = layer % q.config.n_layer
    block = q.layers[index]
    _, state = q.prefill(tokens((2, 16), 1))
    with mock.patch.object(quantized_module, "rms_norm_quant", wraps=reference.rms_norm_quant) as norm:
        q.prefill(tokens((2, 80), 2), state)
    args, kwargs = norm.call_args_list[index]
    with torch.inference_mode():
        x_want, residual_want = reference.rms_norm_quant(*args, **kwargs)
        out_want, state_want = block.mixer(x_want, block.in_scale, state.layers[index])
        x_got, residual_got = torch_ops.rms_norm_quant(*args, **kwargs)
        with kernels_in(q):
            out_got, state_got = block.mixer(x_got, block.in_scale, state.layers[index])
    assert torch.equal(residual_got, residual_want)
    assert int((x_got.int() - x_want.int()).abs().max()) <= 1
    assert out_got.dtype == out_want.dtype
    assert nmse(out_got, out_want) <= NMSE_BOUNDS["layer.out"]
    assert state_got.ssm.dtype == state_want.ssm.dtype
    assert nmse(state_got.ssm.float(), state_want.ssm.float()) <= NMSE_BOUNDS["layer.ssm_state"]
    assert nmse(state_got.conv.float(), state_want.conv.float()) <= NMSE_BOUNDS["conv_state"]


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_prefill_through_the_kernels(quantized, fixture, recipe):
    q = quantized(fixture, recipe)
    ids = tokens((2, 32), 4)
    want, state_want = q.prefill(ids)
    with kernels_in(q):
        got, state_got = q.prefill(ids)
    assert nmse(got, want) <= NMSE_BOUNDS["logits"]
    assert_states_close(state_got, state_want)


@pytest.mark.parametrize("fixture,recipe", CASES)
def test_decode_chain_through_the_kernels(quantized, fixture, recipe):
    """Prefill 16 tokens, then 8 single-token steps (the scans' decode kernels, the states fed back)."""
    q = quantized(fixture, recipe)
    ids = tokens((2, 24), 5)
    want, state_want = decode_chain(q, ids, prompt=16)
    with kernels_in(q):
        got, state_got = decode_chain(q, ids, prompt=16)
    assert nmse(got, want) <= NMSE_BOUNDS["logits"]
    assert_states_close(state_got, state_want)


def test_a_refused_launch_names_the_header():
    with pytest.raises(KernelLaunchError, match=r"jm_hadamard_quant .*plugins/hadamard_quant/hadamard_quant\.h"):
        torch_ops.hadamard_quant(torch.randn(2, 7), out_scale=0.1)  # 7 is no Hadamard order


def test_a_failed_launch_says_why(monkeypatch):
    """A launch the emulator fails carries its message (here: an unknown emulation mode)."""
    lib = torch_ops.library("cpu")
    monkeypatch.setenv("JM_EMU_QUIET", "1")
    monkeypatch.setenv("JM_EMU_MODE", "sideways")
    lib.emu_set_mode(None)  # the mode from the environment, as by default
    with pytest.raises(KernelLaunchError, match="JM_EMU_MODE=sideways"):
        torch_ops.hadamard_quant(torch.randn(2, 8), out_scale=0.1)
