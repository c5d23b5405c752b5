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
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup.errors import UsageError
from neardup.io_utils import atomic_write, atomic_write_json, read_json_object

if TYPE_CHECKING:
    from neardup.extract.space import FeatureSpace

SCHEMA = "neardup.features/1"


def shard_name(i: int) -> str:
    return f"{i:05d}"


def write_shard(out: Path, index: int, feats: np.ndarray, paths: list[str], skipped: list[dict[str, str]]) -> None:
    """Commit one shard: features first, then the paths file that marks it complete."""
    shard_dir = out / "shards"
    buf = io.BytesIO()
    np.save(buf, feats, allow_pickle=False)
    atomic_write(shard_dir / f"{shard_name(index)}.npy", lambda f: f.write(buf.getvalue()))
    atomic_write_json(shard_dir / f"{shard_name(index)}.json",
                      {"count": len(paths), "paths": paths, "skipped": skipped})


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file from its header alone; UsageError if it is not one, or is cut short.

    Why: opening a store must be cheap (no array is read), yet a truncated or pickled shard
    must be refused with its name before anything uses it.
    """
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            shape, _fortran, dtype = (fmt.read_array_header_1_0(f) if version == (1, 0)
                                      else fmt.read_array_header_2_0(f))
            data_start = f.tell()
    except FileNotFoundError:
        raise UsageError(f"damaged feature folder: shard {path} is missing") from None
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise UsageError(f"damaged feature folder: {path} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise UsageError(f"damaged feature folder: {path} holds Python objects (dtype {dtype}), not numbers")
    need = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise UsageError(f"damaged feature folder: {path} is cut short ({size} bytes, {need} expected for "
                         f"shape {shape})")
    return tuple(int(n) for n in shape), dtype


def read_shard_record(path: Path) -> dict[str, Any]:
    """A shard's ``.json`` record (its paths and skipped files), checked; UsageError naming it otherwise."""
    rec = read_json_object(path, "shard record", ("paths",))
    paths, skipped = rec["paths"], rec.get("skipped", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UsageError(f"damaged feature folder: shard record {path}: 'paths' is not a list of strings")
    if not isinstance(skipped, list) or not all(isinstance(x, dict) for x in skipped):
        raise UsageError(f"damaged feature folder: shard record {path}: 'skipped' is not a list of records")
    return rec


def committed_shard(out: Path, index: int, width: int | None = None,
                    dtype: np.dtype | None = None) -> dict[str, Any] | None:
    """The shard's record if it was fully committed (and has ``width`` columns of ``dtype``), else None."""
    base = out / "shards" / shard_name(index)
    rec_path, npy = base.with_suffix(".json"), base.with_suffix(".npy")
    if not (rec_path.is_file() and npy.is_file()):
        return None
    try:
        rec = read_shard_record(rec_path)
        shape, got = npy_header(npy)
    except (UsageError, OSError):
        return None
    if len(shape) != 2 or (width is not None and shape[1] != width) or (dtype is not None and got != dtype):
        return None
    return rec if shape[0] == rec.get("count") == len(rec["paths"]) else None


#: meta.json keys every reader relies on
META_KEYS = ("schema", "model", "metric", "num_features", "count", "shards", "dtype")
_SHARD_NAME = re.compile(r"\d{5}")


def _is_int(x: Any, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Types and values of meta.json, so later code never meets a KeyError or a path outside the folder."""
    problems = []
    if not isinstance(meta["model"], str):
        problems.append("model is not a string")
    if meta["metric"] not in ("cosine", "hamming"):
        problems.append(f"metric {meta['metric']!r} is not cosine or hamming")
    if not _is_int(meta["num_features"], 1):
        problems.append(f"num_features {meta['num_features']!r} is not a positive integer")
    if not _is_int(meta["count"]):
        problems.append(f"count {meta['count']!r} is not a non-negative integer")
    shards = meta["shards"]
    if not isinstance(shards, list) or not all(isinstance(x, str) and _SHARD_NAME.fullmatch(x) for x in shards):
        problems.append("shards is not a list of shard names like '00000'")
    if meta.get("output_dim") is not None and not _is_int(meta["output_dim"], 1):
        problems.append(f"output_dim {meta['output_dim']!r} is not a positive integer")
    if meta["metric"] == "hamming" and _is_int(meta["num_features"], 1) and meta["num_features"] % 8:
        problems.append(f"num_features {meta['num_features']} of a hash is not a multiple of 8")
    if meta["metric"] != "hamming" and meta["dtype"] not in ("float32", "float16"):
        problems.append(f"dtype {meta['dtype']!r} is not float32 or float16")
    if meta.get("root") is not None and not isinstance(meta["root"], str):
        problems.append("root is not a string")
    if problems:
        raise UsageError(f"damaged feature folder: {path}: {'; '.join(problems)}")


def check_finite(x: np.ndarray, where: str, chunk: int = 65536) -> None:
    """UsageError if float features hold NaN or inf (chunked: a memory-mapped array is not copied whole)."""
    if x.dtype.kind != "f":
        return
    for i in range(0, len(x), chunk):
        block = np.asarray(x[i:i + chunk])
        if not np.isfinite(block).all():
            bad = i + int(np.argwhere(~np.isfinite(block).all(axis=tuple(range(1, block.ndim))))[0, 0])
            raise UsageError(f"damaged feature folder: {where} holds NaN or infinite features (first in row {bad}); "
                             f"extract it again")


@dataclass
class FeatureStore:
    """Read side of a feature folder."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike) -> FeatureStore:
        """A finished extraction, its meta.json and shard headers checked; UsageError naming what is wrong.

        Shapes and dtypes are checked here (headers only: cheap); the paths files when ``paths`` is first
        read, and finiteness when the features are loaded.
        """
        root = Path(root)
        if not root.is_dir():
            raise UsageError(f"not a neardup feature folder: {root} " +
                             ("is a file" if root.exists() else "does not exist"))
        if not (root / "meta.json").is_file():
            unfinished = (root / "job.json").is_file()
            hint = " (extraction unfinished: re-run the same `neardup extract` to resume)" if unfinished else ""
            raise UsageError(f"not a neardup feature folder: {root} has no meta.json{hint}")
        meta = read_json_object(root / "meta.json", "feature metadata")
        if meta.get("schema") != SCHEMA:
            raise UsageError(f"{root}/meta.json: unsupported schema {meta.get('schema')!r}, expected {SCHEMA}")
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise UsageError(f"damaged feature folder: {root / 'meta.json'} lacks {', '.join(missing)}")
        _check_meta(root / "meta.json", meta)
        store = cls(root)
        store.__dict__["meta"] = meta  # the cached_property, already read
        store._check_shards()
        return store

    def _check_shards(self) -> None:
        width = self.meta["num_features"] // 8 if self.metric == "hamming" else self.meta["num_features"]
        dtype = np.dtype(np.uint8 if self.metric == "hamming" else self.meta["dtype"])
        rows = []
        for s in self.meta["shards"]:
            npy = self.root / "shards" / f"{s}.npy"
            shape, got = npy_header(npy)
            if len(shape) != 2 or shape[1] != width:
                raise UsageError(f"damaged feature folder: {npy} has shape {shape}, expected (rows, {width}) "
                                 f"for {self.model}")
            if got != dtype:
                raise UsageError(f"damaged feature folder: {npy} holds {got}, expected {dtype} (meta.json)")
            record = self.root / "shards" / f"{s}.json"
            if not record.is_file():
                raise UsageError(f"damaged feature folder: shard record {record} is missing")
            rows.append(shape[0])
        if sum(rows) != self.meta["count"]:
            raise UsageError(f"damaged feature folder: {self.root}: the shards hold {sum(rows)} feature rows but "
                             f"meta.json counts {self.meta['count']}")
        self.__dict__["_rows"] = rows

    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_json_object(self.root / "meta.json", "feature metadata", META_KEYS)

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
        if not path.is_file():
            return None
        tf = FeatureTransform.load(path)
        tf.check(int(self.meta["num_features"]), str(path))
        if tf.out_dim(int(self.meta["num_features"])) != self.dim:
            raise UsageError(f"damaged feature folder: {path} gives {tf.out_dim(self.meta['num_features'])}-d "
                             f"features but meta.json says {self.dim}")
        return tf

    @property
    def space(self) -> FeatureSpace:
        """The feature space of ``features()`` (model, dim, metric, preprocessing, stored transform, weights).

        Compare folders with :func:`neardup.extract.space.require_same_space` before mixing their vectors.
        """
        from neardup.extract.space import FeatureSpace

        return FeatureSpace.of_store(self)

    def __len__(self) -> int:
        return int(self.meta["count"])

    @cached_property
    def paths(self) -> list[str]:
        rows = self.__dict__.get("_rows")
        out: list[str] = []
        for i, s in enumerate(self.meta["shards"]):
            path = self.root / "shards" / f"{s}.json"
            paths = read_shard_record(path)["paths"]
            if rows is not None and len(paths) != rows[i]:
                raise UsageError(f"damaged feature folder: {path} lists {len(paths)} paths but its shard has "
                                 f"{rows[i]} feature rows")
            out.extend(paths)
        return out

    def shard_arrays(self) -> list[np.ndarray]:
        out = []
        for s in self.meta["shards"]:
            npy = self.root / "shards" / f"{s}.npy"
            try:
                out.append(np.load(npy, mmap_mode="r", allow_pickle=False))
            except (ValueError, OSError) as exc:
                raise UsageError(f"damaged feature folder: cannot read {npy} ({exc})") from None
        return out

    def features(self) -> np.ndarray:
        """All features, with the stored transform (L2 / PCA whitening) applied if there is one.

        Without a transform, a single non-empty shard is returned memory-mapped.
        """
        if self.transform is not None:
            return self.transform.apply(self.raw_features())
        return self.raw_features()

    def raw_features(self) -> np.ndarray:
        """The stored features, checked finite (NaN/inf would make every distance meaningless)."""
        shards = self.shard_arrays()
        for s, a in zip(self.meta["shards"], shards, strict=True):
            check_finite(a, str(self.root / "shards" / f"{s}.npy"))
        arrays = [a for a in shards if a.shape[0]]
        if len(arrays) == 1:
            return arrays[0]
        if not arrays:
            n = int(self.meta["num_features"])
            width = n // 8 if self.metric == "hamming" else n
            return np.zeros((0, width), dtype=np.uint8 if self.metric == "hamming" else np.float32)
        return np.concatenate(arrays)

    def ids(self) -> list[str]:
        """Image ids (path relative to the extraction root, no extension unless two files differ only in it):
        the keys ground truth uses, the same as ``neardup attack`` gives its sources."""
        from neardup.data.manifest import image_ids

        return image_ids(self.paths, self.meta.get("root") or None)
