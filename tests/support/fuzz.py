"""Shared pieces of the fuzz tests: one deterministic hypothesis profile, JSON corruptions, and
the check that a CLI run ended in one clean line.

Every fuzz test runs derandomized and without the example database, so CI sees the same cases
on every run; ``max_examples`` is set per test (docs/reliability.md counts them).
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(max_examples: int) -> settings:
    return settings(FUZZ, max_examples=max_examples)


# JSON values of every type, nested a little: what a corrupted field may hold
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([0, -1, 1, 2**31, 2**40, 2**63, 10**9, 10**7])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def dumps(value) -> str:
    """JSON text; NaN and Infinity as Python writes them (json reads them back)."""
    return json.dumps(value, allow_nan=True)


@st.composite
def corrupted_dict(draw, base: dict, keys: list[str] | None = None):
    """``base`` with one to three fields changed: dropped, or replaced by any JSON value (a nested
    field ``a.b`` too)."""
    d = json.loads(json.dumps(base))
    paths = keys or sorted(d)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths)).split(".")
        parent = d
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()) and path[-1] in parent:
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return d


# bytes that are not the JSON the file should hold
bad_json_bytes = st.one_of(
    st.binary(max_size=64),
    st.just(b""),
    st.just(b"\xff\xfe\x00garbage"),
    st.just(b"[" * 5000 + b"]" * 5000),  # nesting deeper than json's recursion limit
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),
    json_values.map(lambda v: dumps(v).encode()),
)


def assert_clean_error(rc: int, err: str, *, contains: str | None = None) -> None:
    """A JetmambaError through the CLI: non-zero exit, exactly one line on stderr, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc not in (0, None), err
    assert len(lines) == 1, err
    assert lines[0].startswith("jetmamba: error: "), err
    assert "Traceback" not in err
    if contains is not None:
        assert contains in lines[0], lines[0]


def is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
