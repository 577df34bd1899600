"""Perplexity: the protocol on a model with known outputs, and agreement with transformers."""

from __future__ import annotations

import math

import pytest
import torch
from hf_oracle import hf_classes, save_random_checkpoint
from tolerances import PERPLEXITY_REL

from jetmamba.calibration.checkpoint import load_model, save_checkpoint
from jetmamba.calibration.data import read_text, tokenize
from jetmamba.calibration.evaluate import perplexity
from jetmamba.calibration.tokenizer import ByteTokenizer


class Uniform(torch.nn.Module):
    """Equal logits everywhere: perplexity is exactly the vocabulary size."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, ids):
        self.calls.append(tuple(ids.shape))
        return torch.zeros(*ids.shape, self.vocab)


def test_protocol_counts_and_uniform_model():
    model = Uniform(50)
    r = perplexity(model, torch.arange(1000) % 50, 64, batch_size=4, show_progress=False)
    assert r.windows == 15 and r.tokens == 960 and r.predictions == 15 * 63
    assert math.isclose(r.perplexity, 50, rel_tol=1e-6)  # fp32 per-token losses
    assert model.calls == [(4, 64)] * 3 + [(3, 64)]


def _hf_perplexity(hf, tokens, seq_len):
    windows = tokens[: tokens.numel() // seq_len * seq_len].view(-1, seq_len)
    total, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = hf(w[None]).logits[0, :-1].double()
            total += float(torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum"))
            n += seq_len - 1
    return math.exp(total / n)


def _rel(a, b):
    return abs(a - b) / b


@pytest.fixture(scope="module")
def wikitext_tokens(wikitext_test):
    return tokenize(read_text(wikitext_test), ByteTokenizer(), max_tokens=8192)


@pytest.mark.parametrize("fixture", ["mamba1_fixture", "mamba2_fixture"])
def test_fixture_perplexity_matches_transformers(request, fixture, wikitext_tokens, tmp_path):
    path = request.getfixturevalue(fixture)
    ours = load_model(path)
    hf = hf_classes("mamba2" if ours.config.arch == "mamba2" else "mamba")[1].from_pretrained(path, dtype=torch.float32)
    theirs = _hf_perplexity(hf.eval(), wikitext_tokens, 2048)
    r = perplexity(ours, wikitext_tokens, 2048, show_progress=False)
    assert r.windows == 4 and r.perplexity < 10
    assert _rel(r.perplexity, theirs) <= PERPLEXITY_REL["vs_transformers"], (r.perplexity, theirs)
    # the same weights written in mamba_ssm's format evaluate the same
    save_checkpoint(ours, tmp_path / "ssm", format="mamba_ssm")
    copy = perplexity(load_model(tmp_path / "ssm"), wikitext_tokens, 2048, show_progress=False).perplexity
    assert _rel(copy, r.perplexity) <= PERPLEXITY_REL["format_copy"]


@pytest.mark.parametrize("name", ["mamba1", "falcon_mamba", "mamba2-groups"])
def test_random_config_perplexity_matches_transformers(tmp_path, name):
    hf = save_random_checkpoint(name, tmp_path)
    vocab = hf.config.vocab_size
    tokens = torch.randint(0, vocab, (600,), generator=torch.Generator().manual_seed(5))
    ours = perplexity(load_model(tmp_path), tokens, 128, show_progress=False).perplexity
    assert _rel(ours, _hf_perplexity(hf, tokens, 128)) <= PERPLEXITY_REL["vs_transformers"]
