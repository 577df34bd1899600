"""Hostile prompts: empty, longer than a backend's maximum, tokens outside the vocabulary (or not
integers at all). Each is a one-line UsageError before any backend call; a valid prompt longer
than the maximum is chunked by generate, never passed to prefill whole."""

from __future__ import annotations

import pytest
import torch
from fuzz import fuzz
from hypothesis import given
from hypothesis import strategies as st

from jetmamba.calibration.checkpoint import load_model
from jetmamba.errors import UsageError
from jetmamba.runtime.backends.model import ModelBackend
from jetmamba.runtime.generate import GenerationConfig, generate


class Limited(ModelBackend):
    """The fp model behind a backend built for prompts of at most 8 tokens, counting prefill calls."""

    max_prompt = 8

    def __init__(self, model):
        super().__init__(model)
        self.prefills = []

    def prefill(self, input_ids, state=None):
        self.prefills.append(input_ids.shape[1])
        return super().prefill(input_ids, state)


@pytest.fixture(scope="module")
def backend(mamba1_fixture):
    return Limited(load_model(mamba1_fixture))


ONE = GenerationConfig(max_new_tokens=1)


@fuzz(100)
@given(
    prompt=st.lists(st.integers(0, 255), max_size=4).flatmap(
        lambda good: st.tuples(
            st.just(good),
            st.integers(min_value=-(2**70), max_value=2**70).filter(lambda t: not 0 <= t < 256)
            | st.sampled_from([256, -1, 2**63, True, 1.0, "a", None]),
            st.integers(0, 4),
        )
    )
)
def test_tokens_outside_the_vocabulary(backend, prompt):
    good, bad, at = prompt
    ids = good[:at] + [bad] + good[at:]
    backend.prefills.clear()
    with pytest.raises(UsageError, match="outside the model's vocabulary"):
        generate(backend, ids, ONE)
    assert backend.prefills == []


@pytest.mark.parametrize("prompt", [[], torch.zeros(0, dtype=torch.int64), ()])
def test_empty_prompt(backend, prompt):
    with pytest.raises(UsageError, match="the prompt is empty"):
        generate(backend, prompt, ONE)


@fuzz(25)
@given(length=st.integers(9, 40))
def test_longer_than_the_maximum_is_chunked(backend, length):
    ids = torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    backend.prefills.clear()
    result = generate(backend, ids, ONE)
    assert result.prompt_tokens == length and max(backend.prefills) <= 8 and sum(backend.prefills) == length


@pytest.mark.parametrize("shape", [(1, 9), (1, 1000), (1, 0), (0, 0)])
def test_prefill_beyond_the_maximum_is_refused(backend, shape):
    with pytest.raises(UsageError, match="more than this model backend's maximum of 8|the prompt is empty"):
        backend.prefill(torch.zeros(shape, dtype=torch.int64))
