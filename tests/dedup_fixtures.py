"""Dedup test fixtures (registered in tests/conftest.py): scikit-image photos plus planted copies."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

#: scikit-image's bundled photos (no download), each a different scene
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "camera", "coins", "clock", "horse", "colorwheel")


def _photo(name: str) -> Image.Image:
    import skimage.data

    a = getattr(skimage.data, name)()
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a).convert("RGB")
    img.thumbnail((192, 192))
    return img


@pytest.fixture(scope="session")
def photo_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distinct originals, written once per session (JPEG, quality 95)."""
    d = tmp_path_factory.mktemp("dedup_photos")
    for i, name in enumerate(PHOTOS):
        _photo(name).save(d / f"p{i:02d}_{name}.jpg", quality=95)
    return d


def plant_copies(src: Path, dst: Path) -> dict[str, str]:
    """Copies of the first five originals into ``dst``; returns copy name -> its original's name.

    exact bytes, a lossless PNG re-encode (same pixels), JPEG quality 40, a 10% crop, a half-size resize.
    """
    dst.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.glob("*.jpg"))
    made: dict[str, str] = {}
    shutil.copy(src / names[0], dst / "copy_exact.jpg")
    made["copy_exact.jpg"] = names[0]
    with Image.open(src / names[1]) as im:
        im.save(dst / "copy_lossless.png")
    made["copy_lossless.png"] = names[1]
    with Image.open(src / names[2]) as im:
        im.save(dst / "copy_q40.jpg", quality=40)
    made["copy_q40.jpg"] = names[2]
    with Image.open(src / names[3]) as im:
        w, h = im.size
        im.crop((w // 10, h // 10, w, h)).save(dst / "copy_crop.jpg", quality=90)
    made["copy_crop.jpg"] = names[3]
    with Image.open(src / names[4]) as im:
        im.resize((im.width // 2, im.height // 2)).save(dst / "copy_small.jpg", quality=90)
    made["copy_small.jpg"] = names[4]
    return made


@pytest.fixture
def collection(tmp_path: Path, photo_source: Path) -> tuple[Path, dict[str, str]]:
    """originals and planted copies in one folder."""
    d = tmp_path / "collection"
    shutil.copytree(photo_source, d)
    return d, plant_copies(photo_source, d)


@pytest.fixture(scope="session")
def lite0() -> Any:
    """One loaded default model for the whole session (PyTorch engine: no ONNX export in tests)."""
    from neardup.extract.registry import create_extractor

    return create_extractor("efficientnet_lite0", device="cpu", engine="torch")
