"""Find and decode images the way a real photo collection needs.

Decoding is PIL only (never ``torchvision.io``): it works on any torch build,
applies EXIF orientation, converts every mode to RGB (transparency composited
on white), takes the first frame of animations, refuses decompression bombs and
refuses truncated files instead of half-reading them.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from neardup.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS, ~179 MP): a 14k x 12k scan decodes, a bomb does not.
# Lower it with --max-pixels. Truncated files fail loudly as long as ImageFile.LOAD_TRUNCATED_IMAGES
# keeps its default (False); load_image refuses to run otherwise.
DEFAULT_MAX_PIXELS = 178_956_970


class ImageDecodeError(Exception):
    """An image that cannot be used; ``reason`` is what goes into ``meta.json``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Listing:
    """Images found under a folder, plus what could not be walked (reported, not fatal)."""

    paths: list[Path]
    problems: list[Skipped]


def walk_images(root: str | os.PathLike, recursive: bool = True, extensions: Iterable[str] = IMAGE_EXTENSIONS,
                globs: Iterable[str] = ()) -> Listing:
    """Sorted image files under ``root``, following symlinks once each.

    Symlink loops and unreadable folders are recorded in ``problems``; with
    ``globs`` (e.g. ``"**/*.jpg"``), only paths matching one pattern are kept.

    Raises:
        UsageError: the folder does not exist or is a file.
    """
    root = Path(root)
    if not root.exists():
        raise UsageError(f"folder not found: {root}")
    if root.is_file():
        raise UsageError(f"expected a folder of images, got a file: {root}")
    exts = {e.lower() for e in extensions}
    globs = tuple(globs)
    found: list[Path] = []
    problems: list[Skipped] = []
    seen: set[str] = set()

    def onerror(err: OSError) -> None:
        problems.append(Skipped(str(err.filename), f"unreadable folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        if real in seen:  # reached again through a symlink: a loop or a duplicate view
            problems.append(Skipped(dirpath, f"symlink loop or repeated folder (same as {real})"))
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        if not recursive:
            dirnames[:] = []
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() not in exts:
                continue
            if globs and not any(p.relative_to(root).match(g) or fnmatch.fnmatch(str(p.relative_to(root)), g)
                                 for g in globs):
                continue
            found.append(p)
    return Listing(sorted(found), problems)


def list_images(root: str | os.PathLike, recursive: bool = True,
                extensions: Iterable[str] = IMAGE_EXTENSIONS, globs: Iterable[str] = ()) -> list[Path]:
    """Sorted image paths under ``root`` (by extension; content is checked on decode).

    Raises:
        UsageError: the folder does not exist or holds no image files.
    """
    listing = walk_images(root, recursive, extensions, globs)
    if not listing.paths:
        exts = sorted({e.lower() for e in extensions})
        matching = f" matching {list(globs)}" if globs else ""
        raise UsageError(f"no images ({', '.join(exts)}) found in {root}{matching}")
    return listing.paths


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
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated files would be half-read")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(f"unreadable: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our max_pixels decides
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(f"too many pixels: {w}x{h} > {max_pixels} (decompression-bomb limit)")
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", draft_size)
                upright = ImageOps.exif_transpose(img)
                upright.load()
                return _to_rgb(upright)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels (decompression-bomb limit): {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or "premature end" in msg.lower():
            raise ImageDecodeError(f"truncated file: {msg}") from None
        raise ImageDecodeError(f"decode error: {msg}") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"decode error: {type(exc).__name__}: {exc}") from None
