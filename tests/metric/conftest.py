"""Small labelled collections and a tiny registered network, so training tests run in seconds."""

from __future__ import annotations

import csv
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neardup.extract.base import TorchExtractor
from neardup.extract.registry import ExtractorOptions, ModelCfg, register_model, unregister_model
from tests.conftest import make_image

TINY = ModelCfg(name="tiny_metric_net", num_features=16, family="toy", input_size=32, resize_size=36,
                weights_format="none (random)", weights_hint="no weights", feature_layer="global average pool",
                paper="none", license="none", stages=(("conv",), ("block",)))


def tiny_arch(cfg: ModelCfg) -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 8, 3, stride=2), act=nn.ReLU(),
                                     block=nn.Conv2d(8, 16, 3, stride=2), pool=nn.AdaptiveAvgPool2d(1),
                                     flat=nn.Flatten()))


def register_tiny() -> None:
    """Register the tiny network (idempotent): ``--model tiny_metric_net`` then trains in milliseconds a step."""
    from neardup.extract.registry import MODELS, _ensure_registered

    _ensure_registered()
    if TINY.name in MODELS:
        return

    @register_model(TINY, arch=tiny_arch, weights_found=lambda: True)
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        torch.manual_seed(0)
        return TorchExtractor(cfg, tiny_arch(cfg), **options)


@pytest.fixture
def tiny_model() -> Iterator[str]:
    register_tiny()
    try:
        yield TINY.name
    finally:
        unregister_model(TINY.name)


def class_image(cls: int, i: int, size: int = 40) -> Image.Image:
    """Image ``i`` of class ``cls``: the class's pattern, shifted and with a little noise per image."""
    base = np.asarray(make_image(1000 + cls, (size + 8, size + 8)), dtype=np.float32)
    rng = np.random.default_rng(cls * 100 + i)
    dx, dy = rng.integers(0, 8, 2)
    crop = base[dy:dy + size, dx:dx + size] + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8), "RGB")


def make_class_folders(root: Path, classes: int = 4, per_class: int = 4) -> Path:
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            class_image(c, i).save(root / f"c{c}" / f"{i}.png")
    return root


def write_labels_csv(folders: Path, csv_path: Path) -> Path:
    """A labels CSV for the images of ``folders`` (relative paths, as a user would write it)."""
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for p in sorted(folders.rglob("*.png")):
            w.writerow([p.relative_to(csv_path.parent).as_posix(), p.parent.name])
    return csv_path


@pytest.fixture
def class_folders(tmp_path: Path) -> Path:
    return make_class_folders(tmp_path / "classes")
