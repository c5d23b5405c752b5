"""What is in the user's folders: every image file with its size, mtime and content hash.

Hashes are cached in the scan folder by (path, size, mtime), so a re-run reads only new or changed files.
"""

from __future__ import annotations

import hashlib
import os
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


def scan_files(paths: list[str], cache_dir: Path | None = None, show_progress: bool = False) -> list[FileInfo]:
    """FileInfo of each path (resolved, in input order), hashing only files the cache does not know."""
    cache: dict[str, list] = {}
    cache_file = cache_dir / CACHE if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = read_json(cache_file)
            cache = data if isinstance(data, dict) else {}
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache = {}
    out: list[FileInfo] = []
    with progress(len(paths), "hash", "file", disable=not show_progress) as bar:
        for p in paths:
            st = os.stat(p)
            hit = cache.get(p)
            fresh = hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns
            digest = hit[2] if hit is not None and fresh else sha256_file(p)
            out.append(FileInfo(p, st.st_size, st.st_mtime_ns, digest))
            bar.update(1)
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
