"""What is in the user's folders: every image file with its size, mtime and content hash.

Hashes are cached in the scan folder by (path, size, mtime), so a re-run reads only new or changed files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neardup.io_utils import atomic_write_json, read_json
from neardup.progress import progress

CACHE = "inventory.json"


@dataclass(frozen=True)
class FileInfo:
    path: str
    bytes: int
    mtime_ns: int
    sha256: str


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: (paths, advance(n)) -> the sha256 of each path, in order: how a scan hashes the files its cache does not know
Hasher = Callable[[list[str], Callable[[int], object]], list[str]]


def hash_files(paths: list[str], advance: Callable[[int], object]) -> list[str]:
    """The sha256 of each file, here, one after the other (the default :data:`Hasher`)."""
    out = []
    for p in paths:
        out.append(sha256_file(p))
        advance(1)
    return out


def scan_files(paths: list[str], cache_dir: Path | None = None, show_progress: bool = False,
               hasher: Hasher = hash_files) -> list[FileInfo]:
    """FileInfo of each path (resolved, in input order), hashing only files the cache does not know.

    ``hasher``: how those are hashed (:func:`hash_files`; on Ray, :func:`neardup.scaleout.inventory.ray_hasher`).
    """
    cache: dict[str, list] = {}
    cache_file = cache_dir / CACHE if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = read_json(cache_file)
            cache = data if isinstance(data, dict) else {}
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache = {}
    stats = [os.stat(p) for p in paths]
    known: dict[str, str] = {}
    for p, st in zip(paths, stats, strict=True):
        hit = cache.get(p)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            known[p] = hit[2]
    todo = [p for p in paths if p not in known]
    with progress(len(paths), "hash", "file", disable=not show_progress, initial=len(paths) - len(todo)) as bar:
        known.update(zip(todo, hasher(todo, bar.update), strict=True))
    out = [FileInfo(p, st.st_size, st.st_mtime_ns, known[p]) for p, st in zip(paths, stats, strict=True)]
    if cache_file is not None:
        atomic_write_json(cache_file, {f.path: [f.bytes, f.mtime_ns, f.sha256] for f in out})
    return out


def exact_groups(infos: list[FileInfo]) -> np.ndarray:
    """For each file, the index of the first file with the same bytes (itself if it is the first)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(f.sha256, i) for i, f in enumerate(infos)], dtype=np.int64)


def pixel_digest(path: str | os.PathLike) -> str | None:
    """sha256 of the decoded RGB pixels and size (None if undecodable): equal for a lossless re-encode."""
    from neardup.data.images import ImageDecodeError, load_image

    try:
        img = load_image(path)
    except ImageDecodeError:
        return None
    h = hashlib.sha256(f"{img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header only (0, 0 if unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        return (0, 0)
