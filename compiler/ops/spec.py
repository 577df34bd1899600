"""Op specifications: what each jetmamba custom op takes, gives and accepts as attributes.

One spec per op, read by the docs table, the compiler's ``supports()`` check and the tests. The
qualified name ``jetmamba::<Name>`` (domain ``jetmamba``, opset version 1) is the ONNX node's
domain and op_type, the TensorRT plugin's namespace and name, and the reference's name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DOMAIN = "jetmamba"
OPSET_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtypes: tuple[str, ...]  # "int8", "float16", "float32"
    shape: str  # symbolic, e.g. "[b, l, d]"
    doc: str = ""
    optional: bool = False


@dataclass(frozen=True)
class AttrSpec:
    name: str
    kind: str  # "float", "int", "floats"
    doc: str = ""
    minimum: float | None = None  # inclusive; floats: every element
    maximum: float | None = None
    default: Any = None  # None: required
    finite: bool = True  # False: +-inf means "no bound" (dt_max)

    def check(self, value: Any) -> None:
        """Raise ValueError naming the attribute if ``value`` is not allowed."""
        values = value if self.kind == "floats" else [value]
        if self.kind == "floats" and (not isinstance(value, (list, tuple)) or not value):
            raise ValueError(f"attribute {self.name}: expected a non-empty list of floats, got {value!r}")
        for v in values:
            if self.kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"attribute {self.name}: expected an int, got {v!r}")
            if self.kind in ("float", "floats") and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"attribute {self.name}: expected a float, got {v!r}")
            if isinstance(v, float) and (math.isnan(v) or (self.finite and math.isinf(v))):
                raise ValueError(f"attribute {self.name}: {v} is not finite")
            if self.minimum is not None and v < self.minimum:
                raise ValueError(f"attribute {self.name}: {v} is below {self.minimum}")
            if self.maximum is not None and v > self.maximum:
                raise ValueError(f"attribute {self.name}: {v} is above {self.maximum}")


@dataclass(frozen=True)
class Limit:
    """What the op's kernels can run, beyond attribute ranges: ``doc`` for the docs table,
    ``reason(facts)`` a sentence when the facts (static structure such as ``k`` or ``n``, and the
    attributes) are outside it, None when inside."""

    doc: str
    reason: Callable[[dict[str, Any]], str | None] = field(compare=False, repr=False)


@dataclass(frozen=True)
class OpSpec:
    name: str
    doc: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttrSpec, ...]
    reference: Callable[..., Any] = field(compare=False, repr=False)
    limits: tuple[Limit, ...] = ()
    domain: str = DOMAIN
    version: int = OPSET_VERSION

    @property
    def qualified_name(self) -> str:
        return f"{self.domain}::{self.name}"

    def unsupported(self, facts: dict[str, Any]) -> str | None:
        """Why the op set cannot run a node with these facts, or None (see :class:`Limit`)."""
        for limit in self.limits:
            reason = limit.reason(facts)
            if reason is not None:
                return reason
        return None

    def check_attributes(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Complete ``attrs`` with defaults and check every value; ValueError on a bad one."""
        known = {a.name: a for a in self.attributes}
        unknown = sorted(set(attrs) - set(known))
        if unknown:
            raise ValueError(f"{self.qualified_name}: unknown attributes {unknown}")
        out = {}
        for a in self.attributes:
            if a.name in attrs:
                a.check(attrs[a.name])
                out[a.name] = attrs[a.name]
            elif a.default is None:
                raise ValueError(f"{self.qualified_name}: missing attribute {a.name}")
            else:
                out[a.name] = a.default
        return out


SCALE = {"kind": "float", "minimum": 1.1754943508222875e-38}  # a positive normal fp32 scale


def conv_width_limit() -> Limit:
    def reason(facts):
        k = facts.get("k", 0)
        return None if 2 <= k <= 4 else f"kernel width {k} is outside 2..4 (the kernels keep the window in registers)"

    return Limit("kernel width k in 2..4", reason)


MAX_HADAMARD_ORDER = 16384


def hadamard_order_limit(attr_gate: str | None = None) -> Limit:
    """The transform order ``n``: 2^k or 12/20/28/40 * 2^k, at most 16384 (one thread block)."""

    def reason(facts):
        if attr_gate is not None and not facts.get(attr_gate):
            return None
        from jetmamba.calibration.hadamard import is_supported

        n = facts.get("n", 0)
        if not is_supported(n):
            return f"no Hadamard transform of order {n}: supported are 2^k and 12, 20, 28, 40 times 2^k"
        if n > MAX_HADAMARD_ORDER:
            return f"Hadamard order {n} is above {MAX_HADAMARD_ORDER}, the largest one thread block transforms"
        return None

    return Limit(f"n = 2^k or 12/20/28/40 * 2^k, n <= {MAX_HADAMARD_ORDER}", reason)
