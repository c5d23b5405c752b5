"""The feature store: a folder of ``.npy`` shards, their paths, and ``meta.json``.

Layout::

    OUT/meta.json              schema neardup.features/1: model, preprocessing, dim, dtype, count, skipped
    OUT/job.json               what produced the shards (checked on resume)
    OUT/shards/00000.npy       features of shard 0 (N_0 x D float32/float16, or N_0 x bits/8 uint8)
    OUT/shards/00000.json      {"paths": [...], "skipped": [{"path", "reason"}]} - written last: the commit

Shard ``i`` always covers the same slice of the sorted input list, so a killed
job resumes from the first uncommitted shard. Everything is memory-mappable.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.io_utils import atomic_write, atomic_write_json

SCHEMA = "neardup.features/1"


def shard_name(i: int) -> str:
    return f"{i:05d}"


def write_shard(out: Path, index: int, feats: np.ndarray, paths: list[str], skipped: list[dict[str, str]]) -> None:
    """Commit one shard: features first, then the paths file that marks it complete."""
    shard_dir = out / "shards"
    buf = io.BytesIO()
    np.save(buf, feats, allow_pickle=False)
    atomic_write(shard_dir / f"{shard_name(index)}.npy", lambda f: f.write(buf.getvalue()))
    atomic_write_json(shard_dir / f"{shard_name(index)}.json", {"count": len(paths), "paths": paths, "skipped": skipped})


def committed_shard(out: Path, index: int) -> dict[str, Any] | None:
    """The shard's record if it was fully committed, else None."""
    base = out / "shards" / shard_name(index)
    rec_path, npy = base.with_suffix(".json"), base.with_suffix(".npy")
    if not (rec_path.is_file() and npy.is_file()):
        return None
    try:
        rec = json.loads(rec_path.read_text("utf-8"))
        arr = np.load(npy, mmap_mode="r")
    except (ValueError, OSError):
        return None
    return rec if arr.shape[0] == rec.get("count") == len(rec.get("paths", [])) else None


@dataclass
class FeatureStore:
    """Read side of a feature folder."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> "FeatureStore":
        """Raises UsageError unless ``root`` holds a finished extraction."""
        root = Path(root)
        if not (root / "meta.json").is_file():
            hint = " (extraction unfinished: re-run the same `neardup extract` to resume)" if (root / "job.json").is_file() else ""
            raise UsageError(f"not a neardup feature folder: {root} has no meta.json{hint}")
        store = cls(root)
        if store.meta.get("schema") != SCHEMA:
            raise UsageError(f"{root}/meta.json: unsupported schema {store.meta.get('schema')!r}, expected {SCHEMA}")
        return store

    @cached_property
    def meta(self) -> dict[str, Any]:
        return json.loads((self.root / "meta.json").read_text("utf-8"))

    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def metric(self) -> str:
        return self.meta["metric"]

    @property
    def dim(self) -> int:
        """Dimension of what ``features()`` returns (after any stored transform)."""
        return int(self.meta.get("output_dim") or self.meta["num_features"])

    @cached_property
    def transform(self) -> Any:
        from neardup.extract.postprocess import FILE, FeatureTransform

        path = self.root / FILE
        return FeatureTransform.load(path) if path.is_file() else None

    def __len__(self) -> int:
        return int(self.meta["count"])

    @cached_property
    def paths(self) -> list[str]:
        out: list[str] = []
        for s in self.meta["shards"]:
            out.extend(json.loads((self.root / "shards" / f"{s}.json").read_text("utf-8"))["paths"])
        return out

    def shard_arrays(self) -> list[np.ndarray]:
        return [np.load(self.root / "shards" / f"{s}.npy", mmap_mode="r") for s in self.meta["shards"]]

    def features(self) -> np.ndarray:
        """All features, with the stored transform (L2 / PCA whitening) applied if there is one.

        Without a transform, a single non-empty shard is returned memory-mapped.
        """
        if self.transform is not None:
            return self.transform.apply(self.raw_features())
        return self.raw_features()

    def raw_features(self) -> np.ndarray:
        arrays = [a for a in self.shard_arrays() if a.shape[0]]
        if len(arrays) == 1:
            return arrays[0]
        if not arrays:
            width = self.dim // 8 if self.metric == "hamming" else self.dim
            return np.zeros((0, width), dtype=np.uint8 if self.metric == "hamming" else np.float32)
        return np.concatenate(arrays)

    def ids(self) -> list[str]:
        """Image ids (path relative to the extraction root, no extension unless two files differ only in it):
        the keys ground truth uses, the same as ``neardup attack`` gives its sources."""
        from neardup.data.manifest import image_ids

        return image_ids(self.paths, self.meta.get("root") or None)
