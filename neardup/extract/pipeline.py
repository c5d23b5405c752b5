"""``neardup extract``: images -> feature store, batched, resumable, never crashing on a bad file."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from neardup import __version__, dist
from neardup.data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageDecodeError, load_image, walk_images
from neardup.errors import UsageError
from neardup.extract.base import Extractor
from neardup.extract.config import ExtractConfig
from neardup.extract.registry import create_extractor, get_model_cfg
from neardup.extract.store import SCHEMA, committed_shard, shard_name, write_shard
from neardup.extract.weights import file_sha256
from neardup.io_utils import atomic_write_json, read_json_object, read_text, remove_stale_tmp
from neardup.outdir import claim_out_dir
from neardup.progress import progress

if TYPE_CHECKING:
    from neardup.scaleout.engine import RayConfig

#: what ``neardup extract`` writes in --out (removed by --overwrite, never anything else)
OWNED = ("shards/[0-9][0-9][0-9][0-9][0-9].npy", "shards/[0-9][0-9][0-9][0-9][0-9].json", "shards/.*.tmp", "shards",
         "meta.json", "job.json", "transform.npz", "config.yaml")
#: version of job.json; older records lack the weights digest and are not resumed
JOB_SCHEMA = "neardup.extract-job/2"


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
    if src.suffix.lower() in IMAGE_EXTENSIONS:
        raise UsageError(f"{src} is an image; give a folder of images, a text file listing image paths, "
                         "or a manifest.csv")
    paths = _read_list_file(src)
    root = os.path.commonpath([str(Path(p).parent) for p in paths]) if len(paths) > 1 else str(Path(paths[0]).parent)
    return paths, root, []


def _read_list_file(src: Path) -> list[str]:
    """Sorted, de-duplicated paths of a list file: UTF-8, one per line, '#' comments; not mixing
    absolute and relative paths (their common root, and so the image ids, would be ill-defined)."""
    text = read_text(src, "image list file")
    numbered = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)]
    numbered = [(n, ln) for n, ln in numbered if ln and not ln.startswith("#")]
    if not numbered:
        raise UsageError(f"no image paths listed in {src}")
    bad = next(((n, ln) for n, ln in numbered if "\x00" in ln), None)
    if bad:
        raise UsageError(f"image list file {src}, line {bad[0]}: a path with a NUL character")
    absolute = [(n, ln) for n, ln in numbered if os.path.isabs(ln)]
    if absolute and len(absolute) < len(numbered):
        rel = next((n, ln) for n, ln in numbered if not os.path.isabs(ln))
        raise UsageError(f"image list file {src} mixes absolute paths (line {absolute[0][0]}: {absolute[0][1]}) and "
                         f"relative ones (line {rel[0]}: {rel[1]}); list them all one way")
    return sorted({ln for _, ln in numbered})


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


def collate(items: list[tuple[int, torch.Tensor | None, str]]
            ) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
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


def _job_record(extractor: Extractor, paths: list[str], shard_size: int, dtype: str, max_pixels: int,
                globs: tuple[str, ...], post: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes the shards' features: a resume must match it exactly.

    The engine (torch/ONNX), device, worker and batch counts are left out: they do not change what is computed;
    int8 quantisation does (``quantization``: the calibration digest and recipe of ``--engine onnx-int8``).
    """
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()
    d = extractor.describe()
    weights = getattr(extractor, "weights_path", None)
    digest_w = getattr(extractor, "weights_sha256", None)  # computed where the weights are (a Ray worker)
    if digest_w is None and weights:
        digest_w = file_sha256(weights)
    return {"job_schema": JOB_SCHEMA, "model": d["model"], "weights_sha256": digest_w,
            "feature_layer": d["feature_layer"], "num_features": d["num_features"], "preprocessing": d["preprocessing"],
            "amp": d["amp"], "quantization": d.get("quantization"), "dtype": dtype, "max_pixels": max_pixels,
            "globs": sorted(globs),
            "shard_size": shard_size, "n_inputs": len(paths), "inputs_sha256": digest, **post}


#: job.json key -> how the user changes it
_JOB_OPTIONS = {"model": "--model", "weights_sha256": "--weights (file content)", "feature_layer": "--layer",
                "num_features": "--model/--layer", "preprocessing": "--input-size (preprocessing)", "amp": "--amp",
                "quantization": "--engine onnx-int8/--calibration",
                "dtype": "--dtype", "max_pixels": "--max-pixels", "globs": "--glob", "shard_size": "--shard-size",
                "n_inputs": "IMAGES (the input list)", "inputs_sha256": "IMAGES (the input list)",
                "normalize": "--normalize", "whiten": "--whiten", "whiten_sample": "--whiten-sample",
                "transform_from": "--transform-from"}


#: keys that follow from the model: not reported again when the model itself changed
_FROM_MODEL = ("feature_layer", "num_features", "preprocessing")


def _short(key: str, value: Any) -> str:
    if key in ("weights_sha256", "inputs_sha256") and isinstance(value, str):
        return f"sha256 {value[:12]}"
    if key == "quantization" and value is None:
        return "fp32"
    if key == "preprocessing" and isinstance(value, dict):
        if "input_size" in value:
            return f"crop {value.get('input_size')}, resize {value.get('resize_size')} {value.get('interpolation')}"
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "none" if value is None else str(value)


def job_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'model (--model: phash -> dhash), ...' for the keys that differ; '' when they match."""
    parts, seen = [], set()
    model_changed = old.get("model") != new.get("model")
    for key in new:
        if old.get(key) == new[key] or key == "job_schema" or (model_changed and key in _FROM_MODEL):
            continue
        label = _JOB_OPTIONS.get(key, key)
        if label in seen:
            continue
        seen.add(label)
        name = "input list" if key in ("n_inputs", "inputs_sha256") else key.removesuffix("_sha256")
        parts.append(f"{name} ({label}: {_short(key, old.get(key))} -> {_short(key, new[key])})")
    return ", ".join(parts)


def is_extraction(out: Path) -> bool:
    """An extraction written before output markers existed: a job.json or meta.json of the right schema."""
    try:
        if (out / "job.json").is_file():
            job = read_json_object(out / "job.json", "job record")
            return "model" in job and "inputs_sha256" in job
        if (out / "meta.json").is_file():
            return read_json_object(out / "meta.json", "feature metadata").get("schema") == SCHEMA
    except UsageError:
        return False
    return False


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an OSError without a file name (ENOSPC from a write) the path being written, for the one-line error."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno or errno.EIO, exc.strerror or str(exc), str(path)) from exc
        raise


def _loader(ext: Extractor, paths: list[str], batch_size: int, workers: int, max_pixels: int) -> DataLoader:
    """Decode + preprocess in ``workers`` processes, batches prefetched while the model runs."""
    return DataLoader(ImageDataset(paths, ext.transform, ext.draft_size, max_pixels), batch_size=batch_size,
                      num_workers=workers, collate_fn=collate, pin_memory=ext.device.type == "cuda",
                      prefetch_factor=4 if workers else None)


def default_workers() -> int:
    """One decode worker per spare core (at least 1, at most 8)."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _check_postprocess(ext: Extractor, dtype: str, normalize: bool, whiten: int | None,
                       transform_from: str | None) -> None:
    """Refuse, before hours of extraction, what would only fail at the end (or be silently ignored)."""
    if ext.metric == "hamming":
        if normalize or whiten or transform_from:
            raise UsageError("--normalize/--whiten/--transform-from apply to float features, not to hashes")
        if dtype != "float32":
            raise UsageError(f"--dtype {dtype} applies to float features; {ext.name} hashes are stored as packed bits")
        return
    if whiten is not None and whiten > ext.num_features:
        raise UsageError(f"--whiten {whiten} exceeds the {ext.num_features} dimensions of {ext.name}")
    if transform_from:
        from neardup.extract.postprocess import load_from

        load_from(transform_from).check(ext.num_features, f"--transform-from {transform_from}")


def extract_features(src: str | os.PathLike, out: str | os.PathLike, config: ExtractConfig | None = None, *,
                     extractor: Extractor | None = None, show_progress: bool = True,
                     write_config: Callable[[Path], None] | None = None,
                     ray: RayConfig | None = None) -> ExtractReport:
    """Extract features of every image in ``src`` into the feature store ``out``.

    A re-run with the same config resumes after the last committed shard; job.json records
    everything that changes the features (model, digest of the weights file, preprocessing,
    precision, dtype, max_pixels, globs, the input list...), and a re-run that changes any of them
    is refused. ``out`` is claimed for ``neardup extract`` (see :mod:`neardup.outdir`): a folder
    holding anything else is refused, ``config.overwrite`` removes only extract's own files, and the
    folder stays locked until the run ends (``write_config(out)`` runs inside that lock, on rank 0:
    the CLI saves config.yaml with it).
    ``config.normalize`` / ``config.whiten`` fit an L2 / PCA-whitening transform on a
    sample of ``config.whiten_sample`` features and store it (``transform.npz``);
    ``config.transform_from`` reuses the transform of another feature folder (for
    queries). ``extractor`` may be passed in to reuse a loaded model (then ``config.model``,
    ``weights``, ``device``, ``amp``, ``engine``, ``input_size``, ``layer`` and ``compile`` are its own).
    The engine is not part of the job record, since torch and ONNX give the same features; the int8
    quantisation of ``--engine onnx-int8`` (calibration digest and recipe) is.
    With ``ray`` (a :class:`neardup.scaleout.engine.RayConfig`) the shards are computed on Ray Data
    (:mod:`neardup.scaleout.extract`): the same store, job record, resume and skipped-image reasons.

    Args:
        src: a folder of images, a text file listing image paths, or a manifest.csv.
        out: the feature folder to write (or resume).
        config: the options (None: :class:`ExtractConfig` defaults).
        ray: run on Ray (None: in this process, or the torchrun/srun ranks).

    Raises:
        UsageError: bad input, unknown model, missing weights, an option the model cannot honour,
            or an existing output made differently (unless ``overwrite``).
    """
    cfg = (config or ExtractConfig()).validate()
    if ray is not None:
        ray.validate()
        if extractor is not None:
            raise ValueError("with ray, each encode actor builds its own extractor: pass config, not extractor")
    if extractor is None:
        get_model_cfg(cfg.model)  # an unknown model name is reported before the input folder is walked
    globs = tuple(cfg.globs)
    t0 = time.perf_counter()
    paths, root, problems = collect_inputs(src, globs)
    with ExitStack() as held:
        runner = None
        if ray is not None:  # one driver process: Ray runs the workers
            from neardup.scaleout.extract import RayExtraction

            runner = held.enter_context(RayExtraction.start(cfg, ray))
            # the actors' extractor as one of them described it: identity, preprocessing, dtype (never encodes)
            info, ext = dist.DistInfo(), cast(Extractor, runner.extractor)
        else:
            info = dist.init(cfg.device)  # before the model is built: pins each rank to its own GPU
            ext = extractor or create_extractor(cfg.model, weights=cfg.weights, device=cfg.device, amp=cfg.amp,
                                                engine=cfg.engine, calibration=cfg.calibration,
                                                input_size=cfg.input_size, layer=cfg.layer,
                                                compile=cfg.compile or None)
        dtype, max_pixels, shard_size = cfg.dtype, cfg.max_pixels, cfg.shard_size
        _check_postprocess(ext, dtype, cfg.normalize, cfg.whiten, cfg.transform_from)
        out = Path(out)
        post = {"normalize": cfg.normalize, "whiten": cfg.whiten, "whiten_sample": cfg.whiten_sample,
                "transform_from": str(cfg.transform_from) if cfg.transform_from else None}
        # rank 0 claims, locks and prepares the output; every rank learns the verdict (no one hangs on an error)
        verdict, error = None, None
        if info.is_main:
            try:
                with _naming(out):  # a full disk while the folder is marked still names it
                    own = held.enter_context(claim_out_dir(out, "extract", overwrite=cfg.overwrite, owned=OWNED,
                                                           recognise=is_extraction))
                    remove_stale_tmp(out / "shards")
                job = _job_record(ext, paths, shard_size, dtype, max_pixels, globs, post)
                _prepare_output(out, job, own)
            except Exception as exc:  # noqa: BLE001 - re-raised below, after the other ranks are told
                verdict, error = f"{exc}" or type(exc).__name__, exc
        verdict = dist.broadcast_object(verdict)  # type: ignore[assignment]
        if error is not None:
            raise error
        if verdict:
            raise UsageError(str(verdict))
        if not info.is_main:
            held.enter_context(claim_out_dir(out, "extract", owned=OWNED, recognise=is_extraction, lock=False))
        return _run(ext, paths, root, problems, out, info, src=src, t0=t0, batch_size=cfg.batch_size,
                    workers=cfg.workers,
                    shard_size=shard_size, dtype=dtype, max_pixels=max_pixels, post=post,
                    show_progress=show_progress, write_config=write_config, runner=runner)


class ShardWriter:
    """The uncommitted shards ``todo`` of one extraction: features and skip reasons gathered by input index, each
    shard committed (:func:`~neardup.extract.store.write_shard`) the moment its last image is in.

    Why a class: the in-process loop and the Ray driver (:mod:`neardup.scaleout.extract`) receive batches in
    different orders, and must write the same shards.
    """

    def __init__(self, out: Path, paths: list[str], shard_size: int, todo: list[int], width: int,
                 np_dtype: np.dtype, model: str) -> None:
        self.out, self.paths, self.shard_size = out, paths, shard_size
        self.width, self.np_dtype, self.model = width, np_dtype, model
        self.pending: dict[int, dict[str, Any]] = {i: {"feats": {}, "bad": {}} for i in todo}

    def _span(self, i: int) -> tuple[int, int]:
        return i * self.shard_size, min(len(self.paths), (i + 1) * self.shard_size)

    def add(self, good: list[int], feats: np.ndarray | None, bad: list[tuple[int, str]]) -> None:
        """Features of the inputs ``good`` (global indices) and the reasons of those ``bad``; commits the shards
        this completes.

        Raises:
            UsageError: non-finite features (a broken model or precision: nothing is written).
        """
        if feats is not None and feats.dtype.kind == "f" and not np.all(np.isfinite(feats)):
            raise UsageError(f"non-finite features from {self.model}; check --amp and the weights")
        touched = set()
        for j, f in zip(good, feats if feats is not None else [], strict=True):
            self.pending[j // self.shard_size]["feats"][j] = f
            touched.add(j // self.shard_size)
        for j, reason in bad:
            self.pending[j // self.shard_size]["bad"][j] = reason
            touched.add(j // self.shard_size)
        for i in sorted(touched):
            lo, hi = self._span(i)
            if len(self.pending[i]["feats"]) + len(self.pending[i]["bad"]) == hi - lo:
                self._flush(i)

    def finish(self) -> None:
        """Commit what is left (shards of only-empty slices: none, unless every input was given)."""
        for i in sorted(self.pending):
            self._flush(i)

    def _flush(self, i: int) -> None:
        lo, hi = self._span(i)
        rec = self.pending.pop(i)
        keep = [j for j in range(lo, hi) if j in rec["feats"]]
        feats = (np.stack([rec["feats"][j] for j in keep]).astype(self.np_dtype) if keep
                 else np.zeros((0, self.width), self.np_dtype))
        skipped = [{"path": self.paths[j], "reason": rec["bad"][j]} for j in range(lo, hi) if j in rec["bad"]]
        with _naming(self.out / "shards" / f"{shard_name(i)}.npy"):
            write_shard(self.out, i, feats, [self.paths[j] for j in keep], skipped)


def _run(ext: Extractor, paths: list[str], root: str, problems: list[dict[str, str]], out: Path, info: dist.DistInfo, *,
         src: str | os.PathLike, t0: float, batch_size: int, workers: int | None, shard_size: int, dtype: str,
         max_pixels: int, post: dict[str, Any], show_progress: bool,
         write_config: Callable[[Path], None] | None, runner: Any = None) -> ExtractReport:
    """Compute this rank's uncommitted shards (here, or with ``runner`` on Ray), then (rank 0) the transform and
    meta.json."""
    n_shards = max(1, -(-len(paths) // shard_size))
    np_dtype = np.dtype(np.uint8) if ext.dtype == np.uint8 else np.dtype(dtype)
    width = ext.num_features // 8 if ext.metric == "hamming" else ext.num_features
    mine = [i for i in range(n_shards) if i % info.world_size == info.rank]  # stable shard assignment
    done = {i for i in mine if committed_shard(out, i, width, np_dtype) is not None}
    todo = [i for i in mine if i not in done]
    todo_idx = [j for i in todo for j in range(i * shard_size, min(len(paths), (i + 1) * shard_size))]
    my_total = sum(min(len(paths), (i + 1) * shard_size) - i * shard_size for i in mine)
    shards = ShardWriter(out, paths, shard_size, todo, width, np_dtype, ext.name)
    rank_tag = f" [rank {info.rank}/{info.world_size}]" if info.enabled else ""
    bar = progress(total=my_total, initial=my_total - len(todo_idx), desc=f"extract {ext.name}{rank_tag}", unit="img",
                   disable=not show_progress)
    try:
        if runner is not None:
            runner.run(paths, todo_idx, shards, batch_size, max_pixels, bar)
        else:
            workers = default_workers() if workers is None else workers
            for local_idx, batch, bad in _loader(ext, [paths[j] for j in todo_idx], batch_size, workers, max_pixels):
                feats = ext.encode(batch) if batch is not None else None
                shards.add([todo_idx[k] for k in local_idx], feats, [(todo_idx[k], r) for k, r in bad])
                bar.update(len(local_idx) + len(bad))
        shards.finish()
    finally:
        bar.close()

    dist.barrier()  # every rank's shards are committed
    verdict = None
    if info.is_main:
        try:
            fitted = _fit_postprocess(out, n_shards, post["normalize"], post["whiten"], post["whiten_sample"],
                                      post["transform_from"])
            _write_meta(out, ext, paths, root, problems, n_shards, shard_size, np_dtype, fitted)
        except UsageError as exc:
            verdict = str(exc)
    verdict = dist.broadcast_object(verdict)  # type: ignore[assignment]
    if verdict:
        raise UsageError(f"{verdict} in {src}")
    if info.is_main and write_config is not None:
        with _naming(out / "config.yaml"):
            write_config(out)
    dist.barrier()  # meta.json exists for everyone
    meta = read_json_object(out / "meta.json", "feature metadata", ("count", "skipped"))
    return ExtractReport(str(out), ext.name, meta["count"], meta["skipped"], time.perf_counter() - t0, len(done),
                         problems)


def _prepare_output(out: Path, job: dict[str, Any], own: bool) -> None:
    """Check that a resumed output was made the same way, then record the job (rank 0, under the lock)."""
    record = out / "job.json"
    if own and record.is_file():
        old = read_json_object(record, "job record")
        if old.get("job_schema") != JOB_SCHEMA:
            raise UsageError(f"{out} holds an extraction started by an older neardup, which did not record the "
                             f"weights and options it used: it cannot be resumed safely; use a new --out, or "
                             f"--overwrite to start over")
        diff = job_difference(old, job)
        if diff:
            raise UsageError(f"{out} holds an extraction with a different {diff}; use a new --out, or --overwrite "
                             f"to start over")
    elif any((out / "shards").glob("[0-9][0-9][0-9][0-9][0-9].*")):
        raise UsageError(f"{out} holds shards but no job.json (a damaged extraction): it cannot be resumed safely; "
                         f"use a new --out, or --overwrite to start over")
    with _naming(record):
        atomic_write_json(record, job)


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
    with _naming(out / FILE):
        tf.save(out / FILE)
    return {**tf.describe(), "fitted_on": str(transform_from) if transform_from else "this folder"}


def _write_meta(out: Path, ext: Extractor, paths: list[str], root: str, problems: list[dict[str, str]], n_shards: int,
                shard_size: int, np_dtype: np.dtype, post: dict[str, Any] | None = None) -> None:
    """Merge the committed shards' records into meta.json (rank 0 only)."""
    width = ext.num_features // 8 if ext.metric == "hamming" else ext.num_features
    records = [committed_shard(out, i, width, np_dtype) for i in range(n_shards)]
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
    with _naming(out / "meta.json"):
        atomic_write_json(out / "meta.json", meta)


def encode_paths(ext: Extractor, paths: list[str], batch_size: int = 32, workers: int | None = None,
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
