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
class OpSpec:
    name: str
    doc: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttrSpec, ...]
    reference: Callable[..., Any] = field(compare=False, repr=False)
    domain: str = DOMAIN
    version: int = OPSET_VERSION

    @property
    def qualified_name(self) -> str:
        return f"{self.domain}::{self.name}"

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
