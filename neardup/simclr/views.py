"""Training views that teach the near-duplicate task.

Each view = (with probability ``attack_prob``) one random manipulation from the
attack registry (text overlay, JPEG, noise, rotation, shear, crop, scale,
perspective, ...) followed by the SimCLR view transform (random resized crop,
flip, colour jitter of strength ``jitter``, grayscale, blur). Generic SimCLR
views alone gained little on this task; the attack views drive the gain.

Randomness comes from generators made for each (seed, epoch, index, view) and
passed explicitly, so a view is the same whatever the number of workers, a
resumed run sees the same views, and making a view never touches the global
``random`` / numpy / torch generators (which the training loop checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset

import neardup._compat  # noqa: F401  (before torchvision)
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


def view_rng(seed: int, epoch: int, index: int, view: int) -> np.random.Generator:
    """The generator of one view: a function of (seed, epoch, index, view) only."""
    return np.random.default_rng([seed, epoch, index, view])


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=g))


class SimCLRViewTransform:
    """lightly's ``SimCLRViewTransform`` (SimCLR v1, Chen et al. 2020) drawing from an explicit ``torch.Generator``.

    Why not lightly's own: torchvision's random transforms draw from the global torch generator, so
    views would depend on it and making one would change it. The sampling below is torchvision's
    (RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter), RandomGrayscale) and lightly's
    (GaussianBlur, sigma in [0.1, 2]), with the same defaults, given ``generator=``.
    """

    def __init__(self, cfg: ViewConfig, mean: tuple[float, ...], std: tuple[float, ...]):
        self.cfg, self.mean, self.std = cfg, list(mean), list(std)
        s = cfg.jitter  # brightness/contrast/saturation 0.8 x s, hue 0.2 x s (lightly's defaults)
        self.jitter = [(max(0.0, 1 - 0.8 * s), 1 + 0.8 * s)] * 3 + [(-0.2 * s, 0.2 * s)]

    def _crop_box(self, width: int, height: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop.get_params: scale (min_scale, 1), ratio (3/4, 4/3)."""
        area, log_r = height * width, (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            target = area * _uniform(g, self.cfg.min_scale, 1.0)
            aspect = math.exp(_uniform(g, *log_r))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                i = int(torch.randint(0, height - h + 1, (1,), generator=g))
                j = int(torch.randint(0, width - w + 1, (1,), generator=g))
                return i, j, h, w
        ratio = width / height  # fallback: central crop
        w, h = (width, round(width * 4 / 3)) if ratio < 3 / 4 else \
            (round(height * 4 / 3), height) if ratio > 4 / 3 else (width, height)
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms import functional as F

        cfg = self.cfg
        i, j, h, w = self._crop_box(img.width, img.height, g)
        img = F.resized_crop(img, i, j, h, w, [cfg.image_size, cfg.image_size],
                             interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        if float(torch.rand(1, generator=g)) < cfg.hflip_prob:
            img = F.hflip(img)
        if cfg.jitter > 0 and float(torch.rand(1, generator=g)) <= 0.8:  # RandomApply(p=0.8)
            order = torch.randperm(4, generator=g).tolist()
            factors = [_uniform(g, lo, hi) for lo, hi in self.jitter]
            adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
            for k in order:
                img = adjust[k](img, factors[k])
        if float(torch.rand(1, generator=g)) < cfg.gray_prob:
            img = F.rgb_to_grayscale(img, num_output_channels=3)
        if float(torch.rand(1, generator=g)) < cfg.blur_prob:
            img = img.filter(ImageFilter.GaussianBlur(radius=_uniform(g, 0.1, 2.0)))
        return F.normalize(F.to_tensor(img), self.mean, self.std)


class ViewMaker:
    """PIL image + its view's generator -> a normalised view tensor (C, H, W)."""

    def __init__(self, cfg: ViewConfig, attacks: list[AttackSpec], mean: tuple[float, ...], std: tuple[float, ...]):
        self.cfg, self.attacks = cfg, attacks
        self.tail = SimCLRViewTransform(cfg, mean, std)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(rng.integers(2**63)))
        if self.attacks and rng.random() < self.cfg.attack_prob:
            spec = self.attacks[int(rng.integers(len(self.attacks)))]
            img = spec(img, rng)
        return self.tail(img, g)


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
        return (self.maker(img, view_rng(self.seed, self.epoch, i, 0)),
                self.maker(img, view_rng(self.seed, self.epoch, i, 1)))
