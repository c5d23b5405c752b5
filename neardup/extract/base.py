"""The extractor contract (:class:`Extractor`) and its two implementations, networks and perceptual hashes.

``transform(PIL image)`` runs in DataLoader workers (decode-side work);
``encode(batch)`` runs in the main process and returns a numpy array, float32
features for networks and packed uint8 bits for hashes. Device and precision
are resolved here once (:func:`resolve_device`, :func:`resolve_amp`) for every
command that runs a network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch import nn

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.errors import UsageError
from neardup.extract.registry import ModelCfg

#: what ``--amp`` accepts; ``auto`` is bf16 on CUDA and off elsewhere
AMP_MODES = ("auto", "off", "fp16", "bf16")

_INTERP = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def resolve_device(device: str | None) -> torch.device:
    """``auto`` (or None) -> cuda when available, else cpu; an explicit ``cuda`` without a GPU is an error.

    Why: a user who asked for the GPU and silently got a CPU run would wait hours for nothing.

    Raises:
        UsageError: ``cuda`` without a CUDA GPU visible to torch, or an unknown device string.
    """
    device = device or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA GPU is available to torch")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None


def resolve_amp(amp: str | None, device: torch.device) -> str:
    """``auto`` (or None) -> ``bf16`` on CUDA, ``off`` elsewhere; ``off``/``fp16``/``bf16`` are kept.

    Why: bf16 keeps fp32's range (no loss scaling) and halves GPU time; on a CPU autocast is mostly slower.

    Raises:
        UsageError: an unknown mode.
    """
    if amp in (None, "auto"):
        return "bf16" if device.type == "cuda" else "off"
    if amp not in AMP_MODES:
        raise UsageError(f"unknown --amp {amp!r}; use auto, off, fp16 or bf16")
    return amp


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of a resolved ``amp`` mode (None for ``off``)."""
    return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]


#: Longest side / shortest side kept before the resize. Resizing the short side of a 1 x 150000 strip
#: to 256 would make a 256 x 38 million image (tens of GB); the centre crop only ever uses the middle.
MAX_ASPECT = 8


class LimitAspect:
    """Centre-crop the long side to at most ``max_aspect`` times the short side (a no-op for ordinary images).

    Why: the resize that follows scales the whole image by resize/short side, so its output (and memory)
    grows with the aspect ratio; the pixels cut away lie outside the centre crop the model sees.
    """

    def __init__(self, max_aspect: int = MAX_ASPECT):
        self.max_aspect = max_aspect

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        short = min(w, h)
        if max(w, h) <= self.max_aspect * short:
            return img
        keep = self.max_aspect * short
        if w > h:
            left = (w - keep) // 2
            return img.crop((left, 0, left + keep, h))
        top = (h - keep) // 2
        return img.crop((0, top, w, top + keep))

    def __repr__(self) -> str:
        return f"LimitAspect(max_aspect={self.max_aspect})"


def build_transform(cfg: ModelCfg) -> Callable[[Image.Image], torch.Tensor]:
    """Limit the aspect ratio, resize the short side, centre crop, scale to [0, 1], normalise: derived from ``cfg``.

    With ``cfg.fit == "squash"`` the whole image is resized to the square instead (no crop, so no aspect limit).
    """
    from torchvision import transforms as T

    if cfg.fit == "squash":
        return T.Compose([
            T.Resize((cfg.input_size, cfg.input_size), interpolation=T.InterpolationMode(cfg.interpolation)),
            T.ToTensor(),
            T.Normalize(cfg.mean, cfg.std),
        ])
    return T.Compose([
        LimitAspect(),
        T.Resize(cfg.resize_size, interpolation=T.InterpolationMode(cfg.interpolation)),
        T.CenterCrop(cfg.input_size),
        T.ToTensor(),
        T.Normalize(cfg.mean, cfg.std),
    ])



# --------------------------------------------------------------------------- the contract
@runtime_checkable
class Extractor(Protocol):
    """What every extractor offers; extraction, indexing, queries and fine-tuning validation use nothing else.

    Attributes:
        cfg: the registry entry's config (with the crop actually used).
        name, num_features, metric: the features' identity (``metric`` is cosine or hamming).
        dtype: numpy dtype of ``encode``'s output (float32 features, or uint8 packed bits).
        device: where ``encode`` runs; draft_size: the JPEG draft size decoding may use (None: full size).
        weights_path: the file the weights came from (its digest identifies an extraction job), or None.
        engine: what runs the network (torch, onnx, onnx-int8; imagehash for hashes).
        quantization: None for float features; the int8 key for ``onnx-int8`` (its own feature space).
    """

    cfg: ModelCfg
    weights_path: str | None

    @property
    def name(self) -> str: ...
    @property
    def num_features(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def dtype(self) -> type[np.generic]: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def draft_size(self) -> tuple[int, int] | None: ...
    @property
    def engine(self) -> str: ...
    @property
    def quantization(self) -> str | None: ...
    @property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image -> one preprocessed tensor (runs in DataLoader workers)."""
    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """(B, ...) preprocessed batch -> (B, D) features (float32) or (B, bits/8) packed hashes (uint8)."""
    def describe(self) -> dict[str, Any]:
        """What a feature store records about the extractor (model, dims, metric, dtype, preprocessing...)."""


class ExtractorBase:
    """What every extractor shares: its identity read from ``cfg`` and ``describe()`` built from a few fields.

    Subclasses set ``cfg`` and override only what differs (a hash's dtype, preprocessing and engine).
    """

    cfg: ModelCfg
    dtype: type[np.generic] = np.float32
    dtype_name = "float32"  # how describe() and meta.json name the stored dtype
    weights_path: str | None = None
    draft_size: tuple[int, int] | None = None
    device: torch.device = torch.device("cpu")
    amp = "off"
    engine = "torch"
    quantization: str | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def num_features(self) -> int:
        return self.cfg.num_features

    @property
    def metric(self) -> str:
        return self.cfg.metric

    @property
    def feature_layer(self) -> str:
        return self.cfg.feature_layer

    def preprocessing(self) -> dict[str, Any]:
        return self.cfg.preprocessing()

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "num_features": self.num_features, "metric": self.metric,
                "dtype": self.dtype_name, "preprocessing": self.preprocessing(), "feature_layer": self.feature_layer,
                "device": str(self.device), "amp": self.amp, "engine": self.engine, "quantization": self.quantization}


# --------------------------------------------------------------------------- networks
#: attribute on a registry-built network naming its stages (``ModelCfg.stages``), for code holding only the module
STAGES_ATTR = "neardup_stages"


def stage_modules(module: nn.Module) -> list[list[nn.Module]]:
    """The stages (stem first) the registry recorded on ``module``: ``[]`` when its entry names none.

    Raises:
        AttributeError: a path in the entry's ``stages`` that the module does not have (a registry bug;
            the registry tests build every network and check its paths).
    """
    layout: tuple[tuple[str, ...], ...] = getattr(module, STAGES_ATTR, ())
    return [[module.get_submodule(path) for path in group] for group in layout]


M = TypeVar("M", bound=nn.Module)


def empty_model(factory: Callable[[], M]) -> M:
    """Build on the meta device, then allocate zeros: no random init for weights about to be overwritten.

    Networks with non-persistent buffers (which a state dict does not restore) are built normally.
    """
    with torch.device("meta"):
        model = factory()
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        return factory()
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
    return model


class TorchExtractor(ExtractorBase):
    """A network whose forward returns pooled features (B, D), run by PyTorch or ONNX Runtime.

    Args:
        cfg: the model's config (preprocessing is derived from it).
        model: the feature network, weights loaded.
        device: auto|cpu|cuda[:N] (:func:`resolve_device`). amp: auto|off|fp16|bf16 (:func:`resolve_amp`).
        engine: torch, onnx, onnx-int8, or auto (ONNX Runtime on CPU when installed and its export matches
            PyTorch within 1e-4; see :mod:`neardup.extract.onnx_engine`). ``compile`` always runs PyTorch.
        calibration: images that calibrate ``onnx-int8`` (None: photos bundled with scikit-image).
        compile: torch.compile the network (worth it on GPUs for long runs).
        channels_last: None = on for CUDA.
        weights_path: the file the weights came from.

    Raises:
        UsageError: an unavailable device, an unknown amp or engine, or ``engine='onnx'`` that cannot run.
    """

    def __init__(self, cfg: ModelCfg, model: nn.Module, *, device: str | None = None, amp: str | None = None,
                 engine: str = "torch", compile: bool = False, channels_last: bool | None = None,
                 weights_path: str | None = None, calibration: str | None = None):
        from neardup.extract.onnx_engine import OnnxEncoder, onnx_encoder
        from neardup.extract.registry import check_engine

        check_engine(engine)
        self.cfg = cfg
        self.weights_path = weights_path  # the file the weights came from: its digest identifies a job
        self.device = resolve_device(device)
        self.amp = resolve_amp(amp, self.device)
        if cfg.stages:
            setattr(model, STAGES_ATTR, cfg.stages)
        self.model = model.eval().to(self.device)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.onnx: OnnxEncoder | None = None
        if compile:  # torch.compile: worth it on GPUs for long runs; the first batches pay the compilation
            self.model = torch.compile(self.model)  # type: ignore[assignment]
        else:
            self.onnx = onnx_encoder(self.model, cfg, self.device, engine, calibration)
        self.engine = "torch" if self.onnx is None else self.onnx.engine
        self.quantization = None if self.onnx is None else self.onnx.quantization
        self.transform = build_transform(cfg)

    @property
    def draft_size(self) -> tuple[int, int]:  # type: ignore[override]
        return (self.cfg.resize_size, self.cfg.resize_size)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = amp_dtype(self.amp)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) preprocessed images -> (B, D) float32 features."""
        if self.onnx is not None:
            return self.onnx.run(batch.numpy())
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            feats = self.model(x)
        return feats.float().cpu().numpy()


# --------------------------------------------------------------------------- perceptual hashes
class HashExtractor(ExtractorBase):
    """A perceptual hash: the whole work is in ``transform``; ``encode`` only stacks."""

    dtype = np.uint8
    dtype_name = "uint8-packed-bits"
    engine = "imagehash"

    def __init__(self, cfg: ModelCfg, hash_fn: Callable[[Image.Image], Any]):
        self.cfg = cfg
        self.hash_fn = hash_fn

    @property
    def feature_layer(self) -> str:
        return ""

    def preprocessing(self) -> dict[str, Any]:
        return {"hash": self.name, "bits": self.num_features}

    def transform(self, img: Image.Image) -> torch.Tensor:
        bits = np.asarray(self.hash_fn(img).hash, dtype=bool).reshape(-1)
        return torch.from_numpy(np.packbits(bits))

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """(B, bits/8) packed hashes -> the same as a uint8 numpy array."""
        return batch.numpy().astype(np.uint8, copy=False)
