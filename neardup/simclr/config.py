"""The settings of a fine-tuning run: one dataclass whose field metadata holds every option's allowed values.

The CLI builds its options from these fields (``neardup/cli/finetune.py``), ``validate()`` checks them, and
``--resume`` compares them (``resume_safe``). Kept free of torch so that ``neardup --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from neardup.errors import UsageError


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option: [lo, hi], either end open or unbounded (None)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"


def _opt(default: Any = dataclasses.MISSING, lo: float | None = None, hi: float | None = None, *,
         lo_open: bool = False, hi_open: bool = False, choices: tuple[Any, ...] | None = None,
         resume_safe: bool = False, why: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A FinetuneConfig field with its allowed values: the one place both validate() and the CLI read them.

    ``resume_safe``: the option may differ on --resume, because it does not change the trained weights.
    """
    meta: dict[str, Any] = {"resume_safe": resume_safe, "why": why}
    if lo is not None or hi is not None:
        meta["range"] = Range(lo, hi, lo_open, hi_open)
    if choices is not None:
        meta["choices"] = choices
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class FinetuneConfig:
    """Every knob of a run (CLI flags / YAML keys map 1:1). Defaults: the small-batch CPU recipe.

    Each field's allowed values live in its metadata (``range``, ``choices``) and are checked by
    :meth:`validate`; the CLI builds its option types from the same metadata.
    """

    images: str
    out: str
    model: str = "efficientnet_lite0"
    weights: str | None = None
    epochs: int = _opt(30, 1)
    batch_size: int = _opt(32, 2, why="NT-Xent needs negatives")  # per process
    image_size: int = _opt(160, 32, 2048)
    optimizer: str = _opt("adamw", choices=("adamw", "lars", "adam"))  # lars for large-batch GPU runs
    lr: float = _opt(1e-4, 0, lo_open=True)  # encoder learning rate before scaling
    head_lr: float = _opt(1e-3, 0, lo_open=True)
    lr_scaling: str = _opt("none", choices=("none", "linear", "sqrt"))  # linear (x B/256), sqrt (x sqrt(B))
    weight_decay: float = _opt(1e-4, 0)
    momentum: float = _opt(0.9, 0, 1, hi_open=True)
    warmup_epochs: float = _opt(1.0, 0)
    temperature: float = _opt(0.1, 0, 10, lo_open=True)
    koleo: float = _opt(0.0, 0)
    head_layers: int = _opt(2, 2, 3)
    proj_dim: int = _opt(128, 1, 65536)
    freeze_bn: bool = True
    freeze_stages: int = _opt(3, 0)  # stem + this many stages get no gradient (0 = train everything)
    sync_bn: bool = False
    attacks: str = "default"
    attack_prob: float = _opt(0.5, 0, 1)
    jitter: float = _opt(0.5, 0, 2.5)  # colour-jitter strength; hue jitter is 0.2 x this and must stay <= 0.5
    min_scale: float = _opt(0.5, 0, 1, lo_open=True)
    #: how the exported encoder (and the validation) sees a whole image: "crop" (the base model's resize + centre
    #: crop) or "squash" (the whole image resized to a square). Training views are the same either way: on
    #: BSDS500, views that kept the image's shape scored lower under squash (extended-set R@1 0.855 vs 0.877)
    fit: str = _opt("crop", choices=("crop", "squash"))
    seed: int = _opt(0, 0, 2**32 - 1)
    workers: int | None = _opt(None, 0, 256, resume_safe=True)
    device: str = _opt("auto", resume_safe=True)
    amp: str = _opt("auto", choices=("auto", "off", "bf16", "fp16"))  # auto: bf16 on GPU, off on CPU
    channels_last: bool = _opt(True, resume_safe=True)  # 2x faster training on CPU too (depthwise convs)
    accumulate: int = _opt(1, 1)
    val_queries: str | None = None  # an attacked folder with manifest.csv
    val_database: str | None = None  # the originals of those queries
    val_distractors: list[str] = _opt(default_factory=list)
    val_every: int = _opt(1, 1, resume_safe=True)
    val_max_queries: int = _opt(0, 0)  # 0 = all
    keep_encoders: bool = _opt(True, resume_safe=True)  # export the encoder at each validated epoch
    resume: bool = _opt(False, resume_safe=True)
    overwrite: bool = _opt(False, resume_safe=True)  # replace the run in --out (its own files only)
    max_steps: int = _opt(0, 0, resume_safe=True)  # stop after this many optimizer steps (0 = no limit)

    def __post_init__(self) -> None:
        # paths may be given as Path objects; the run records them as text (config.yaml, checkpoint)
        for name in ("images", "out", "weights", "attacks", "val_queries", "val_database"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.val_distractors, (list, tuple)):
            self.val_distractors = [os.fspath(d) if isinstance(d, os.PathLike) else d for d in self.val_distractors]

    def validate(self) -> None:
        """Refuse any value out of its field's range or choices (nan/inf included), with one line."""
        types = field_types(type(self))
        for f in dataclasses.fields(self):
            _check_field(f, types[f.name], getattr(self, f.name))
        if bool(self.val_queries) != bool(self.val_database):
            raise UsageError("validation needs both --val-queries and --val-database")
        if self.resume and self.overwrite:
            raise UsageError("--resume continues the run in --out and --overwrite replaces it: give one of them")


def flag(name: str) -> str:
    """The CLI flag of a FinetuneConfig field."""
    return "IMAGES" if name == "images" else "--" + name.replace("_", "-")


def field_types(cls: type | None = None) -> dict[str, Any]:
    """Each field's base type (int, float, bool, str or list) of ``cls`` (FinetuneConfig), Optional unwrapped."""
    out = {}
    for name, hint in typing.get_type_hints(cls or FinetuneConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is list:
            out[name] = list
        else:
            out[name] = args[0] if args else hint
    return out


def _check_field(f: dataclasses.Field, base: Any, value: Any) -> None:
    name = flag(f.name)
    optional = f.default is None
    if value is None and optional:
        return
    meta = f.metadata
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is list:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UsageError(f"{name} must be {'a ' + base.__name__ if base is not list else 'a list of paths'}, "
                         f"got {value!r}")
    if base is float and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    why = f" ({meta['why']})" if meta.get("why") else ""
    if "range" in meta and value not in meta["range"]:
        raise UsageError(f"{name} must be in {meta['range']}, got {value}{why}")
    if "choices" in meta and value not in meta["choices"]:
        raise UsageError(f"{name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")


def run_settings(cfg: Any) -> dict[str, Any]:
    """The run's settings as recorded in config.yaml and the checkpoint: all but how this invocation treats --out
    (resume, overwrite), so a saved config.yaml fed back with --config never carries them over."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("resume", "overwrite")}

