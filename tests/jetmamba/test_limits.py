"""The size bounds: one table in the code, the same one in docs/reliability.md."""

from __future__ import annotations

import re
from pathlib import Path

from jetmamba.limits import LIMITS, describe, implied_parameters

DOC = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


def test_docs_list_the_bounds_of_the_code():
    rows = dict(re.findall(r"^\| `(\w+)` \| (\d+) \|$", DOC.read_text(encoding="utf-8"), flags=re.M))
    assert {k: int(v) for k, v in rows.items()} == describe()


def test_real_models_are_far_inside_the_bounds():
    """Mamba2-8B-like sizes (d_model 4096, 56 layers, vocab 256000, expand 2) pass with room."""
    n = implied_parameters(4096, 56, 256000, 8192, tie_embeddings=False)
    assert n * 10 < LIMITS.parameters
    assert 4096 * 4 <= LIMITS.d_model and 64 * 4 <= LIMITS.n_layer and 256000 * 4 <= LIMITS.vocab_size


def test_unnamed_config_fields_have_a_bound():
    assert LIMITS.config_field("d_model") == LIMITS.d_model
    assert LIMITS.config_field("something_new") == LIMITS.config_int
