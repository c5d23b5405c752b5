"""``neardup search bench``: build, time and score faiss indexes on a retrieval set (schema ``neardup.search.bench/1``).

Stages, as in faiss' ``benchs/bench_all_ivf``: exact ground truth (streamed in
blocks) -> for each index spec and metric: train -> add (streamed in chunks) ->
for each search-parameter setting and k: one timed batch search (recall
against the manifest, ANN recall against the exact neighbours) and
``latency_queries`` single-query searches timed one by one (p50/p99).
Results are dataclasses; printing (:func:`format_frontier`) and plotting
(``neardup.fastsearch.plot``) are separate.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.exact import environment
from neardup.fastsearch.groundtruth import exact_knn
from neardup.fastsearch.indexes import (
    build_index,
    check_metric,
    check_trainable,
    faiss_device,
    family_of,
    index_nbytes,
    resolve_spec,
    search,
    search_param_names,
    set_search_params,
    to_cpu,
    to_device,
    train_index,
    train_size,
)
from neardup.fastsearch.metrics import ann_recall, mean_average_precision, micro_average_precision, recall_at_k
from neardup.fastsearch.schema import BENCH_SCHEMA, check_result
from neardup.fastsearch.synthetic import Database
from neardup.fastsearch.timing import Timer, faiss_threads, percentiles_ms
from neardup.fastsearch.vectors import PCA, canonical_metric, prepare_vectors
from neardup.progress import progress

SCHEMA = "neardup.search.bench/1"


@dataclass
class BenchPoint:
    """One (index, metric, search parameters, k) operating point."""

    index: str  # the spec as given
    factory: str  # the resolved faiss factory string
    family: str
    metric: str
    params: dict[str, int]
    k: int
    n_database: int
    n_queries: int
    dim: int
    train_seconds: float
    add_seconds: float
    index_bytes: int
    bytes_per_vector: float
    search_seconds: float  # one batch search of all queries
    qps: float
    latency_ms_p50: float | None  # single-query searches after a warm-up; None when none were timed
    latency_ms_p99: float | None
    latency_queries: int
    recall_at_1: float  # true match (manifest) ranked first
    recall_at_10: float | None  # None when k < 10
    mAP: float
    muAP: float
    ann_recall_1_at_1: float  # faiss 1-recall@1 against the exact neighbours
    ann_recall_10_at_10: float | None
    exact_recall_at_1: float  # the exact search's recall@1, for reference
    threads: int
    device: str
    note: str = ""


@dataclass
class BenchResult:
    """Everything one bench run measured; ``to_dict()`` is the JSON written to ``results.json``."""

    dataset: dict[str, Any]
    exact: dict[str, dict[str, float]]  # metric -> recall_at_1, recall_at_10, mAP, muAP, seconds
    records: list[BenchPoint]
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"schema": SCHEMA, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "bench result") -> BenchResult:
        """The result of a ``to_dict()`` JSON document, validated against ``BENCH_SCHEMA`` (UsageError)."""
        d = check_result(d, BENCH_SCHEMA, source)
        d = {k: v for k, v in d.items() if k != "schema"}
        d["records"] = [BenchPoint(**r) for r in d["records"]]
        return cls(**d)


@dataclass
class BenchConfig:
    """What to benchmark; empty sweeps mean the index's faiss defaults."""

    specs: tuple[str, ...] = ()  # default: Flat, IVF{nlist},Flat (BFlat, BIVF{nlist} for hashes)
    metrics: tuple[str, ...] = ()  # default: the features' own (cosine or hamming)
    nprobe: tuple[int, ...] = (1, 4, 16, 64)
    ef_search: tuple[int, ...] = (16, 64, 256)
    k_factor: tuple[int, ...] = (4,)  # re-ranking depth of ,RFlat indexes (k * k_factor candidates)
    ks: tuple[int, ...] = (10,)
    latency_queries: int = 200
    warmup: int = 10
    threads: int | None = None
    device: str = "auto"
    chunk_size: int = 65536
    train_size: int | None = None  # default: 64 per IVF list, >= 10k (see indexes.train_size)
    seed: int = 0

    def validate(self) -> None:
        if min(self.ks) < 1 or self.latency_queries < 0 or self.chunk_size < 1:
            raise UsageError("k and --chunk-size must be positive, --latency-queries >= 0")
        if any(v < 1 for v in (*self.nprobe, *self.ef_search, *self.k_factor)):
            raise UsageError("--nprobe, --ef-search and --k-factor values must be >= 1")
        for m in self.metrics:
            canonical_metric(m)
        faiss_device(self.device)  # an impossible --device is refused before the inputs are read


def _grid(names: set[str], cfg: BenchConfig) -> list[dict[str, int]]:
    axes = []
    if "nprobe" in names and cfg.nprobe:
        axes.append([("nprobe", v) for v in cfg.nprobe])
    if "efSearch" in names and cfg.ef_search:
        axes.append([("efSearch", v) for v in cfg.ef_search])
    if "k_factor_rf" in names and cfg.k_factor:
        axes.append([("k_factor_rf", v) for v in cfg.k_factor])
    return [dict(c) for c in itertools.product(*axes)] if axes else [{}]


def _scores_vs_manifest(ids: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    r = recall_at_k(ids, gt, (1, 10))
    return {"recall_at_1": r[1], "recall_at_10": r.get(10), "mAP": mean_average_precision(ids, gt),
            "muAP": micro_average_precision(ids, scores, gt)}


def run_bench(db: Database, queries: np.ndarray, gt: np.ndarray, cfg: BenchConfig, *, default_metric: str,
              dataset: dict[str, Any] | None = None, show_progress: bool = True) -> BenchResult:
    """Benchmark every (spec, metric) of ``cfg`` on ``db`` with ``queries`` whose true matches are ``gt``.

    Args:
        db: the database stream (real features scattered among synthetic ones).
        queries: raw query features (prepared per metric here).
        gt: (Q,) index of each query's true match among the real vectors (``db.parts`` concatenated).
        default_metric: used when ``cfg.metrics`` is empty.

    Raises:
        UsageError: bad specs, metrics an index family cannot use (checked before any work).
    """
    cfg.validate()
    gt = db.real_positions[gt]  # real-vector index -> database index
    metrics = tuple(dict.fromkeys(canonical_metric(m) for m in cfg.metrics or (default_metric,)))
    n, binary = len(db), db.dtype == np.uint8
    dim = db.width * 8 if binary else db.width
    specs = cfg.specs or (("BFlat", "BIVF{nlist}") if binary else ("Flat", "IVF{nlist},Flat"))
    pairs = [(s, m) for s in specs for m in metrics]
    for s, m in pairs:  # fail early, before hours of work
        _check_spec(s, m, n, dim, cfg.train_size)
    threads = faiss_threads(cfg.threads)
    device, device_note = faiss_device(cfg.device)
    kmax = max(max(cfg.ks), 10)
    rng = np.random.default_rng(cfg.seed)
    lat_idx = np.sort(rng.choice(len(queries), min(cfg.latency_queries, len(queries)), replace=False))

    exact: dict[str, dict[str, float]] = {}
    exact_ids: dict[str, np.ndarray] = {}
    for m in metrics:
        q = prepare_vectors(queries, m)
        t0 = time.perf_counter()
        best, nearest = exact_knn(db.chunks(cfg.chunk_size), q, kmax, m)
        exact[m] = {**_scores_vs_manifest(nearest, best, gt), "seconds": time.perf_counter() - t0}
        exact_ids[m] = nearest

    records: list[BenchPoint] = []
    bar = progress(total=len(pairs), desc="bench", unit="index", disable=not show_progress)
    for spec, m in pairs:
        factory = resolve_spec(spec, n)
        fam = family_of(factory)
        q = prepare_vectors(queries, m)
        index, used, note = to_device(build_index(factory, dim, m), device)
        t_train = 0.0
        if not index.is_trained:
            xt = prepare_vectors(db.sample(cfg.train_size or train_size(index, n), cfg.seed), m)
            t0 = time.perf_counter()
            train_index(index, xt, factory)
            t_train = time.perf_counter() - t0
            del xt
        t_add = 0.0
        for _, block in db.chunks(cfg.chunk_size):
            x = prepare_vectors(block, m)
            t0 = time.perf_counter()
            index.add(x)
            t_add += time.perf_counter() - t0
        nbytes = index_nbytes(to_cpu(index))
        for params in _grid(search_param_names(index), cfg):
            set_search_params(index, params)
            for k in cfg.ks:
                if cfg.warmup:
                    search(index, q[:cfg.warmup], k, m)  # warm-up on a slice, not a second full pass
                timer = Timer(repeats=1, min_seconds=0.2)
                scores, ids = timer.run(partial(search, index, q, k, m))
                lat = Timer(warmup=cfg.warmup).per_call(partial(_search_one, index, q, k, m), lat_idx)
                pct = percentiles_ms(lat) if len(lat) else {"p50": None, "p99": None}
                sc = _scores_vs_manifest(ids, scores, gt)
                records.append(BenchPoint(
                    index=spec, factory=factory, family=fam.name, metric=m, params=params, k=k, n_database=n,
                    n_queries=len(q), dim=dim, train_seconds=t_train, add_seconds=t_add, index_bytes=nbytes,
                    bytes_per_vector=nbytes / max(n, 1), search_seconds=timer.best,
                    qps=len(q) / max(timer.best, 1e-9),
                    latency_ms_p50=pct["p50"], latency_ms_p99=pct["p99"], latency_queries=len(lat_idx),
                    recall_at_1=sc["recall_at_1"], recall_at_10=sc["recall_at_10"], mAP=sc["mAP"], muAP=sc["muAP"],
                    ann_recall_1_at_1=ann_recall(ids, exact_ids[m], 1),
                    ann_recall_10_at_10=ann_recall(ids, exact_ids[m], 10) if k >= 10 else None,
                    exact_recall_at_1=exact[m]["recall_at_1"], threads=threads, device=used, note=note))
        del index
        bar.update(1)
    bar.close()
    ds = {"n_database": n, "n_real": db.n_real, "n_synthetic": db.n_synthetic, "n_queries": len(queries),
          "dim": dim, **(dataset or {})}
    env = {**environment(), "faiss_threads": threads, "device": device, "device_note": device_note}
    return BenchResult(ds, exact, records, environment=env, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _search_one(index: Any, queries: np.ndarray, k: int, metric: str, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Query ``j`` alone: what single-query latency times."""
    return search(index, queries[j:j + 1], k, metric)


def _check_spec(spec: str, metric: str, n: int, dim: int, train: int | None) -> None:
    """Refuse a spec that cannot work here (metric, dimensions, too few training vectors) before any work."""
    factory = resolve_spec(spec, n)
    check_metric(factory, metric)
    index = build_index(factory, dim, metric)
    n_train = min(train or train_size(index, n), n)
    source = f"--train-size {train}" if train and train < n else f"a database of {n} vectors"
    check_trainable(index, factory, n_train, source)


def pareto_front(points: list[BenchPoint], x: str = "recall_at_1", y: str = "qps") -> list[BenchPoint]:
    """Points no other point beats on both ``x`` and ``y`` (higher is better), sorted by ``x``."""
    pts = sorted(points, key=lambda p: (-getattr(p, y), -getattr(p, x)))
    front, best_x = [], -np.inf
    for p in pts:
        if getattr(p, x) > best_x:
            front.append(p)
            best_x = getattr(p, x)
    return sorted(front, key=lambda p: getattr(p, x))


def format_frontier(result: BenchResult, all_points: bool = False) -> str:
    """A text table of the recall@1-vs-QPS Pareto frontier (per metric), with speed-up over Flat."""
    lines = []
    for m in dict.fromkeys(r.metric for r in result.records):
        pts = [r for r in result.records if r.metric == m]
        flat = [r for r in pts if r.family in ("flat", "bflat")]
        ref_qps = max((r.qps for r in flat), default=None)
        shown = pts if all_points else pareto_front(pts)
        ex = result.exact.get(m, {})
        lines.append(f"{'all points' if all_points else 'Pareto frontier (recall@1 vs QPS)'}, metric {m}, "
                     f"N={result.dataset.get('n_database')}, Q={result.dataset.get('n_queries')}, "
                     f"exact recall@1={ex.get('recall_at_1', float('nan')):.4f}")
        head = (f"{'index':<34} {'params':<26} {'k':>3} {'R@1':>6} {'R@1/ex':>6} {'R@10':>6} {'µAP':>6} "
                f"{'1-R@1':>6} {'QPS':>9} {'xFlat':>6} {'p50ms':>7} {'p99ms':>7} {'B/vec':>7} {'train':>6} {'add':>6}")
        lines += [head, "-" * len(head)]
        for r in shown:
            p = ",".join(f"{k}={v}" for k, v in r.params.items()) or "-"
            rel = r.recall_at_1 / r.exact_recall_at_1 if r.exact_recall_at_1 else float("nan")
            speed = f"{r.qps / ref_qps:6.1f}" if ref_qps else f"{'-':>6}"
            r10 = f"{r.recall_at_10:6.3f}" if r.recall_at_10 is not None else f"{'-':>6}"
            lines.append(f"{r.factory[:34]:<34} {p[:26]:<26} {r.k:>3} {r.recall_at_1:6.3f} {rel:6.3f} {r10} "
                         f"{r.muAP:6.3f} {r.ann_recall_1_at_1:6.3f} {r.qps:9.0f} {speed} {_ms(r.latency_ms_p50)} "
                         f"{_ms(r.latency_ms_p99)} {r.bytes_per_vector:7.1f} {r.train_seconds:6.1f} "
                         f"{r.add_seconds:6.1f}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _ms(v: float | None) -> str:
    return f"{v:7.2f}" if v is not None else f"{'-':>7}"


@dataclass
class BenchInputs:
    """Database stream, raw queries, ground truth and a description: what :func:`run_bench` consumes."""

    db: Database
    queries: np.ndarray
    gt: np.ndarray
    metric: str  # the features' own metric (cosine or hamming)
    dataset: dict[str, Any]


def reduce_dim(parts: list[np.ndarray], queries: np.ndarray, d_out: int) -> tuple[list[np.ndarray], np.ndarray]:
    """PCA to ``d_out`` dimensions, fitted on the real database vectors (UsageError for an impossible ``d_out``)."""
    pca = PCA(d_out, name="--pca").fit(np.concatenate(parts), source="real database vectors")
    return [pca.transform(p) for p in parts], pca.transform(queries)


def load_bench_inputs(database: str, queries: str, distractors: tuple[str, ...] | list[str] = (),
                      manifest: str | None = None, synthetic: int = 0, synthetic_rank: int = 64, seed: int = 0,
                      pca: int | None = None) -> BenchInputs:
    """Feature folders (+ ``synthetic`` generated distractors) -> :class:`BenchInputs`.

    Raises:
        UsageError: mismatched feature folders, no matched query, PCA on hashes.
    """
    from neardup.fastsearch.dataset import load_retrieval_set
    from neardup.fastsearch.synthetic import fit_generator

    if synthetic < 0:
        raise UsageError("--synthetic must be >= 0")
    rs = load_retrieval_set(database, queries, distractors, manifest, None)
    parts, q = [rs.database], rs.queries
    if pca:
        if rs.binary:
            raise UsageError("--pca applies to float features, not binary hashes")
        parts, q = reduce_dim(parts, q, pca)
    gen = fit_generator(parts[0], synthetic_rank, seed) if synthetic else None
    info = {"model": rs.model, "n_distractors_real": rs.n_distractors, "n_unmatched_queries": rs.n_unmatched,
            "pca": pca, "synthetic_rank": getattr(gen, "rank_", None), "database": database, "queries": queries,
            "distractors": list(distractors)}
    return BenchInputs(Database(parts, gen, synthetic, seed), q, rs.gt, rs.metric, info)
