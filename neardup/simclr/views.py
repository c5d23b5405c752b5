"""Training views that teach the near-duplicate task.

Each view = (with probability ``attack_prob``) one random manipulation from the
attack registry (text overlay, JPEG, noise, rotation, shear, crop, scale,
perspective, ...) followed by lightly's SimCLR view transform (random resized
crop, flip, colour jitter of strength ``jitter``, grayscale, blur). Generic SimCLR
views alone gained little on this task; the attack views drive the gain.

Randomness is derived from (seed, epoch, index, view), so a view is the same
whatever the number of workers, and a resumed run sees the same views.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

import neardup._compat  # noqa: F401  (before lightly/torchvision)
from neardup.data.attacks import AttackSpec
from neardup.data.images import ImageDecodeError, load_image


@dataclass(frozen=True)
class ViewConfig:
    image_size: int = 160
    attack_prob: float = 0.5
    jitter: float = 0.5  # colour-jitter strength (lightly's cj_strength)
    min_scale: float = 0.5  # random resized crop keeps at least this fraction of the area
    gray_prob: float = 0.05
    blur_prob: float = 0.0
    hflip_prob: float = 0.5
    preload_size: int = 288  # decode once, short side to this (attacks then run on small images)


def item_seed(seed: int, epoch: int, index: int, view: int) -> int:
    return zlib.crc32(f"{seed}:{epoch}:{index}:{view}".encode())


class ViewMaker:
    """PIL image + seed -> a normalised view tensor (C, H, W)."""

    def __init__(self, cfg: ViewConfig, attacks: list[AttackSpec], mean: tuple[float, ...], std: tuple[float, ...]):
        from lightly.transforms.simclr_transform import SimCLRViewTransform

        self.cfg, self.attacks = cfg, attacks
        self.tail = SimCLRViewTransform(
            input_size=cfg.image_size, cj_prob=0.8 if cfg.jitter > 0 else 0.0, cj_strength=max(cfg.jitter, 1e-6),
            min_scale=cfg.min_scale, random_gray_scale=cfg.gray_prob, gaussian_blur=cfg.blur_prob,
            hf_prob=cfg.hflip_prob, normalize={"mean": list(mean), "std": list(std)})

    def __call__(self, img: Image.Image, seed: int) -> torch.Tensor:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        if self.attacks and rng.random() < self.cfg.attack_prob:
            spec = self.attacks[int(rng.integers(len(self.attacks)))]
            img = spec(img, rng)
        return self.tail(img)


class TwoViewDataset(Dataset):
    """Decoded (and downsized) training photos; ``__getitem__`` returns two views of one image."""

    def __init__(self, paths: list[str], maker: ViewMaker, seed: int):
        self.maker, self.seed, self.epoch = maker, seed, 0
        self.images: list[Image.Image] = []
        self.paths: list[str] = []
        for p in paths:
            try:
                img = load_image(p, draft_size=(maker.cfg.preload_size, maker.cfg.preload_size))
            except ImageDecodeError:
                continue
            s = maker.cfg.preload_size / min(img.size)
            if s < 1:
                img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BICUBIC)
            self.images.append(img)
            self.paths.append(p)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        return (self.maker(img, item_seed(self.seed, self.epoch, i, 0)),
                self.maker(img, item_seed(self.seed, self.epoch, i, 1)))


def describe(cfg: ViewConfig, attacks: list[AttackSpec]) -> dict[str, Any]:
    return {**cfg.__dict__, "attacks": [a.name for a in attacks]}
