"""The model registry: one name -> one config and one builder.

Like timm's registry, ``create_extractor(name, **kw)`` is the single entry point
and drops ``None`` keyword arguments, so unset CLI options never override a
model's defaults. Preprocessing is derived from :class:`ModelCfg`, never retyped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

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


#: --input-size bounds: below 16 the networks' strides leave no pixels; above 2048 one batch needs tens of GB.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 2048
#: options that only networks have: a perceptual hash has no crop, layer, precision or compilation
NETWORK_ONLY = {"input_size": "--input-size", "resize_size": "--resize-size", "layer": "--layer",
                "compile": "--compile"}


def check_network_options(cfg: ModelCfg, kwargs: dict[str, Any]) -> None:
    """Refuse options that do not apply to ``cfg`` (a hash), so none is silently ignored."""
    if cfg.kind == "torch":
        return
    given = [flag for key, flag in NETWORK_ONLY.items() if kwargs.get(key) not in (None, False)]
    if kwargs.get("amp") not in (None, "auto", "off"):
        given.append("--amp")
    if given:
        raise UsageError(f"{' and '.join(given)} {'do' if len(given) > 1 else 'does'} not apply to {cfg.name}: "
                         f"a perceptual hash is computed from the whole image (no network)")


def check_input_size(cfg: ModelCfg, what: str = "--input-size") -> None:
    """The crop ``cfg`` asks for must be one its network can run at (ViT: fixed; Inception: at least 75)."""
    size = cfg.input_size
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise UsageError(f"{what} {size!r} for {cfg.name}: use an integer from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    fixed = cfg.extra.get("fixed_input_size")
    if fixed and size != fixed:
        raise UsageError(f"{what} {size} for {cfg.name}: this network only runs at {fixed} pixels")
    low = cfg.extra.get("min_input_size", MIN_INPUT_SIZE)
    if size < low:
        raise UsageError(f"{what} {size} for {cfg.name}: this network needs at least {low} pixels")
    if not isinstance(cfg.resize_size, int) or not size <= cfg.resize_size <= 8 * MAX_INPUT_SIZE:
        raise UsageError(f"resize size {cfg.resize_size!r} for {cfg.name}: must be at least the crop ({size})")


def create_extractor(name: str, **kwargs: Any) -> Any:
    """Build a ready-to-use extractor.

    Args:
        name: a registered model name.
        **kwargs: ``weights`` (path), ``device``, ``input_size``, ``resize_size``,
            ``amp``...; ``None`` values are dropped so model defaults apply.

    Raises:
        UsageError: unknown model, missing or mismatched weights, or an option the model
            cannot honour (``--input-size`` on a hash, a crop a ViT cannot run at, ...).
    """
    cfg = get_model_cfg(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    check_network_options(cfg, kwargs)
    if "layer" in kwargs and "layers" not in cfg.extra:
        raise UsageError(f"--layer is not available for {name}: its features come from one layer ({cfg.feature_layer})")
    if "layer" in kwargs and kwargs["layer"] not in cfg.extra["layers"]:
        raise UsageError(f"unknown --layer {kwargs['layer']!r} for {name}; "
                         f"choose from {', '.join(cfg.extra['layers'])}")
    overrides = {k: kwargs.pop(k) for k in ("input_size", "resize_size") if k in kwargs}
    if cfg.extra.get("sizes_from_weights"):
        # the crop is read from the weights file (fine-tuned encoders): the builder applies the overrides
        ext = MODELS[name].builder(cfg, **kwargs, **overrides)
    else:
        if "input_size" in overrides and "resize_size" not in overrides:
            # keep the model's crop ratio when only the crop size changes
            overrides["resize_size"] = scaled_resize(cfg, overrides["input_size"])
        if overrides:
            cfg = replace(cfg, **overrides)
            check_input_size(cfg)
        ext = MODELS[name].builder(cfg, **kwargs)
    if getattr(ext, "weights_path", None) is None and kwargs.get("weights"):
        ext.weights_path = str(kwargs["weights"])
    return ext


def scaled_resize(cfg: ModelCfg, input_size: int) -> int:
    """The resize (short side) that keeps ``cfg``'s resize/crop ratio at crop ``input_size``."""
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
        raise UsageError(f"--input-size {input_size!r}: use an integer from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    return max(input_size, round(input_size * cfg.resize_size / cfg.input_size))
