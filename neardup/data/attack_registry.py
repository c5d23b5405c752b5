"""The attack registry: declared parameter ranges, ``register_attack``, ``check_params`` and pixel helpers.

Why a module of its own: the study's attacks (:mod:`neardup.data.attacks`) and the extended families
(:mod:`neardup.data.attacks_extended`) both register here, so neither imports the other at module level.
Import attacks from :mod:`neardup.data.attacks`, which loads every family.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from neardup.errors import UsageError


@dataclass(frozen=True)
class Param:
    """The type and valid range of one attack parameter, declared with the attack.

    Ranges keep every configured attack cheap and meaningful (``scale ratio 200`` would make a
    40000-fold larger image); they are checked when an attack set is loaded, before any image work.
    """

    kind: type  # int, float or bool
    lo: float | None = None
    hi: float | None = None
    odd: bool = False  # kernel sizes

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false"
        what = "an odd integer" if self.odd else "an integer" if self.kind is int else "a number"
        return f"{what} in [{self.lo:g}, {self.hi:g}]"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid, or None."""
        if self.kind is bool:
            return None if isinstance(value, bool) else f"is not {self.describe()}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"is not {self.describe()}"
        if self.kind is int and not isinstance(value, int):
            return f"is not {self.describe()}"
        if not math.isfinite(value):
            return "is not a finite number"
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            return f"is outside its range [{self.lo:g}, {self.hi:g}]"
        if self.odd and value % 2 == 0:
            return f"is not {self.describe()}"
        return None


def Int(lo: int, hi: int, odd: bool = False) -> Param:  # noqa: N802 - reads like a type in declarations
    return Param(int, lo, hi, odd)


def Float(lo: float, hi: float) -> Param:  # noqa: N802
    return Param(float, lo, hi)


BOOL = Param(bool)


@dataclass(frozen=True)
class AttackDef:
    name: str
    fn: Callable[..., Image.Image]
    doc: str
    params: dict[str, Param] = field(default_factory=dict)
    required: frozenset[str] = frozenset()


ATTACKS: dict[str, AttackDef] = {}


def register_attack(name: str, **params: Param) -> Callable[[Callable[..., Image.Image]], Callable[..., Image.Image]]:
    """Register ``fn`` as attack ``name`` (its family in per-family reports), with its parameters' ranges.

    Every parameter of ``fn`` after ``(img, rng)`` must be declared, so no attack runs unchecked.
    """

    def deco(fn: Callable[..., Image.Image]) -> Callable[..., Image.Image]:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} registered twice")
        sig = list(inspect.signature(fn).parameters.values())[2:]
        if {p.name for p in sig} != set(params):
            raise ValueError(f"attack {name!r}: declared parameters {sorted(params)} differ from "
                             f"the function's {[p.name for p in sig]}")
        required = frozenset(p.name for p in sig if p.default is inspect.Parameter.empty)
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        ATTACKS[name] = AttackDef(name, fn, doc, dict(params), required)
        return fn

    return deco


def check_params(attack: str, params: Any) -> None:
    """Refuse an unknown attack, unknown or missing parameters, wrong types and values out of range.

    Raises:
        UsageError: one line naming the attack, the parameter, the value and the valid range.
    """
    if not isinstance(attack, str) or attack not in ATTACKS:
        raise UsageError(f"unknown attack {attack!r}; known: {', '.join(sorted(ATTACKS))}")
    d = ATTACKS[attack]
    if not isinstance(params, Mapping):
        raise UsageError(f"attack {attack!r}: params must be a mapping of parameter names to values, got {params!r}")
    unknown = sorted(str(k) for k in params if k not in d.params)
    if unknown:
        known = ", ".join(f"{k} ({p.describe()})" for k, p in d.params.items()) or "none"
        raise UsageError(f"attack {attack!r} has no parameter {unknown[0]!r}; its parameters: {known}")
    missing = sorted(d.required - set(params))
    if missing:
        raise UsageError(f"attack {attack!r} needs parameter {missing[0]!r} ({d.params[missing[0]].describe()})")
    for k, v in params.items():
        why = d.params[k].problem(v)
        if why:
            raise UsageError(f"attack {attack!r} parameter {k!r} = {v!r} {why}")


# --------------------------------------------------------------------------- pixel helpers
def to_float(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32) / 255.0


def to_img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def resize_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return img if img.size == size else img.resize(size, Image.Resampling.BICUBIC)
