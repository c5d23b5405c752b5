"""The extractor contract: ``name``, ``num_features``, ``metric``, ``transform``, ``encode``.

``transform(PIL image)`` runs in DataLoader workers (decode-side work);
``encode(batch)`` runs in the main process and returns a numpy array, float32
features for networks and packed uint8 bits for hashes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.errors import UsageError
from neardup.extract.registry import ModelCfg

_INTERP = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def resolve_device(device: str | None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is an error, not a fallback."""
    device = device or "auto"
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA GPU is available to torch")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None


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
    """Limit the aspect ratio, resize the short side, centre crop, scale to [0, 1], normalise: derived from ``cfg``."""
    from torchvision import transforms as T

    return T.Compose([
        LimitAspect(),
        T.Resize(cfg.resize_size, interpolation=T.InterpolationMode(cfg.interpolation)),
        T.CenterCrop(cfg.input_size),
        T.ToTensor(),
        T.Normalize(cfg.mean, cfg.std),
    ])


class TorchExtractor:
    """A network whose forward returns pooled features (B, D)."""

    def __init__(self, cfg: ModelCfg, model: torch.nn.Module, device: str | None = None,
                 amp: str | None = None, channels_last: bool | None = None, compile: bool = False,
                 weights_path: str | None = None):
        self.cfg = cfg
        self.weights_path = weights_path  # the file the weights came from: its digest identifies a job
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.amp = amp if amp not in (None, "auto") else ("bf16" if self.device.type == "cuda" else "off")
        if self.amp not in ("off", "fp16", "bf16"):
            raise UsageError(f"unknown --amp {amp!r}; use off, fp16 or bf16")
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:  # torch.compile: worth it on GPUs for long runs; the first batches pay the compilation
            self.model = torch.compile(self.model)
        self.transform = build_transform(cfg)
        self.onnx: Any = None  # set by neardup.extract.onnx_engine.attach
        self.engine = "torch"

    name = property(lambda self: self.cfg.name)
    num_features = property(lambda self: self.cfg.num_features)
    metric = property(lambda self: self.cfg.metric)
    draft_size = property(lambda self: (self.cfg.resize_size, self.cfg.resize_size))
    dtype = np.float32

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
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

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "num_features": self.num_features, "metric": self.metric,
                "dtype": "float32", "preprocessing": self.cfg.preprocessing(), "feature_layer": self.cfg.feature_layer,
                "device": str(self.device), "amp": self.amp, "engine": self.engine}


class HashExtractor:
    """A perceptual hash: the whole work is in ``transform``; ``encode`` only stacks."""

    dtype = np.uint8
    draft_size = None
    device = torch.device("cpu")
    weights_path = None

    def __init__(self, cfg: ModelCfg, hash_fn: Callable[[Image.Image], Any], **_: Any):
        self.cfg = cfg
        self.hash_fn = hash_fn

    name = property(lambda self: self.cfg.name)
    num_features = property(lambda self: self.cfg.num_features)  # bits
    metric = property(lambda self: self.cfg.metric)

    def transform(self, img: Image.Image) -> torch.Tensor:
        bits = np.asarray(self.hash_fn(img).hash, dtype=bool).reshape(-1)
        return torch.from_numpy(np.packbits(bits))

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """(B, bits/8) packed hashes -> the same as a uint8 numpy array."""
        return batch.numpy().astype(np.uint8, copy=False)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "num_features": self.num_features, "metric": "hamming",
                "dtype": "uint8-packed-bits", "preprocessing": {"hash": self.name, "bits": self.num_features},
                "feature_layer": "", "device": "cpu", "amp": "off", "engine": "imagehash"}
