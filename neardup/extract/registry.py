"""The model registry: one name -> one config, one builder and (for networks) one architecture.

Like timm's registry, ``create_extractor(name, **kw)`` is the single entry point
and drops ``None`` keyword arguments, so unset CLI options never override a
model's defaults. Preprocessing is derived from :class:`ModelCfg`, never retyped.
Adding a model is one :func:`register_model` call: everything that lists, counts,
tests or fine-tunes models (``neardup models``, the registry-driven tests,
``finetune --freeze-stages``, ``--model finetuned``) reads the entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack

from neardup.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

    from neardup.extract.base import Extractor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ResNet layout (stem, then layer1-4), shared by the torchvision, SimCLR v1 and BYOL entries
RESNET_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
#: what ``engine=`` accepts: ``auto`` is ONNX Runtime on CPU when its export matches PyTorch; ``onnx-int8`` is
#: its statically quantised graph (faster on CPUs, features in their own space: see ``extract/onnx_engine.py``)
ENGINES = ("auto", "torch", "onnx", "onnx-int8")


def check_engine(engine: str) -> None:
    """Refuse an engine name :data:`ENGINES` does not hold (one line listing those it does)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown --engine {engine!r}; use {', '.join(ENGINES)}")


#: how an image becomes the network's square input (ModelCfg.fit)
FITS = ("crop", "squash")


@dataclass(frozen=True)
class ModelCfg:
    """Everything needed to build a model's preprocessing and describe its weights."""

    name: str
    num_features: int
    metric: str = "cosine"  # "cosine" for float features, "hamming" for packed bits
    kind: str = "torch"  # "torch" | "hash"
    input_size: int = 224  # centre crop side (square side with fit="squash")
    resize_size: int = 256  # short side before the crop
    #: "crop": resize the short side, centre crop (ImageNet's evaluation); "squash": the whole image resized to
    #: a square, aspect not kept, nothing cut (caption bars, pads and overlays keep the photo in view)
    fit: str = "crop"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_format: str = ""  # what --weights expects, in words
    weights_hint: str = ""  # where weights come from when --weights is not given
    feature_layer: str = ""  # which layer the features are taken from
    family: str = ""  # groups models for listings and benchmarks
    paper: str = ""
    license: str = ""
    #: the feature network's stages in input order (stem first), each a group of submodule paths
    #: (``"net.blocks.0"``): what ``finetune --freeze-stages N`` freezes; empty when not offered
    stages: tuple[tuple[str, ...], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["stages"] = [list(group) for group in self.stages]
        return d

    def preprocessing(self) -> dict[str, Any]:
        """The fields that change features; a feature store records them."""
        d = {"input_size": self.input_size, "resize_size": self.resize_size,
             "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}
        if self.fit != "crop":  # recorded only when not the default: stores written before it stay comparable
            d["fit"] = self.fit
        return d


class ExtractorOptions(TypedDict, total=False):
    """How an extractor runs, never what it computes: the options every builder passes on to its extractor.

    ``device``: auto|cpu|cuda[:N]; ``amp``: auto|off|fp16|bf16; ``engine``: auto|torch|onnx|onnx-int8;
    ``calibration``: images that calibrate ``onnx-int8`` (None: photos bundled with scikit-image);
    ``compile``: torch.compile the network; ``channels_last``: None = on for CUDA.
    """

    device: str | None
    amp: str | None
    engine: str
    calibration: str | None
    compile: bool
    channels_last: bool | None


class Builder(Protocol):
    """The one builder signature: ``(cfg, *, weights=None, layer=None, **options) -> Extractor``.

    ``cfg`` already carries the crop the caller asked for (``create_extractor`` applies
    ``input_size``/``resize_size``), except for entries that read it from their weights file
    (``extra["sizes_from_weights"]``), which receive ``input_size``/``resize_size`` as keywords.
    ``weights=None`` means the model's default weights (bundled or in torch's hub cache).
    """

    def __call__(self, cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
                 **options: Unpack[ExtractorOptions]) -> Extractor: ...


#: (cfg) -> the feature network with untrained weights, forward (B, 3, H, W) -> (B, num_features)
Arch = Callable[[ModelCfg], "nn.Module"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its config, how to build an extractor, and how to build its bare network.

    ``arch`` is None for models without a network (hashes) or whose network depends on a file
    (``finetuned``). ``weights_found()`` says whether building without ``--weights`` would find the
    weights here; by default, whether one of ``cfg.extra["files"]`` is in torch's hub cache.
    """

    cfg: ModelCfg
    builder: Builder
    arch: Arch | None = None
    weights_found: Callable[[], bool] | None = None


MODELS: dict[str, ModelEntry] = {}


def register_model(cfg: ModelCfg, arch: Arch | None = None,
                   weights_found: Callable[[], bool] | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``cfg.name``, with the bare architecture ``arch`` for networks."""

    def deco(builder: Builder) -> Builder:
        if cfg.name in MODELS:
            raise ValueError(f"model {cfg.name!r} registered twice")
        MODELS[cfg.name] = ModelEntry(cfg, builder, arch, weights_found)
        return builder

    return deco


def unregister_model(name: str) -> None:
    """Remove ``name`` (for tests and plugins that register a model for a while)."""
    MODELS.pop(name, None)


def _ensure_registered() -> None:
    import neardup.extract.models  # noqa: F401  (registers every model)


def list_models() -> list[ModelCfg]:
    _ensure_registered()
    return [e.cfg for e in MODELS.values()]


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``.

    Raises:
        UsageError: unknown name, listing the registered ones.
    """
    _ensure_registered()
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; run `neardup models` to list them "
                         f"({', '.join(sorted(MODELS))})")
    return MODELS[name]


def get_model_cfg(name: str) -> ModelCfg:
    return get_entry(name).cfg


def builder_name(model: str) -> str:
    """The registry name that builds features recorded as ``model``: ``finetuned:BASE`` -> ``finetuned``.

    Why: a feature store or index records the extractor's own name, and a fine-tuned encoder names
    itself after its base model; rebuilding it needs the registry entry that reads the weights file.
    """
    return model.split(":", 1)[0] if ":" in model else model


def weights_found_locally(name: str) -> bool:
    """True when building ``name`` without ``--weights`` would find its weights (or it needs none)."""
    entry = get_entry(name)
    if entry.cfg.kind == "hash":
        return True
    if entry.weights_found is not None:
        return entry.weights_found()
    files = entry.cfg.extra.get("files")
    if not files:
        return False
    from neardup.extract.weights import find_in_hub_cache

    return find_in_hub_cache(list(files)) is not None


#: --input-size bounds: below 16 the networks' strides leave no pixels; above 2048 one batch needs tens of GB.
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 16, 2048
#: options that only networks have: a perceptual hash has no crop, layer, precision or compilation
NETWORK_ONLY = {"input_size": "--input-size", "resize_size": "--resize-size", "layer": "--layer",
                "compile": "--compile"}


def check_network_options(cfg: ModelCfg, kwargs: dict[str, Any]) -> None:
    """Refuse options that do not apply to ``cfg`` (a hash), so none is silently ignored."""
    engine = kwargs.get("engine")
    if engine is not None:
        check_engine(engine)
    if kwargs.get("calibration") is not None and engine != "onnx-int8":
        raise UsageError(f"--calibration applies to --engine onnx-int8, not to --engine {engine or 'torch'}")
    if cfg.kind == "torch":
        return
    if engine in ("onnx", "onnx-int8"):
        raise UsageError(f"--engine {engine} applies to networks; {cfg.name} is computed without one")
    given = [flag for key, flag in NETWORK_ONLY.items() if kwargs.get(key) not in (None, False)]
    if kwargs.get("amp") not in (None, "auto", "off"):
        given.append("--amp")
    if given:
        raise UsageError(f"{' and '.join(given)} {'do' if len(given) > 1 else 'does'} not apply to {cfg.name}: "
                         f"a perceptual hash is computed from the whole image (no network)")


def check_fit(fit: Any, where: str) -> str:
    """``fit`` if it is one of :data:`FITS` (from a config, a pack or a weights file), else one Error line."""
    if fit not in FITS:
        raise UsageError(f"unknown fit {fit!r} {where}: use one of {', '.join(FITS)}")
    return str(fit)


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
    check_fit(cfg.fit, f"for {cfg.name}")
    if not isinstance(cfg.resize_size, int) or not size <= cfg.resize_size <= 8 * MAX_INPUT_SIZE:
        raise UsageError(f"resize size {cfg.resize_size!r} for {cfg.name}: must be at least the crop ({size})")


def create_extractor(name: str, *, weights: str | None = None, device: str | None = None, amp: str | None = None,
                     engine: str | None = None, input_size: int | None = None, resize_size: int | None = None,
                     layer: str | None = None, compile: bool | None = None, channels_last: bool | None = None,
                     calibration: str | None = None, **model_specific: Any) -> Extractor:
    """Build a ready-to-use extractor.

    Args:
        name: a registered model name.
        weights: checkpoint path (None: the model's default weights).
        device: auto|cpu|cuda[:N] (None: auto). amp: auto|off|fp16|bf16 (None: auto, bf16 on CUDA).
        engine: torch|onnx|onnx-int8|auto (None: torch). ``auto`` runs ONNX Runtime on CPU when its export
            matches PyTorch within 1e-4; the commands pass ``auto``, while library callers that want the network
            itself (fine-tuning, tests) keep the plain PyTorch default and pay no export. ``onnx-int8`` runs
            the statically quantised graph (features in their own space).
        calibration: images (folder, list file) that calibrate ``onnx-int8`` (None: bundled photos).
        input_size/resize_size: crop and short side (None: the model's; the crop alone keeps the ratio).
        layer: feature layer for models that offer several. compile: torch.compile the network.
        **model_specific: passed to the builder as is.
        ``None`` values are dropped, so model defaults apply.

    Raises:
        UsageError: unknown model, missing or mismatched weights, or an option the model
            cannot honour (``--input-size`` on a hash, a crop a ViT cannot run at, ...).
    """
    entry = get_entry(name)
    cfg = entry.cfg
    given = {"weights": weights, "device": device, "amp": amp, "engine": engine, "input_size": input_size,
             "resize_size": resize_size, "layer": layer, "compile": compile, "channels_last": channels_last,
             "calibration": calibration, **model_specific}
    kwargs = {k: v for k, v in given.items() if v is not None}
    check_network_options(cfg, kwargs)
    if "layer" in kwargs and "layers" not in cfg.extra:
        raise UsageError(f"--layer is not available for {name}: its features come from one layer ({cfg.feature_layer})")
    if "layer" in kwargs and kwargs["layer"] not in cfg.extra["layers"]:
        raise UsageError(f"unknown --layer {kwargs['layer']!r} for {name}; "
                         f"choose from {', '.join(cfg.extra['layers'])}")
    overrides = {k: kwargs.pop(k) for k in ("input_size", "resize_size") if k in kwargs}
    if cfg.extra.get("sizes_from_weights"):
        # the crop is read from the weights file (fine-tuned encoders): the builder applies the overrides
        ext = entry.builder(cfg, **kwargs, **overrides)
    else:
        if "input_size" in overrides and "resize_size" not in overrides:
            # keep the model's crop ratio when only the crop size changes
            overrides["resize_size"] = scaled_resize(cfg, overrides["input_size"])
        if overrides:
            cfg = replace(cfg, **overrides)
            check_input_size(cfg)
        ext = entry.builder(cfg, **kwargs)
    if getattr(ext, "weights_path", None) is None and kwargs.get("weights"):
        ext.weights_path = str(kwargs["weights"])
    return ext


def scaled_resize(cfg: ModelCfg, input_size: int) -> int:
    """The resize (short side) that keeps ``cfg``'s resize/crop ratio at crop ``input_size``."""
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 1:
        raise UsageError(f"--input-size {input_size!r}: use an integer from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    return max(input_size, round(input_size * cfg.resize_size / cfg.input_size))
