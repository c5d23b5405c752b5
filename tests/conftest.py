"""Shared fixtures: small generated photos-like images, the shared BSDS500 photos when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import neardup._compat  # noqa: F401  (before anything imports torchvision)

BSDS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsds500"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["NEARDUP_CACHE"] = str(tmp_path_factory.mktemp("neardup_cache"))


def make_image(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A smooth random image with a few coloured rectangles: structured like a photo, unique per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(xx * rng.uniform(2, 8) + rng.uniform(0, 6)) * 0.5 + 0.5,
                     np.cos(yy * rng.uniform(2, 8) + rng.uniform(0, 6)) * 0.5 + 0.5,
                     (xx + yy) / 2], axis=-1)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 10), rng.integers(0, h - 10)
        base[y0:y0 + rng.integers(5, h // 2), x0:x0 + rng.integers(5, w // 2)] = rng.uniform(0, 1, 3)
    return Image.fromarray((base * 255).astype(np.uint8), "RGB")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for i in range(6):
        make_image(i).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="session")
def bsds_val() -> Path:
    if not (BSDS / "val").is_dir():
        pytest.skip(f"shared BSDS500 photos not found at {BSDS}")
    return BSDS / "val"


@pytest.fixture(scope="session")
def sample_photo() -> Image.Image:
    import skimage.data

    with Image.open(Path(skimage.data.__file__).parent / "chelsea.png") as img:
        return img.convert("RGB")


from tests.dedup_fixtures import collection, lite0, photo_source  # noqa: E402, F401  (fixtures for tests/dedup and tests/cli)
