"""Report thumbnails, cached in the report folder by (path, size, mtime) so a re-run decodes only what changed.

Layout under the report folder: ``thumbs/<sha1 of the path>.jpg`` and ``thumbs.json`` (the index: for each
path, the file's size and mtime when its thumbnail was made, the thumbnail size, and the decode error if any).
A file that cannot be decoded gets no thumbnail of its own: the report shows the shared placeholder
``unreadable.jpg`` (a real image, so the page never shows a broken one) and the reason. Only files this index
names are ever removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neardup.errors import UsageError
from neardup.io_utils import atomic_write, atomic_write_json, read_json
from neardup.progress import progress

INDEX = "thumbs.json"
INDEX_SCHEMA = "neardup.dedup-thumbs/1"
THUMBS = "thumbs"
PLACEHOLDER = "unreadable.jpg"
#: the index is saved every this many new thumbnails, so an interrupted run keeps most of its work
SAVE_EVERY = 500


@dataclass(frozen=True)
class Thumb:
    """What the report shows for one file: ``name`` (thumbnail id, None for the placeholder), why there is
    no thumbnail (``note``), and the file's size and mtime now (None when it is gone)."""

    name: str | None
    note: str | None
    bytes: int | None
    mtime_ns: int | None


def thumb_id(path: str) -> str:
    """The thumbnail's file stem: sha1 of the path's bytes (any file name maps to a safe one)."""
    return hashlib.sha1(os.fsencode(path)).hexdigest()


def make_thumbnail(path: str, size: int) -> bytes:
    """JPEG bytes of ``path`` upright (EXIF orientation applied) and at most ``size`` pixels on its longer side.

    Raises:
        neardup.data.images.ImageDecodeError: the file cannot be decoded (with the reason).
    """
    from PIL import Image

    from neardup.data.images import load_image

    img = load_image(path, draft_size=(size, size))  # exif_transpose + RGB, JPEG decoded at a reduced scale
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, optimize=True)
    return buf.getvalue()


def placeholder(size: int) -> bytes:
    """A grey JPEG with a crossed-out frame: the picture shown for a file that cannot be decoded."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size * 3 // 4), (236, 238, 241))
    d = ImageDraw.Draw(img)
    w, h = img.size
    m = size // 5
    d.rectangle((m, m // 2, w - m, h - m // 2), outline=(160, 165, 172), width=max(2, size // 64))
    d.line((m, m // 2, w - m, h - m // 2), fill=(200, 90, 90), width=max(2, size // 48))
    d.line((m, h - m // 2, w - m, m // 2), fill=(200, 90, 90), width=max(2, size // 48))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write_fast(path: Path, data: bytes) -> None:
    """Temp file + rename without fsync: a thumbnail is cheap to remake, and thousands of fsyncs are not.

    An interrupted run never leaves a half-written thumbnail under its final name.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class ThumbCache:
    """The thumbnails of one report folder (``folder`` must be the report's own)."""

    def __init__(self, folder: Path, size: int):
        self.folder = folder
        self.size = size
        self.entries: dict[str, list[Any]] = self._load()

    def _load(self) -> dict[str, list[Any]]:
        f = self.folder / INDEX
        if not f.is_file():
            return {}
        try:
            data = read_json(f)
        except UsageError:  # a damaged index is rebuilt, never trusted
            return {}
        if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA or not isinstance(data.get("files"), dict):
            return {}
        return {p: e for p, e in data["files"].items() if isinstance(e, list) and len(e) == 4}

    def save(self) -> None:
        atomic_write_json(self.folder / INDEX, {"schema": INDEX_SCHEMA, "files": self.entries})

    def _fresh(self, path: str, st: os.stat_result) -> bool:
        e = self.entries.get(path)
        if e is None or e[0] != st.st_size or e[1] != st.st_mtime_ns or e[2] != self.size:
            return False
        return e[3] is not None or (self.folder / THUMBS / f"{thumb_id(path)}.jpg").is_file()

    def update(self, paths: list[str], show_progress: bool = False) -> dict[str, Thumb]:
        """A Thumb for every path, making the thumbnails that are missing or stale (index saved at the end)."""
        (self.folder / THUMBS).mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / PLACEHOLDER, lambda f: f.write(placeholder(self.size)))
        out: dict[str, Thumb] = {}
        made = 0
        with progress(len(paths), "report thumbnails", "file", disable=not show_progress) as bar:
            for p in paths:
                bar.update(1)
                try:
                    st = os.stat(p)
                except OSError as exc:
                    out[p] = Thumb(None, "missing" if isinstance(exc, FileNotFoundError)
                                   else f"unreadable: {exc.strerror or exc}", None, None)
                    continue
                if not self._fresh(p, st):
                    error = self._make(p)
                    self.entries[p] = [st.st_size, st.st_mtime_ns, self.size, error]
                    made += 1
                    if made % SAVE_EVERY == 0:
                        self.save()
                err = self.entries[p][3]
                out[p] = Thumb(None if err else thumb_id(p), f"unreadable: {err}" if err else None,
                               st.st_size, st.st_mtime_ns)
        self.save()
        return out

    def _make(self, path: str) -> str | None:
        from neardup.data.images import ImageDecodeError

        try:
            data = make_thumbnail(path, self.size)
        except ImageDecodeError as exc:
            return exc.reason
        _write_fast(self.folder / THUMBS / f"{thumb_id(path)}.jpg", data)
        return None

    def prune(self, keep: set[str]) -> int:
        """Remove the thumbnails of paths not in ``keep`` (only files this index names); returns how many."""
        gone = [p for p in self.entries if p not in keep]
        for p in gone:
            (self.folder / THUMBS / f"{thumb_id(p)}.jpg").unlink(missing_ok=True)  # a sha1 name: stays inside
            del self.entries[p]
        if gone:
            self.save()
        return len(gone)
