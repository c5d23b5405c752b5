"""The model registry: one name -> one config and one builder.

Like timm's registry, ``create_extractor(name, **kw)`` is the single entry point
and drops ``None`` keyword arguments, so unset CLI options never override a
model's defaults. Preprocessing is derived from :class:`ModelCfg`, never retyped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from neardup.errors import UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelCfg:
    """Everything needed to build a model's preprocessing and describe its weights."""

    name: str
    num_features: int
    metric: str = "cosine"  # "cosine" for float features, "hamming" for packed bits
    kind: str = "torch"  # "torch" | "hash"
    input_size: int = 224  # centre crop side
    resize_size: int = 256  # short side before the crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_format: str = ""  # what --weights expects, in words
    weights_hint: str = ""  # where weights come from when --weights is not given
    feature_layer: str = ""  # which layer the features are taken from
    family: str = ""  # groups models for listings and benchmarks
    paper: str = ""
    license: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def preprocessing(self) -> dict[str, Any]:
        """The fields that change features; a feature store records them."""
        return {"input_size": self.input_size, "resize_size": self.resize_size,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}


Builder = Callable[..., Any]  # (cfg, weights=None, device=..., **kw) -> Extractor


@dataclass(frozen=True)
class ModelEntry:
    cfg: ModelCfg
    builder: Builder


MODELS: dict[str, ModelEntry] = {}


def register_model(cfg: ModelCfg) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``cfg.name``."""

    def deco(builder: Builder) -> Builder:
        if cfg.name in MODELS:
            raise ValueError(f"model {cfg.name!r} registered twice")
        MODELS[cfg.name] = ModelEntry(cfg, builder)
        return builder

    return deco


def _ensure_registered() -> None:
    import neardup.extract.models  # noqa: F401  (registers every model)


def list_models() -> list[ModelCfg]:
    _ensure_registered()
    return [e.cfg for e in MODELS.values()]


def get_model_cfg(name: str) -> ModelCfg:
    _ensure_registered()
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; run `neardup models` to list them "
                         f"({', '.join(sorted(MODELS))})")
    return MODELS[name].cfg


def create_extractor(name: str, **kwargs: Any) -> Any:
    """Build a ready-to-use extractor.

    Args:
        name: a registered model name.
        **kwargs: ``weights`` (path), ``device``, ``input_size``, ``resize_size``,
            ``amp``...; ``None`` values are dropped so model defaults apply.

    Raises:
        UsageError: unknown model, missing or mismatched weights.
    """
    cfg = get_model_cfg(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "layer" in kwargs and "layers" not in cfg.extra:
        raise UsageError(f"--layer is not available for {name}: its features come from one layer ({cfg.feature_layer})")
    if "layer" in kwargs and kwargs["layer"] not in cfg.extra["layers"]:
        raise UsageError(f"unknown --layer {kwargs['layer']!r} for {name}; choose from {', '.join(cfg.extra['layers'])}")
    overrides = {k: kwargs.pop(k) for k in ("input_size", "resize_size") if k in kwargs}
    if "input_size" in overrides and "resize_size" not in overrides:
        # keep the model's crop ratio when only the crop size changes
        overrides["resize_size"] = round(overrides["input_size"] * cfg.resize_size / cfg.input_size)
    if overrides:
        cfg = replace(cfg, **overrides)
    return MODELS[name].builder(cfg, **kwargs)
