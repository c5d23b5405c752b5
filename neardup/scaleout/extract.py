"""``neardup extract --ray``: the feature store of :mod:`neardup.extract.pipeline`, computed on Ray Data.

The dataset, in order of the inputs: one row per batch of image paths (the batches the in-process loop makes,
so each forward sees the same images) -> **decode** with ``map_batches`` on CPU tasks (the same
:class:`~neardup.extract.pipeline.ImageDataset` decode, preprocessing and skip reasons) -> **encode** with a
stateful actor pool (:class:`EncodeActor`: the model loaded once per actor; one GPU per actor when the cluster has
GPUs, CPU threads otherwise) -> the driver, which hands each batch to the pipeline's
:class:`~neardup.extract.pipeline.ShardWriter`: every shard is committed atomically the moment its last image is
in, so a killed job resumes from its committed shards, exactly as ``neardup extract`` does.

Why the driver writes: the output folder is claimed and locked by one process (:mod:`neardup.outdir`), and the
features are small next to the images (5 KB per image at 1280-d); workers need the images, not the output.
Tensors travel between the stages as ``.npy`` bytes (never pickles of our own).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.extract.config import ExtractConfig
from neardup.scaleout.engine import Cluster, EncodePlan, RayConfig, kill_hook, ray_session

#: keys of ``describe()`` that every encode actor must share with the probe (they decide the features)
SAME = ("model", "num_features", "metric", "dtype", "preprocessing", "feature_layer", "amp", "engine", "quantization")


def pack(a: np.ndarray) -> bytes:
    """An array as ``.npy`` bytes (what the stages pass each other)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


class Portable:
    """Ship a torchvision object to Ray workers that have not imported neardup yet.

    Why: unpickling a torchvision transform imports torchvision, which on a CPU torch with PyPI's CUDA torchvision
    dies unless :mod:`neardup._compat` ran first (see there). A fresh worker that gets a decode task before any
    neardup code has run would fail at random. Pickled through this wrapper, the stream names only
    :func:`_restore`, which imports the shim before it unpickles the object itself.
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return _restore, (pickle.dumps(self.obj),)


def _restore(blob: bytes) -> Any:
    """The object :class:`Portable` wrapped (ours, pickled by the driver one hop earlier)."""
    import neardup._compat  # noqa: F401 - before torchvision: registers its missing ops

    return pickle.loads(blob)  # noqa: S301 - written by this job's driver, never a file


def _options(cfg: ExtractConfig, device: str) -> dict[str, Any]:
    """The :func:`~neardup.extract.registry.create_extractor` arguments of ``cfg`` on ``device``."""
    return {"name": cfg.model, "weights": cfg.weights, "device": device, "amp": cfg.amp, "engine": cfg.engine,
            "calibration": cfg.calibration, "input_size": cfg.input_size, "layer": cfg.layer,
            "compile": cfg.compile or None}


def _build(options: dict[str, Any], threads: int) -> Any:
    import torch

    from neardup.extract.registry import create_extractor

    torch.set_num_threads(threads)  # before the model: ONNX Runtime takes torch's thread count
    return create_extractor(**options)


@dataclass
class ProbedExtractor:
    """An extractor as the encode actors build it, described by one of them (:func:`_probe`) for the driver.

    The driver needs its identity (job record, meta.json), its preprocessing (the decode tasks run it) and the
    digest of its weights, computed where the weights are; it never encodes. Why not build it on the driver: a
    GPU actor resolves ``--amp auto`` to bf16 and the driver, without a GPU, would record fp32.
    """

    cfg: Any
    description: dict[str, Any]
    weights_path: str | None
    weights_sha256: str | None
    transform: Any
    draft_size: tuple[int, int] | None
    dtype: Any

    @property
    def name(self) -> str:
        return str(self.description["model"])

    @property
    def num_features(self) -> int:
        return int(self.description["num_features"])

    @property
    def metric(self) -> str:
        return str(self.description["metric"])

    def describe(self) -> dict[str, Any]:
        return dict(self.description)


def _probe(options: dict[str, Any], threads: int) -> ProbedExtractor:
    """Build the extractor on a worker with an encode actor's resources and describe it (runs as a Ray task)."""
    from neardup.extract.weights import file_sha256

    ext = _build(options, threads)
    weights = getattr(ext, "weights_path", None)
    return ProbedExtractor(ext.cfg, ext.describe(), weights, file_sha256(weights) if weights else None,
                           ext.transform, ext.draft_size, ext.dtype)


def decode_batches(batch: dict[str, np.ndarray], transform: Any, draft_size: tuple[int, int] | None,
                   max_pixels: int) -> dict[str, np.ndarray]:
    """Decode and preprocess each row's batch of paths (a Ray Data ``map_batches`` function, CPU tasks).

    Rows in: ``batch`` (its number) and ``paths`` (NUL-joined). Rows out: ``batch``, ``x`` (the stacked tensors of
    the readable images, ``.npy`` bytes; empty when none is), ``good`` (their positions in the batch) and ``bad``
    (JSON ``[[position, reason], ...]``): what :func:`~neardup.extract.pipeline.collate` gives the in-process loop.
    """
    from neardup.extract.pipeline import ImageDataset, collate

    if isinstance(transform, Portable):  # not pickled on the way (Ray ran the task in this process)
        transform = transform.obj
    out: dict[str, list[Any]] = {"batch": [], "x": [], "good": [], "bad": []}
    for b, joined in zip(batch["batch"].tolist(), batch["paths"].tolist(), strict=True):
        paths = str(joined).split("\0")
        ds = ImageDataset(paths, transform, draft_size, max_pixels)
        good, x, bad = collate([ds[i] for i in range(len(paths))])
        out["batch"].append(b)
        out["x"].append(pack(x.numpy()) if x is not None else b"")
        out["good"].append(pack(np.asarray(good, dtype=np.int64)))
        out["bad"].append(json.dumps(bad))
    return {"batch": np.asarray(out["batch"], dtype=np.int64),
            **{k: np.asarray(out[k], dtype=object) for k in ("x", "good", "bad")}}


class EncodeActor:
    """One model per actor, loaded once; encodes the decoded batches (a Ray Data actor pool).

    Args:
        options: :func:`~neardup.extract.registry.create_extractor` arguments (the device is the actor's).
        threads: torch (and ONNX Runtime) threads.
        expect: the probe's description: an actor that builds something else (another GPU type, another engine)
            refuses to start rather than mix features.
        kill: the test-only :data:`~neardup.scaleout.engine.KILL_ENV` hook, read on the driver.
    """

    def __init__(self, options: dict[str, Any], threads: int, expect: dict[str, Any],
                 kill: tuple[int, str | None] | None = None) -> None:
        self.ext = _build(options, threads)
        mine = self.ext.describe()
        differ = [k for k in SAME if mine.get(k) != expect.get(k)]
        if differ:
            raise UsageError(f"a Ray encode actor built {options['name']} differently from the first one "
                             f"({', '.join(f'{k}: {expect.get(k)} -> {mine.get(k)}' for k in differ)}); "
                             f"run on identical workers, or fix --device/--engine/--amp")
        self.kill, self.calls = kill, 0

    def _maybe_die(self) -> None:
        """The test-only hook: exit like a killed worker before the (N+1)-th batch (once per marker file)."""
        if self.kill is None or self.calls < self.kill[0]:
            return
        marker = self.kill[1]
        if marker is not None:
            if os.path.exists(marker):
                return
            with open(marker, "w") as f:
                f.write(f"{os.getpid()}\n")
        os._exit(1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self._maybe_die()
        self.calls += 1
        feats = []
        for x in batch["x"].tolist():
            feats.append(pack(self.ext.encode(torch.from_numpy(unpack(x)))) if len(x) else b"")
        return {"batch": batch["batch"], "feats": np.asarray(feats, dtype=object), "good": batch["good"],
                "bad": batch["bad"]}


@dataclass
class RayExtraction:
    """One extraction's Ray side: the session, the encode plan and the probed model (see :meth:`start`)."""

    cfg: ExtractConfig
    ray_cfg: RayConfig
    cluster: Cluster
    plan: EncodePlan
    extractor: ProbedExtractor

    @classmethod
    @contextmanager
    def start(cls, cfg: ExtractConfig, ray_cfg: RayConfig) -> Iterator[RayExtraction]:
        """Start or join Ray, plan the encode actors, and probe the model on one worker; Ray stops at the end.

        Raises:
            UsageError: Ray missing or unreachable, a device the cluster lacks, or a model that cannot be built.
        """
        with ray_session(ray_cfg) as cluster:
            import ray

            plan = cluster.encode_plan(cfg.device, ray_cfg.actors)
            probe = ray.remote(num_cpus=min(1.0, plan.cpus), num_gpus=plan.gpus, max_retries=0)(_probe)
            try:
                ext = ray.get(probe.remote(_options(cfg, plan.device), plan.threads))
            except ray.exceptions.RayTaskError as exc:
                raise _as_usage_error(exc, "building the model on a Ray worker failed") from None
            yield cls(cfg, ray_cfg, cluster, plan, ext)

    def run(self, paths: list[str], todo_idx: list[int], shards: Any, batch_size: int, max_pixels: int,
            bar: Any) -> None:
        """Decode and encode the inputs ``todo_idx`` on Ray, handing each batch to ``shards`` (a ShardWriter).

        Raises:
            UsageError: a failed Ray job (finished shards are kept: a re-run resumes), or non-finite features.
        """
        import ray

        if not todo_idx:
            return
        batches = [todo_idx[s:s + batch_size] for s in range(0, len(todo_idx), batch_size)]
        rows = [{"batch": b, "paths": "\0".join(paths[j] for j in idx)} for b, idx in enumerate(batches)]
        ext, plan = self.extractor, self.plan
        ds: Any = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(decode_batches, batch_size=1, num_cpus=plan.decode_cpus,
                            fn_kwargs={"transform": Portable(ext.transform), "draft_size": ext.draft_size,
                                       "max_pixels": max_pixels})
        with warnings.catch_warnings():  # restarts have no named parameter yet (ray_remote_args is deprecated)
            warnings.simplefilter("ignore")
            ds = ds.map_batches(EncodeActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=plan.actors),
                                num_cpus=plan.cpus, num_gpus=plan.gpus,
                                fn_constructor_kwargs={"options": _options(self.cfg, plan.device),
                                                       "threads": plan.threads, "expect": ext.describe(),
                                                       "kill": kill_hook()},
                                max_restarts=self.ray_cfg.retries, max_task_retries=self.ray_cfg.retries)
        bar.set_postfix_str(f"Ray: {plan.describe()}", refresh=False)
        try:
            for row in ds.iter_rows():
                idx = batches[int(row["batch"])]
                good = [idx[k] for k in unpack(row["good"]).tolist()]
                feats = unpack(row["feats"]) if len(row["feats"]) else None
                bad = [(idx[k], str(reason)) for k, reason in json.loads(row["bad"])]
                shards.add(good, feats, bad)
                bar.update(len(idx))
        except Exception as exc:  # noqa: BLE001 - a dead worker or a task error: one line, and how to resume
            if isinstance(exc, UsageError) and not isinstance(exc, ray.exceptions.RayError):
                raise  # the driver's own (non-finite features)
            raise _as_usage_error(exc, "the Ray extraction failed") from None


def _as_usage_error(exc: BaseException, what: str) -> UsageError:
    """A Ray failure as one line: the user's error when a task raised one, else what died and how to resume."""
    inner = exc
    for _ in range(16):  # RayTaskError.cause, Ray Data's UserCodeException.__cause__, ...
        nxt = getattr(inner, "cause", None) or inner.__cause__
        if nxt is None or nxt is inner:
            break
        inner = nxt
    if isinstance(inner, UsageError):
        return UsageError(str(inner.args[0]) if inner.args else str(inner))
    first = " ".join(str(inner).split())[:300]
    return UsageError(f"{what} ({type(inner).__name__}: {first}); committed shards are kept: re-run the same "
                      f"command to resume")
