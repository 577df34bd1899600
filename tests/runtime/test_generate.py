"""The generation loop: sampling on hand-made logits, stop strings, UTF-8 streaming, EOS, chunked
prefill, refusals; and greedy generation through bundles against the models they came from."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from jetmamba.calibration.tokenizer import ByteTokenizer
from jetmamba.errors import UsageError
from jetmamba.runtime.backends.base import Backend
from jetmamba.runtime.generate import (
    GenerationConfig,
    IncrementalDecoder,
    StopMatcher,
    eos_token_ids,
    filter_logits,
    generate,
    sample,
)

BYTES = ByteTokenizer()


class Scripted(Backend):
    """A backend whose logits make ``script`` the greedy continuation of any prompt: logit 10 for
    the next scripted token, 0 elsewhere. It records its calls; its state is the ids seen so far."""

    name = "scripted"

    def __init__(self, script, vocab: int = 256, max_prompt: int | None = None):
        self.script = list(script)
        self.config = SimpleNamespace(vocab_size=vocab)
        self.max_prompt = max_prompt
        self.prefill_lengths: list[int] = []
        self.decodes = 0

    def _logits(self, position: int) -> torch.Tensor:
        logits = torch.zeros(self.config.vocab_size)
        logits[self.script[min(position, len(self.script) - 1)]] = 10.0
        return logits

    def init_state(self, batch_size):
        return {"seen": []}

    def prefill(self, input_ids, state=None):
        self.check_shape(*input_ids.shape)
        self.prefill_lengths.append(input_ids.shape[1])
        seen = (state or {"seen": []})["seen"] + input_ids[0].tolist()
        logits = torch.zeros(1, input_ids.shape[1], self.config.vocab_size)
        logits[0, -1] = self._logits(0)
        return logits, {"seen": seen}

    def decode(self, input_ids, state):
        self.decodes += 1
        return self._logits(self.decodes)[None], {"seen": state["seen"] + input_ids.tolist()}


def scripted_text(text: str, **kw) -> Scripted:
    return Scripted(list(text.encode("utf-8")), **kw)


# ---------------------------------------------------------------- sampling


def test_greedy_is_the_argmax_whatever_top_k_top_p_and_seed():
    logits = torch.tensor([0.5, 3.0, -1.0, 2.9])
    for seed in (0, 1, 2):
        assert sample(logits, GenerationConfig(temperature=0, top_k=2, top_p=0.1, seed=seed)) == 1


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([1.0, 5.0, 3.0, 2.0, 4.0])
    kept = torch.isfinite(filter_logits(logits, 1.0, top_k=2))
    assert kept.tolist() == [False, True, False, False, True]
    assert torch.isfinite(filter_logits(logits, 1.0, top_k=5)).all()  # k = vocab: no filter


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()

    def kept(p):
        return set(torch.isfinite(filter_logits(logits, 1.0, top_p=p)).nonzero().flatten().tolist())

    assert kept(0.4) == {1}  # the most likely token alone reaches 0.4
    assert kept(0.5 - 1e-4) == {1}
    assert kept(0.75) == {1, 3}  # 0.5 is short of 0.75, 0.5 + 0.3 reaches it
    assert kept(0.9) == {1, 3, 2}
    assert kept(1.0) == {0, 1, 2, 3}
    assert kept(1e-6) == {1}  # never empty


def test_temperature_scales_the_logits():
    logits = torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(filter_logits(logits, 0.5), logits * 2)
    sharp, flat = (filter_logits(logits, t).softmax(-1) for t in (0.25, 4.0))
    assert sharp[2] > logits.softmax(-1)[2] > flat[2] and flat.max() - flat.min() < 0.5


def test_samples_follow_the_filtered_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, -5.0])
    config = GenerationConfig(temperature=1.0, top_k=3)
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample(logits, config, g) for _ in range(4000)])
    counts = torch.bincount(draws, minlength=5).float() / len(draws)
    want = filter_logits(logits, 1.0, top_k=3).softmax(-1)
    assert counts[0] == 0 and counts[4] == 0  # outside the top 3: never drawn
    assert (counts - want).abs().max() < 0.03, (counts, want)


def test_the_same_seed_draws_the_same_tokens():
    logits = torch.zeros(50)  # uniform: every draw is up to the generator

    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return [sample(logits, GenerationConfig(temperature=1.0, seed=seed), g) for _ in range(20)]

    assert draws(3) == draws(3) and draws(3) != draws(4)


def test_seeded_generation_is_reproducible_and_top_k_1_is_greedy(mamba1_fixture):
    from jetmamba.calibration.checkpoint import load_model

    model, prompt = load_model(mamba1_fixture), BYTES.encode("The history of ")
    a, b, c = (generate(model, prompt, max_new_tokens=24, temperature=1.0, seed=s).tokens for s in (5, 5, 6))
    assert a == b and a != c
    greedy = generate(model, prompt, max_new_tokens=24).tokens
    assert generate(model, prompt, max_new_tokens=24, temperature=1.0, top_k=1, seed=9).tokens == greedy


# ---------------------------------------------------------------- text, stop strings, EOS


def run_script(text: str, config: GenerationConfig | None = None, **kw):
    pieces: list[str] = []
    backend = scripted_text(text)
    result = generate(backend, [65], config or GenerationConfig(max_new_tokens=len(text.encode())),
                      tokenizer=BYTES, on_text=pieces.append, **kw)  # fmt: skip
    return result, pieces, backend


def test_max_new_tokens_and_the_streamed_text():
    result, pieces, backend = run_script("hello world")
    assert result.text == "hello world" and "".join(pieces) == result.text
    assert result.stop_reason == "max_tokens" and len(result.tokens) == 11 and result.prompt_tokens == 1
    assert backend.decodes == 10 and len(result.decode_seconds) == 10  # no decode after the last token
    assert result.ttft_seconds >= result.prefill_seconds > 0 and result.decode_tokens_per_second > 0


def test_stop_string_across_tokens_cuts_the_text_before_it():
    result, pieces, _ = run_script("Hello, world! END of text", stop=("END",))
    assert result.text == "Hello, world! " and result.stop_reason == "stop_string"
    assert "".join(pieces) == result.text  # the "E" and "N" were held back, never streamed
    assert bytes(result.tokens).decode() == "Hello, world! END"  # generation stopped at the D


def test_the_earliest_stop_string_wins_and_near_misses_are_released():
    result, _, _ = run_script("one two three", stop=("three", "two"))
    assert result.text == "one " and result.stop_reason == "stop_string"
    m = StopMatcher(["ab", "cd"])
    assert m.feed("x cd ab ") == "x " and m.stopped
    result, pieces, _ = run_script("a\nb\n\nc", stop=("\n\n",))
    assert result.text == "a\nb" and "".join(pieces) == "a\nb"
    result, pieces, _ = run_script("xyz x", stop=("xq",))  # a partial match at the very end is released
    assert result.text == "xyz x" and "".join(pieces) == "xyz x" and result.stop_reason == "max_tokens"


def test_utf8_streaming_never_splits_a_character():
    text = "né ✓ 😀!"
    result, pieces, _ = run_script(text)
    assert result.text == text and "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert any("😀" in p for p in pieces)  # its four tokens came out as one piece
    assert len(result.tokens) == len(text.encode()) == 13  # 4-byte emoji, 3-byte check mark: one token per byte


def test_a_character_cut_by_max_new_tokens_ends_as_a_replacement():
    result, pieces, _ = run_script("ok 😀", GenerationConfig(max_new_tokens=5))  # 3 + 2 of the emoji's 4 bytes
    assert result.text == "ok \ufffd" and "".join(pieces) == result.text


def test_incremental_decoder_holds_back_incomplete_characters():
    decoder = IncrementalDecoder(BYTES)
    out = [decoder.push(b) for b in "é€".encode()]
    assert out == ["", "é", "", "", "€"] and decoder.flush() == ""


def test_stop_matcher_feeds():
    m = StopMatcher(["<end>"])
    assert [m.feed(p) for p in ["abc<", "e", "nx", "<en", "d>zz"]] == ["abc", "", "<enx", "", ""]
    assert m.stopped and m.flush() == ""


def test_eos_ends_generation_unless_ignored():
    text = "ab\x00cd"
    result, pieces, _ = run_script(text, eos_token_ids=(0,))
    assert result.stop_reason == "eos" and result.tokens == [97, 98, 0] and result.text == "ab"
    result, _, _ = run_script(text, eos_token_ids=(0,), ignore_eos=True)
    assert result.stop_reason == "max_tokens" and result.tokens == list(text.encode())


def test_eos_token_ids_come_from_the_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models

    from jetmamba.calibration.tokenizer import HFTokenizer

    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    assert eos_token_ids(HFTokenizer(tmp_path / "tokenizer.json")) == (3,)
    assert eos_token_ids(BYTES) == ()


# ---------------------------------------------------------------- chunked prefill


def test_a_long_prompt_is_prefilled_in_chunks_carrying_the_state():
    backend = scripted_text("xyz", max_prompt=4)
    prompt = list(range(1, 11))
    result = generate(backend, prompt, max_new_tokens=3)
    assert backend.prefill_lengths == [4, 4, 2] and result.prefill_chunks == 3 and result.tokens == list(b"xyz")
    _, state = backend.prefill(torch.tensor([[11]]), {"seen": prompt})
    assert state["seen"] == prompt + [11]
    with pytest.raises(UsageError, match="maximum of 4"):
        backend.prefill(torch.tensor([prompt]))


def test_chunked_prefill_generates_like_one_prefill(mamba1_fixture):
    from jetmamba.calibration.checkpoint import load_model
    from jetmamba.runtime.backends.model import ModelBackend

    model = load_model(mamba1_fixture)
    prompt = BYTES.encode("In the beginning of the twentieth century, the city ")
    whole = generate(ModelBackend(model), prompt, max_new_tokens=16)
    chunked = ModelBackend(model)
    chunked.max_prompt = 7
    got = generate(chunked, prompt, max_new_tokens=16)
    assert got.prefill_chunks == math.ceil(len(prompt) / 7) and got.tokens == whole.tokens


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("prompt,options,expect", [
    ([], {}, "prompt is empty"),
    ([65, 256], {}, "token 256 is outside"),
    ([-1], {}, "token -1 is outside"),
    ([65], {"temperature": -0.5}, "temperature"),
    ([65], {"temperature": float("nan")}, "temperature"),
    ([65], {"top_k": 0}, "top_k"),
    ([65], {"top_p": 0.0}, "top_p"),
    ([65], {"top_p": 1.5}, "top_p"),
    ([65], {"max_new_tokens": 0}, "max_new_tokens"),
    ([65], {"stop": ("",)}, "stop strings"),
    ([65], {"eos_token_ids": (300,)}, "EOS token id 300"),
    ([65], {"colour": "red"}, "colour"),
])  # fmt: skip
def test_bad_input_is_a_usage_error(prompt, options, expect):
    with pytest.raises(UsageError, match=expect):
        generate(scripted_text("abc"), prompt, tokenizer=BYTES, **options)


def test_stop_strings_need_a_tokenizer():
    with pytest.raises(UsageError, match="need a tokenizer"):
        generate(scripted_text("abc"), [65], stop=("b",))


# ---------------------------------------------------------------- bundles against their models

PROMPT_OFFSETS = range(1000, 49000, 12000)  # 4 windows of WikiText-2 test, text the models never saw
NEW_TOKENS = 40
# ONNX Runtime and the simulation add in different orders: a sum within an ulp of an int8 rounding
# tie gives the neighbouring code (docs/compiler.md), and the decode logits drift apart by up to
# ~0.2 over 64 steps. A greedy choice between two tokens closer than this is a tie either may take.
TIE_LOGITS = 0.1


@pytest.fixture(scope="module")
def prompts(wikitext_test):
    text = wikitext_test.read_text(encoding="utf-8")
    return [text[i : i + 48] for i in PROMPT_OFFSETS]


@pytest.fixture(scope="module")
def quantized_bundles(tmp_path_factory, mamba1_fixture, mamba2_fixture):
    from bundles import RECIPE, quantized_bundle

    root = tmp_path_factory.mktemp("bundles")
    return {arch: quantized_bundle(fx, RECIPE[arch], root / arch)
            for arch, fx in (("mamba1", mamba1_fixture), ("mamba2", mamba2_fixture))}  # fmt: skip


def compare_greedy(reference, bundle, prompts):
    """Greedy tokens of both for each prompt; (prompts equal throughout, first differences) where a
    difference is (prompt index, position, the reference's logit margin between the two tokens)."""
    from jetmamba.runtime.backends import open_backend
    from jetmamba.runtime.backends.model import ModelBackend

    ref = ModelBackend(reference)
    equal, differences = 0, []
    with open_backend(bundle, "onnxruntime", device="cpu", threads=1) as backend:
        for k, text in enumerate(prompts):
            ids = BYTES.encode(text)
            want = generate(ref, ids, max_new_tokens=NEW_TOKENS).tokens
            got = generate(backend, ids, max_new_tokens=NEW_TOKENS).tokens
            assert len(got) == len(want) == NEW_TOKENS
            if got == want:
                equal += 1
                continue
            n = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            logits, _ = ref.prefill(torch.tensor([ids + want[:n]]))
            differences.append((k, n, float(logits[0, -1, want[n]] - logits[0, -1, got[n]])))
    return equal, differences


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_greedy_through_the_bundle_equals_the_simulation(quantized_bundles, prompts, arch):
    """Token for token, 40 new tokens after each of 4 prompts (all agree as measured, and 16 of 17
    prompts over 64 tokens); a divergence is tolerated on one prompt at most, and only at a tie of
    the simulation's logits."""
    q, bundle = quantized_bundles[arch]
    equal, differences = compare_greedy(q, bundle, prompts)
    assert equal >= len(prompts) - 1, differences
    assert all(margin <= TIE_LOGITS for _, _, margin in differences), differences


@pytest.mark.parametrize("arch", ["mamba1", "mamba2"])
def test_greedy_through_an_fp16_bundle_equals_the_fp_model(tmp_path, prompts, arch, request):
    from bundles import fp_bundle

    model, bundle = fp_bundle(request.getfixturevalue(f"{arch}_fixture"), tmp_path / "fp16")
    equal, differences = compare_greedy(model, bundle, prompts[:2])
    assert equal == 2, differences


def test_seeded_sampling_through_the_bundle_equals_the_simulation(quantized_bundles, prompts):
    """The generator is the loop's, not the backend's: the same seed draws the same tokens."""
    from jetmamba.runtime.backends import open_backend

    q, bundle = quantized_bundles["mamba2"]
    ids = BYTES.encode(prompts[0])
    options = {"max_new_tokens": 32, "temperature": 0.8, "top_p": 0.95, "seed": 7}
    with open_backend(bundle, "onnxruntime", device="cpu", threads=1) as backend:
        got = generate(backend, ids, tokenizer=BYTES, **options)
        other_seed = generate(backend, ids, **{**options, "seed": 8})
    want = generate(q, ids, tokenizer=BYTES, **options)
    assert got.tokens == want.tokens and got.text == want.text
    assert other_seed.tokens != want.tokens
