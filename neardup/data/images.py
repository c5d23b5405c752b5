"""Find and decode images the way a real photo collection needs.

Decoding is PIL only (never ``torchvision.io``): it works on any torch build,
applies EXIF orientation, converts every mode to RGB (transparency composited
on white), takes the first frame of animations, refuses decompression bombs and
refuses truncated files instead of half-reading them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageFile, ImageOps

from neardup.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DEFAULT_MAX_PIXELS = 200_000_000  # a 14k x 14k photo decodes; a decompression bomb does not

ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated files fail loudly, never half-read


class ImageDecodeError(Exception):
    """An image that cannot be used; ``reason`` is what goes into ``meta.json``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def list_images(root: str | os.PathLike, recursive: bool = True,
                extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Sorted image paths under ``root`` (by extension; content is checked on decode).

    Raises:
        UsageError: the folder does not exist or holds no image files.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(f"folder not found: {root}")
    if root.is_file():
        raise UsageError(f"expected a folder of images, got a file: {root}")
    exts = {e.lower() for e in extensions}
    walker = root.rglob("*") if recursive else root.glob("*")
    paths = sorted(p for p in walker if p.suffix.lower() in exts and p.is_file())
    if not paths:
        raise UsageError(f"no images ({', '.join(sorted(exts))}) found in {root}")
    return paths


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; alpha is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode one file to an RGB ``PIL.Image``.

    Args:
        path: the file.
        max_pixels: larger images are refused (decompression-bomb guard).
        draft_size: for JPEGs, let libjpeg decode at a reduced scale no smaller
            than this (much faster for large photos, same result after resizing).

    Raises:
        ImageDecodeError: with a one-line reason, for anything unusable.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(f"unreadable: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(f"too many pixels: {w}x{h} > {max_pixels} (decompression-bomb limit)")
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", draft_size)
                img = ImageOps.exif_transpose(img)
                img.load()
                return _to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or "premature end" in msg.lower():
            raise ImageDecodeError(f"truncated file: {msg}") from None
        raise ImageDecodeError(f"decode error: {msg}") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"decode error: {type(exc).__name__}: {exc}") from None
