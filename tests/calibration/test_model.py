"""The fp reference model against transformers (the oracle), and its decode path against itself."""

from __future__ import annotations

import pytest
import torch
from hf_oracle import RANDOM_CONFIGS, hf_logits, save_random_checkpoint
from tolerances import assert_close

from jetmamba.calibration.arch import Mamba1Config, Mamba2Config
from jetmamba.calibration.checkpoint import load_model
from jetmamba.calibration.model import MambaLM

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def random_checkpoints(tmp_path_factory):
    """name -> (checkpoint dir, the transformers model it was saved from)."""
    root = tmp_path_factory.mktemp("random")
    return {
        name: (root / name, save_random_checkpoint(name, root / name, seed=i)) for i, name in enumerate(RANDOM_CONFIGS)
    }


def _ids(vocab: int, b: int, l: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (b, l), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(RANDOM_CONFIGS))
@pytest.mark.parametrize("scan_impl", ["auto", "ref"])
def test_random_configs_match_transformers(random_checkpoints, name, scan_impl):
    path, hf = random_checkpoints[name]
    ours = load_model(path, scan_impl=scan_impl)
    ids = _ids(ours.config.vocab_size, 2, 37)
    with torch.no_grad():
        assert_close(ours(ids), hf_logits(hf, ids), "logits.vs_transformers")


def test_pytorch_scan_paths_match_transformers(random_checkpoints):
    """The device-agnostic PyTorch scans (what GPUs without mamba_ssm run) on the CPU."""
    for name in ("mamba1", "mamba2-groups"):
        path, hf = random_checkpoints[name]
        ours = load_model(path, scan_impl="parallel")
        ids = _ids(ours.config.vocab_size, 2, 41)
        with torch.no_grad():
            assert_close(ours(ids), hf_logits(hf, ids), "logits.vs_transformers")


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
def test_shared_fixtures_match_transformers(request, fixture):
    from hf_oracle import hf_classes
    from transformers import AutoModelForCausalLM  # noqa: F401  (import check)

    path = request.getfixturevalue(fixture)
    ours = load_model(path)
    model_type = "mamba2" if ours.config.arch == "mamba2" else "mamba"
    hf = hf_classes(model_type)[1].from_pretrained(path, dtype=torch.float32).eval()
    ids = _ids(256, 2, 300)
    with torch.no_grad():
        assert_close(ours(ids), hf_logits(hf, ids), "logits.vs_transformers")


@pytest.mark.parametrize(
    "name", ["mamba1", "mamba1-bias-untied", "falcon_mamba", "mamba2-groups", "mamba2-g4-untied-limit"]
)
def test_prefill_then_steps_equals_full_forward(random_checkpoints, name):
    path, _ = random_checkpoints[name]
    model = load_model(path)
    ids = _ids(model.config.vocab_size, 3, 20 + 32)
    with torch.no_grad():
        full = model(ids)
        logits, state = model.prefill(ids[:, :20])
        steps = [logits]
        for t in range(20, ids.shape[1]):
            step_logits, state = model.step(ids[:, t], state)
            steps.append(step_logits[:, None])
    assert_close(torch.cat(steps, 1), full, "logits.decode")


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
def test_fixture_decode_32_steps(request, fixture):
    model = load_model(request.getfixturevalue(fixture))
    ids = _ids(256, 1, 100 + 32, seed=3)
    with torch.no_grad():
        full = model(ids)
        _, state = model.prefill(ids[:, :100])
        for t in range(100, ids.shape[1] - 1):
            step_logits, state = model.step(ids[:, t], state)
            assert_close(step_logits, full[:, t], "logits.decode")


def test_chunked_prefill_continues_the_state(random_checkpoints):
    """prefill(a) then prefill(b, state) equals prefill(a ++ b): state in, state out."""
    for name in ("mamba1", "mamba2-groups"):
        model = load_model(random_checkpoints[name][0])
        ids = _ids(model.config.vocab_size, 2, 45)
        with torch.no_grad():
            full, full_state = model.prefill(ids)
            _, state = model.prefill(ids[:, :17])
            second, state = model.prefill(ids[:, 17:], state)
        assert_close(second, full[:, 17:], "logits.decode")
        for a, b in zip(state.layers, full_state.layers, strict=True):
            assert_close(a.ssm, b.ssm, "logits.decode")
            assert_close(a.conv, b.conv, "logits.decode")


def test_state_shapes_and_init(random_checkpoints):
    m1 = load_model(random_checkpoints["mamba1"][0])
    s = m1.init_state(3)
    c = m1.config
    assert s.layers[0].conv.shape == (3, c.d_conv - 1, c.d_inner)
    assert s.layers[0].ssm.shape == (3, c.d_inner, c.d_state) and s.layers[0].ssm.dtype == torch.float32
    m2 = load_model(random_checkpoints["mamba2-groups"][0])
    c2 = m2.config
    s2 = m2.init_state(2)
    assert s2.layers[0].conv.shape == (2, c2.d_conv - 1, c2.d_inner + 2 * c2.n_groups * c2.d_state)
    assert s2.layers[0].ssm.shape == (2, c2.n_heads, c2.head_dim, c2.d_state)
    # a zero state is the same as no state
    ids = _ids(c.vocab_size, 3, 9)
    with torch.no_grad():
        assert torch.equal(m1.prefill(ids, s)[0], m1(ids))


@pytest.mark.parametrize("dtype,key", [(torch.float16, "logits.fp16"), (torch.bfloat16, "logits.bf16")])
def test_half_precision_dtypes(mamba1_fixture, mamba2_fixture, dtype, key):
    for path in (mamba1_fixture, mamba2_fixture):
        ref = load_model(path)
        half = load_model(path, dtype=dtype)
        assert half.embedding.weight.dtype == dtype and half.layers[0].mixer.A_log.dtype == torch.float32
        ids = _ids(256, 1, 64)
        with torch.no_grad():
            assert_close(half(ids), ref(ids), key)


def test_init_weights_is_seeded_and_trainable():
    cfg = Mamba1Config(d_model=32, n_layer=2, vocab_size=256, d_inner=64, d_state=8, dt_rank=2)
    a, b = MambaLM(cfg).init_weights(7), MambaLM(cfg).init_weights(7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    ids = _ids(256, 2, 16)
    loss = torch.nn.functional.cross_entropy(a(ids[:, :-1]).reshape(-1, 256), ids[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in a.parameters())
    cfg2 = Mamba2Config(d_model=32, n_layer=1, vocab_size=256, d_inner=64, d_state=8, n_heads=4, head_dim=16)
    m2 = MambaLM(cfg2).init_weights(0)
    m2(ids).sum().backward()
    assert m2.layers[0].mixer.A_log.grad is not None


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
def test_observation_sites(request, fixture):
    """Every declared site is observed once per forward, with the tensor the forward uses."""
    model = load_model(request.getfixturevalue(fixture))
    seen = []
    mixer = model.layers[1].mixer
    mixer.observe = lambda name, t: seen.append((name, tuple(t.shape)))
    ids = _ids(256, 2, 11)
    with torch.no_grad():
        observed = model(ids)
    mixer.observe = None
    assert [n for n, _ in seen] == list(model.adapter.sites)
    assert all(shape[:2] == (2, 11) for _, shape in seen)
    with torch.no_grad():
        assert torch.equal(model(ids), observed)  # observing changes nothing


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_fp16_weights_with_fp32_compute(arch, monkeypatch):
    """compute_dtype: blocks and LM head run in fp32 over fp16-held weights, equal to an fp32 model
    holding the same (fp16-rounded) weights; the held weights stay fp16, the same tensors."""
    import jetmamba.calibration.model as model_module

    monkeypatch.setattr(model_module, "_HEAD_CHUNK_ROWS", 100)  # several LM-head chunks
    config = (
        Mamba1Config(d_model=32, n_layer=2, vocab_size=300, d_inner=64, d_state=8, dt_rank=4)
        if arch == "mamba1"
        else Mamba2Config(
            d_model=32, n_layer=2, vocab_size=300, d_inner=64, d_state=16, n_heads=4, head_dim=16, n_groups=2
        )  # fmt: skip
    )
    half = MambaLM(config, dtype=torch.float16, compute_dtype=torch.float32).init_weights(3)
    full = MambaLM(config, dtype=torch.float32)
    full.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    before = {k: v.data_ptr() for k, v in half.state_dict().items()}
    ids = _ids(300, 2, 23)
    with torch.no_grad():
        assert_close(half(ids), full(ids), "logits.compute_dtype")
        assert torch.equal(half._logits(half.run_blocks(ids)), half(ids))
    assert all(v.dtype in (torch.float16, torch.float32) for v in half.state_dict().values())
    assert {k: v.data_ptr() for k, v in half.state_dict().items()} == before
    assert half.layers[0].mixer.in_proj.weight.dtype == torch.float16
