"""Fallback photos for the demo when ../shared/data/bsds500 is absent: scikit-image's sample photos."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

# colour photographs shipped inside scikit-image (no download)
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "immunohistochemistry.png", "color.png")


def sample_photo_paths() -> list[Path]:
    import skimage.data

    root = Path(skimage.data.__file__).parent
    return [root / n for n in SAMPLE_PHOTOS if (root / n).is_file()]


def write_sample_sets(out: str | Path, n_val: int = 5) -> tuple[Path, Path]:
    """Write ``out/val`` (the first ``n_val`` photos) and ``out/train`` (the rest) as JPEGs."""
    out = Path(out)
    paths = sample_photo_paths()
    for i, p in enumerate(paths):
        split = "val" if i < n_val else "train"
        (out / split).mkdir(parents=True, exist_ok=True)
        with Image.open(p) as img:
            img.convert("RGB").save(out / split / f"{p.stem}.jpg", quality=95)
    return out / "val", out / "train"


if __name__ == "__main__":  # python -m neardup.data.samples OUT
    val, train = write_sample_sets(sys.argv[1] if len(sys.argv) > 1 else "samples")
    print(f"wrote {len(list(val.iterdir()))} val and {len(list(train.iterdir()))} train photos under {val.parent}")
