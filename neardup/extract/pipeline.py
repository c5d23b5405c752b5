"""``neardup extract``: images -> feature store, batched, resumable, never crashing on a bad file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neardup import __version__, dist
from neardup.data.images import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image, walk_images
from neardup.errors import UsageError
from neardup.extract.onnx_engine import attach
from neardup.extract.registry import create_extractor
from neardup.extract.store import SCHEMA, committed_shard, shard_name, write_shard
from neardup.io_utils import atomic_write_json
from neardup.progress import progress


def collect_inputs(src: str | os.PathLike, globs: tuple[str, ...] = ()) -> tuple[list[str], str, list[dict[str, str]]]:
    """(sorted image paths, root, walk problems) from a folder, a text file of paths, or a manifest.csv.

    Symlink loops and unreadable sub-folders are returned as problems, not raised.
    """
    src = Path(src)
    if src.is_dir():
        listing = walk_images(src, globs=globs)
        if not listing.paths:
            raise UsageError(f"no images found in {src}" + (f" matching {list(globs)}" if globs else ""))
        return [str(p) for p in listing.paths], str(src), [asdict(p) for p in listing.problems]
    if not src.exists():
        raise UsageError(f"input not found: {src}")
    if src.name.endswith(".csv"):
        from neardup.data.manifest import read_manifest

        rows = read_manifest(src)
        return sorted(str(src.parent / r.query) for r in rows), str(src.parent), []
    lines = [ln.strip() for ln in src.read_text("utf-8").splitlines()]
    paths = sorted({ln for ln in lines if ln and not ln.startswith("#")})
    if not paths:
        raise UsageError(f"no image paths listed in {src}")
    root = os.path.commonpath([str(Path(p).parent) for p in paths]) if len(paths) > 1 else str(Path(paths[0]).parent)
    return paths, root, []


class ImageDataset(Dataset):
    """Decode + transform in workers; a bad file yields its reason instead of a tensor."""

    def __init__(self, paths: list[str], transform: Any, draft_size: tuple[int, int] | None, max_pixels: int):
        self.paths, self.transform, self.draft_size, self.max_pixels = paths, transform, draft_size, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            img = load_image(self.paths[i], self.max_pixels, self.draft_size)
            return i, self.transform(img), ""
        except ImageDecodeError as exc:
            return i, None, exc.reason
        except Exception as exc:  # a transform failing on one odd image must not end the run
            return i, None, f"preprocessing failed: {type(exc).__name__}: {exc}"


def collate(items: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, r) for i, x, r in items if x is None]
    batch = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], batch, bad


@dataclass
class ExtractReport:
    out_dir: str
    model: str
    count: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_shards: int = 0
    input_problems: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return (self.count + len(self.skipped)) / self.seconds if self.seconds > 0 else 0.0


def _job_record(extractor: Any, paths: list[str], shard_size: int, dtype: str) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    d = extractor.describe()
    return {"model": d["model"], "preprocessing": d["preprocessing"], "num_features": d["num_features"],
            "feature_layer": d["feature_layer"],
            "shard_size": shard_size, "n_inputs": len(paths), "inputs_sha256": digest, "dtype": dtype}


def _loader(ext: Any, paths: list[str], batch_size: int, workers: int, max_pixels: int) -> DataLoader:
    """Decode + preprocess in ``workers`` processes, batches prefetched while the model runs."""
    return DataLoader(ImageDataset(paths, ext.transform, ext.draft_size, max_pixels), batch_size=batch_size,
                      num_workers=workers, collate_fn=collate, pin_memory=ext.device.type == "cuda",
                      prefetch_factor=4 if workers else None)


def default_workers() -> int:
    """One decode worker per spare core (at least 1, at most 8)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def extract_features(src: str | os.PathLike, out: str | os.PathLike, model: str = "efficientnet_lite0", *,
                     weights: str | None = None, batch_size: int = 32, workers: int | None = None,
                     device: str | None = None, amp: str | None = None, shard_size: int = 10000,
                     dtype: str = "float32", max_pixels: int = DEFAULT_MAX_PIXELS, overwrite: bool = False,
                     input_size: int | None = None, engine: str = "auto", globs: tuple[str, ...] | list[str] = (),
                     normalize: bool = False, whiten: int | None = None, whiten_sample: int = 100_000,
                     transform_from: str | None = None, layer: str | None = None, compile: bool = False,
                     show_progress: bool = True, extractor: Any = None) -> ExtractReport:
    """Extract features of every image in ``src`` into the feature store ``out``.

    A re-run with the same arguments resumes after the last committed shard.
    ``normalize`` / ``whiten`` fit an L2 / PCA-whitening transform on a
    sample of ``whiten_sample`` features and store it (``transform.npz``);
    ``transform_from`` reuses the transform of another feature folder (for
    queries). ``extractor`` may be passed in to reuse a loaded model. ``engine`` is
    ``torch``, ``onnx`` or ``auto`` (ONNX Runtime on CPU when its export
    matches PyTorch within 1e-4; the engine is not part of the job record,
    since both give the same features).

    Raises:
        UsageError: bad input, unknown model, missing weights, or an existing
            output made with a different model/preprocessing (unless ``overwrite``).
    """
    if batch_size < 1 or shard_size < 1:
        raise UsageError("--batch-size and --shard-size must be positive")
    if dtype not in ("float32", "float16"):
        raise UsageError(f"unknown --dtype {dtype!r}; use float32 or float16")
    t0 = time.perf_counter()
    paths, root, problems = collect_inputs(src, tuple(globs))
    info = dist.init(device)  # before the model is built: pins each rank to its own GPU
    ext = extractor
    if ext is None:
        ext = create_extractor(model, weights=weights, device=device, amp=amp, input_size=input_size, layer=layer,
                               compile=compile or None)
        ext.engine = attach(ext, "torch" if compile else engine)
    out = Path(out)
    if (normalize or whiten or transform_from) and ext.metric == "hamming":
        raise UsageError("--normalize/--whiten/--transform-from apply to float features, not to hashes")
    job = _job_record(ext, paths, shard_size, dtype)
    job["postprocess"] = {"normalize": normalize, "whiten": whiten, "whiten_sample": whiten_sample,
                          "transform_from": str(transform_from) if transform_from else None}
    # rank 0 validates and prepares the output; every rank learns the verdict (no one hangs on an error)
    verdict = None
    if info.is_main:
        try:
            _prepare_output(out, job, overwrite)
        except UsageError as exc:
            verdict = str(exc)
    verdict = dist.broadcast_object(verdict)
    if verdict:
        raise UsageError(str(verdict))

    n_shards = max(1, -(-len(paths) // shard_size))
    mine = [i for i in range(n_shards) if i % info.world_size == info.rank]  # stable shard assignment
    done = {i for i in mine if committed_shard(out, i) is not None}
    todo = [i for i in mine if i not in done]
    todo_idx = [j for i in todo for j in range(i * shard_size, min(len(paths), (i + 1) * shard_size))]
    my_total = sum(min(len(paths), (i + 1) * shard_size) - i * shard_size for i in mine)
    workers = default_workers() if workers is None else workers
    loader = _loader(ext, [paths[j] for j in todo_idx], batch_size, workers, max_pixels)
    np_dtype = np.uint8 if ext.dtype == np.uint8 else np.dtype(dtype)
    width = ext.num_features // 8 if ext.metric == "hamming" else ext.num_features
    pending: dict[int, dict[str, Any]] = {i: {"feats": {}, "bad": {}} for i in todo}
    rank_tag = f" [rank {info.rank}/{info.world_size}]" if info.enabled else ""
    bar = progress(total=my_total, initial=my_total - len(todo_idx), desc=f"extract {ext.name}{rank_tag}", unit="img",
                   disable=not show_progress)

    def flush(i: int) -> None:
        lo, hi = i * shard_size, min(len(paths), (i + 1) * shard_size)
        rec = pending.pop(i)
        keep = [j for j in range(lo, hi) if j in rec["feats"]]
        feats = np.stack([rec["feats"][j] for j in keep]).astype(np_dtype) if keep else np.zeros((0, width), np_dtype)
        skipped = [{"path": paths[j], "reason": rec["bad"][j]} for j in range(lo, hi) if j in rec["bad"]]
        write_shard(out, i, feats, [paths[j] for j in keep], skipped)

    try:
        for local_idx, batch, bad in loader:
            if batch is not None:
                feats = ext.encode(batch)
                if feats.dtype.kind == "f" and not np.all(np.isfinite(feats)):
                    raise UsageError(f"non-finite features from {ext.name}; check --amp and the weights")
                for k, f in zip(local_idx, feats):
                    j = todo_idx[k]
                    pending[j // shard_size]["feats"][j] = f
            for k, reason in bad:
                j = todo_idx[k]
                pending[j // shard_size]["bad"][j] = reason
            bar.update(len(local_idx) + len(bad))
            for i in sorted(pending):
                lo, hi = i * shard_size, min(len(paths), (i + 1) * shard_size)
                if len(pending[i]["feats"]) + len(pending[i]["bad"]) == hi - lo:
                    flush(i)
        for i in sorted(pending):  # shards of only-empty slices (none) or all processed
            flush(i)
    finally:
        bar.close()

    dist.barrier()  # every rank's shards are committed
    verdict = None
    if info.is_main:
        try:
            post = _fit_postprocess(out, n_shards, normalize, whiten, whiten_sample, transform_from)
            _write_meta(out, ext, paths, root, problems, n_shards, shard_size, np.dtype(np_dtype), post)
        except UsageError as exc:
            verdict = str(exc)
    verdict = dist.broadcast_object(verdict)
    if verdict:
        raise UsageError(f"{verdict} in {src}")
    dist.barrier()  # meta.json exists for everyone
    meta = json.loads((out / "meta.json").read_text("utf-8"))
    return ExtractReport(str(out), ext.name, meta["count"], meta["skipped"], time.perf_counter() - t0, len(done),
                         problems)


def _prepare_output(out: Path, job: dict[str, Any], overwrite: bool) -> None:
    """Clear (``overwrite``) or check an existing output, then record the job."""
    if overwrite and out.exists():
        for name in ("meta.json", "job.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "shards", ignore_errors=True)
    if (out / "job.json").is_file():
        old = json.loads((out / "job.json").read_text("utf-8"))
        if old != job:
            diff = sorted(k for k in job if old.get(k) != job[k])
            raise UsageError(f"{out} holds an extraction with a different {', '.join(diff)}; "
                             f"use --overwrite to start over or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not a neardup extraction; use --overwrite or another --out")
    atomic_write_json(out / "job.json", job)


def _fit_postprocess(out: Path, n_shards: int, normalize: bool, whiten: int | None, whiten_sample: int,
                     transform_from: str | None) -> dict[str, Any] | None:
    """Fit (or copy) the stored feature transform once every shard is committed."""
    from neardup.extract.postprocess import FILE, fit_transform, load_from, sample_rows

    (out / FILE).unlink(missing_ok=True)
    if transform_from:
        tf = load_from(transform_from)
    elif normalize or whiten:
        arrays = [np.load(out / "shards" / f"{shard_name(i)}.npy", mmap_mode="r") for i in range(n_shards)]
        tf = fit_transform(sample_rows(arrays, whiten_sample), l2=True, whiten_dim=whiten)
    else:
        return None
    tf.save(out / FILE)
    return {**tf.describe(), "fitted_on": str(transform_from) if transform_from else "this folder"}


def _write_meta(out: Path, ext: Any, paths: list[str], root: str, problems: list[dict[str, str]], n_shards: int,
                shard_size: int, np_dtype: np.dtype, post: dict[str, Any] | None = None) -> None:
    """Merge the committed shards' records into meta.json (rank 0 only)."""
    records = [committed_shard(out, i) for i in range(n_shards)]
    missing = [shard_name(i) for i, r in enumerate(records) if r is None]
    if missing:  # pragma: no cover - a bug, or another process deleting shards
        raise RuntimeError(f"shards not committed: {missing}")
    skipped = [s for r in records for s in r["skipped"]]  # type: ignore[index]
    count = sum(r["count"] for r in records)  # type: ignore[index]
    if count == 0:
        raise UsageError(f"no readable images ({len(skipped)} skipped)")
    desc = ext.describe()
    stored = desc["dtype"] if ext.metric == "hamming" else str(np_dtype)
    meta = {"schema": SCHEMA, "neardup_version": __version__, **desc, "dtype": stored, "count": count,
            "n_inputs": len(paths), "root": os.path.abspath(root), "shards": [shard_name(i) for i in range(n_shards)],
            "shard_size": shard_size, "skipped": skipped, "input_problems": problems, "transform": post,
            "output_dim": post["whiten_dim"] if post and post.get("whiten_dim") else desc["num_features"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(out / "meta.json", meta)


def encode_paths(ext: Any, paths: list[str], batch_size: int = 32, workers: int | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, show_progress: bool = False,
                 desc: str = "encode") -> tuple[np.ndarray, np.ndarray]:
    """Features of ``paths`` in memory (for validation and queries; nothing written).

    Returns:
        (features of the readable images in input order, their indices into ``paths``).
    """
    workers = default_workers() if workers is None else workers
    loader = _loader(ext, paths, batch_size, workers, max_pixels)
    feats, idx = [], []
    with progress(total=len(paths), desc=desc, unit="img", disable=not show_progress) as bar:
        for local_idx, batch, bad in loader:
            if batch is not None:
                feats.append(ext.encode(batch))
                idx.extend(local_idx)
            bar.update(len(local_idx) + len(bad))
    width = ext.num_features // 8 if ext.metric == "hamming" else ext.num_features
    out = np.concatenate(feats) if feats else np.zeros((0, width), dtype=ext.dtype)
    return out, np.asarray(idx, dtype=np.int64)
