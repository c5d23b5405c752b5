"""The k-NN graph on Ray: the database split into shards held by actors, query blocks searched in parallel.

How (the faiss ``IndexShards`` layout, one shard per actor):

1. **train** once, on the driver: the vector layer's index (:func:`neardup.fastsearch.indexes.build_index`) trained
   on a seeded sample (the coarse quantizer of an IVF index); for dedup above ``exact_limit`` the rows are first
   projected with the :class:`~neardup.dedup.large.Projection` fitted on a sample, exactly as
   :mod:`neardup.dedup.large` does in one process.
2. **shard**: each :class:`IndexShard` actor gets a copy of the trained empty index and adds its own contiguous
   range of rows, read (and projected) by itself from the feature stores: no row passes through the driver.
3. **search**: per block of :data:`QUERY_BLOCK` query rows, one task prepares the block and finds the lists each
   query probes, every shard searches it, and one task merges the shards' top-k (:func:`merge_lists`). Every shard
   holds a subset of every inverted list and all shards probe the same lists, so the merged lists are those the
   one-process index gives (exact with ``Flat``).
4. **edges**: for dedup the merge task keeps the edges at or above a floor, scores those of projected rows again on
   the full rows (:func:`~neardup.dedup.large.edge_similarities`), and the driver writes each block's edges as an
   edge shard (``graph/edges-NNNNN.npz``, atomically; a re-run of the same search resumes from them). The grouping
   then runs on the edge list on the driver (:class:`RayKnnGraph`), which prints its memory estimate first.

Memory: a shard holds ``rows / shards`` vectors of the index (128 x 4 + 8 bytes each for dedup's projected
``IVF,Flat``); the driver holds the edges above the floor (:func:`grouping_bytes`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.scaleout.engine import Cluster

#: rows read (and projected) at a time
BLOCK = 16384
#: query rows per search block (the unit of parallel work, and of an edge shard)
QUERY_BLOCK = 65536
#: bytes the grouping on one node needs per edge and per row (edge arrays and their filtered copies, the sparse
#: graph of the components, the sort by component; labels, sizes and orders per row); checked by bench/ray_scale.py
BYTES_PER_EDGE, BYTES_PER_ROW = 72, 48
EDGE_FILE = "edges-{:05d}.npz"
#: how far below the calibration's first cut the search keeps edges: the final threshold can fall below that cut
#: (neighbour negatives lower the share of negatives above it), and a second search would cost as much as the first
CALIBRATION_HEADROOM = 0.05

Prepare = Callable[[np.ndarray], np.ndarray]


def grouping_bytes(n: int, edges: int) -> int:
    """Memory the connected components and star-guarded grouping of ``edges`` edges over ``n`` rows need."""
    return BYTES_PER_EDGE * int(edges) + BYTES_PER_ROW * int(n)


def _take(X: Any, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an in-memory matrix or of :class:`~neardup.dedup.large.StoredRows` (read from the stores)."""
    from neardup.dedup.large import StoredRows

    if isinstance(X, StoredRows):
        return X.take(idx)
    return np.asarray(X[idx])


def _prepared(X: Any, idx: np.ndarray, prepare: Prepare | None) -> np.ndarray:
    """Rows ``idx`` as the index sees them (``prepare``: a projection, a normalisation), float32 C-contiguous;
    read and prepared :data:`BLOCK` rows at a time (full rows are 5 KB each at 1280-d)."""
    if len(idx) > BLOCK:
        return np.concatenate([_prepared(X, idx[s:s + BLOCK], prepare) for s in range(0, len(idx), BLOCK)])
    v = _take(X, idx)
    return np.ascontiguousarray(prepare(v) if prepare is not None else v, dtype=np.float32)


def _query_block(X: Any, idx: np.ndarray, prepare: Prepare | None, coarse: np.ndarray | None,
                 nprobe: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A block of queries as every shard needs it: the prepared rows and, for inverted lists, the ``nprobe`` lists
    each one probes (``coarse``: the serialised coarse quantizer), found once here instead of once per shard."""
    Q = _prepared(X, idx, prepare)
    if coarse is None:
        return Q, None, None
    import faiss

    Dq, Iq = faiss.deserialize_index(np.asarray(coarse)).search(Q, nprobe)
    return Q, Dq, Iq


def merge_lists(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distances of each row over the shards' lists (ties by row index); inf / -1 for none."""
    D = np.concatenate([np.where(i >= 0, d, np.inf) for d, i in parts], axis=1).astype(np.float32, copy=False)
    ids = np.concatenate([i for _, i in parts], axis=1)
    order = np.lexsort((ids, D), axis=-1)[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(ids, order, axis=1)


class IndexShard:
    """One shard of the database: a copy of the trained empty index, filled with rows ``lo..hi`` (a Ray actor).

    Args:
        index: the trained empty index, serialised (``faiss.serialize_index``).
        params: search parameters (nprobe, efSearch) for the vector layer's ``set_search_params``.
        threads: faiss (OpenMP) threads of this actor.
    """

    def __init__(self, index: np.ndarray, params: dict[str, int], threads: int) -> None:
        import faiss

        from neardup.fastsearch.indexes import set_search_params

        faiss.omp_set_num_threads(threads)
        self.index: Any = faiss.deserialize_index(np.asarray(index))  # of its own class (IndexIVFFlat, ...)
        set_search_params(self.index, params)
        self.lo = 0

    def add(self, X: Any, lo: int, hi: int, prepare: Prepare | None) -> int:
        """Read, prepare and add rows ``lo..hi`` a block at a time; returns how many the shard holds."""
        self.lo = lo
        for s in range(lo, hi, BLOCK):
            self.index.add(_prepared(X, np.arange(s, min(hi, s + BLOCK)), prepare))
        return int(self.index.ntotal)

    def peak_rss(self) -> int:
        """Peak resident memory of this actor's process, in bytes: what one shard costs (bench/ray_scale.py)."""
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux

    def search(self, query: tuple[np.ndarray, np.ndarray | None, np.ndarray | None],
               k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, global row ids) of the ``k`` nearest rows of this shard (inf / -1 beyond its size).

        ``query``: (vectors, and for an IVF index the lists each probes with their distances, or None twice).
        """
        Q, Dq, Iq = query
        Q = np.ascontiguousarray(Q, dtype=np.float32)
        kk = min(k, int(self.index.ntotal))
        D = np.full((len(Q), k), np.inf, dtype=np.float32)
        ids = np.full((len(Q), k), -1, dtype=np.int64)
        if kk:
            d, i = self.index.search(Q, kk) if Iq is None else self._by_list(Q, kk, Iq, Dq)
            D[:, :kk], ids[:, :kk] = d, np.where(i >= 0, i + self.lo, -1)
        return D, ids

    def _by_list(self, Q: np.ndarray, k: int, Iq: np.ndarray, Dq: Any) -> tuple[np.ndarray, np.ndarray]:
        """The IVF search :func:`neardup.dedup.large.ivf_knn` runs: list by list (faiss' ``big_batch_search``: all
        the queries probing one list compared with it in one matrix product), on the lists found per block."""
        import contextlib
        import io

        from faiss.contrib.big_batch_search import big_batch_search

        if Iq.size <= self.index.nlist:  # a block too small for its bucket sort: the same lists, query by query
            return self.index.search_preassigned(Q, k, np.ascontiguousarray(Iq), np.ascontiguousarray(Dq))
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress whatever its verbosity
            return big_batch_search(self.index, Q, k, q_assign=np.ascontiguousarray(Iq, dtype=np.int32))


def _block_lists(k: int, *parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return merge_lists(list(parts), k)


def _block_edges(idx: np.ndarray, k: int, floor: float, X: Any, rescore: bool,
                 *parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The block's k-NN edges with cosine similarity (unit vectors, L2 index) at or above ``floor``: (rows, cols,
    k-NN similarity, similarity on the full rows)."""
    from neardup.dedup.large import edge_similarities

    D, ids = merge_lists(list(parts), k)
    sims = np.where(ids >= 0, 1.0 - D / 2.0, -np.inf).astype(np.float32)
    # neardup.dedup.grouping.edges, with the block's global row numbers (a self loop is a row meeting itself)
    r, c, s = np.repeat(np.asarray(idx, dtype=np.int64), ids.shape[1]), ids.ravel(), sims.ravel()
    keep = (c >= 0) & (c != r) & (s >= floor)
    r, c, s = r[keep], c[keep], s[keep]
    full = edge_similarities(X, r, c) if rescore and len(r) else s
    return r.astype(np.int64), c.astype(np.int64), s.astype(np.float32), np.asarray(full, dtype=np.float32)


@dataclass
class ShardedIndex:
    """The shard actors of one database, and the object-store references the search tasks read."""

    shards: list[Any]
    n: int
    X_ref: Any
    prepare_ref: Any
    k: int
    coarse_ref: Any = None  # the serialised coarse quantizer of an IVF index (None: the shards search whole)
    nprobe: int = 0

    def run(self, blocks: list[np.ndarray], task: Callable[[int, np.ndarray, list[Any]], Any],
            done: Callable[[int, Any], None], window: int | None = None) -> None:
        """Search ``blocks`` of query rows, at most ``window`` at a time; ``task(b, idx, parts)`` submits the merge
        of block ``b`` and ``done(b, result)`` receives it (in completion order)."""
        import ray

        prep = ray.remote(num_cpus=1)(_query_block)
        window = window or max(2, 2 * len(self.shards))
        todo = iter(enumerate(blocks))
        pending: dict[Any, int] = {}

        def submit() -> bool:
            nxt = next(todo, None)
            if nxt is None:
                return False
            b, idx = nxt
            q = prep.remote(self.X_ref, idx, self.prepare_ref, self.coarse_ref, self.nprobe)
            pending[task(b, idx, [s.search.remote(q, self.k) for s in self.shards])] = b
            return True

        while len(pending) < window and submit():
            pass
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            b = pending.pop(ready[0])
            done(b, ray.get(ready[0]))
            submit()

    def lists(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distances, neighbours) of ``rows`` over the whole database, nearest first."""
        import ray

        merge = ray.remote(num_cpus=1)(_block_lists)
        blocks = [np.asarray(rows[s:s + QUERY_BLOCK], dtype=np.int64) for s in range(0, len(rows), QUERY_BLOCK)]
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.run(blocks, lambda b, idx, parts: merge.remote(self.k, *parts), out.__setitem__)
        if not blocks:
            return np.zeros((0, self.k), np.float32), np.zeros((0, self.k), np.int64)
        return (np.concatenate([out[b][0] for b in range(len(blocks))]),
                np.concatenate([out[b][1] for b in range(len(blocks))]))


@contextmanager
def sharded_index(X: Any, index: Any, params: dict[str, int], prepare: Prepare | None, k: int, cluster: Cluster,
                  shards: int, show_progress: bool = False) -> Iterator[ShardedIndex]:
    """Fill ``shards`` actors with the rows of ``X`` in copies of the trained empty ``index``; removed at the end.

    Args:
        X: (n, d) rows in memory, or :class:`~neardup.dedup.large.StoredRows` (each actor reads its own).
        index: a trained, empty faiss index (the vector layer's; float vectors).
        params: its search parameters. prepare: block -> the vectors it indexes (None: the rows).
        k: neighbours each search returns. cluster: the Ray session's (:func:`~neardup.scaleout.engine.ray_session`).
    """
    import faiss
    import ray

    from neardup.progress import progress

    n = len(X)
    shards = max(1, min(shards, n))
    X_ref, prepare_ref = ray.put(X), ray.put(prepare)
    index_ref = ray.put(faiss.serialize_index(index))
    ivf = faiss.downcast_index(index)
    coarse = None
    if isinstance(ivf, faiss.IndexIVF):  # the lists each query probes are found once per block, not per shard
        coarse = ray.put(faiss.serialize_index(ivf.quantizer))
        nprobe = int(params.get("nprobe", ivf.nprobe))
    threads = max(1, cluster.cpus // shards)
    actor: Any = ray.remote(IndexShard).options(num_cpus=0, scheduling_strategy="SPREAD", max_restarts=0)
    bounds = np.linspace(0, n, shards + 1).astype(np.int64)
    handles = [actor.remote(index_ref, params, threads) for _ in range(shards)]
    try:
        with progress(n, f"index ({shards} Ray shards)", "vec", disable=not show_progress) as bar:
            adds = {h.add.remote(X_ref, int(lo), int(hi), prepare_ref): int(hi - lo)
                    for h, lo, hi in zip(handles, bounds[:-1], bounds[1:], strict=True)}
            while adds:
                ready, _ = ray.wait(list(adds), num_returns=1)
                ray.get(ready[0])
                bar.update(adds.pop(ready[0]))
        yield ShardedIndex(handles, n, X_ref, prepare_ref, k, coarse, nprobe if coarse is not None else 0)
    finally:
        for h in handles:
            ray.kill(h)


def knn_lists(X: np.ndarray, k: int, index: Any, params: dict[str, int], prepare: Prepare | None, cluster: Cluster,
              shards: int, show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Raw faiss distances and ids of every row's ``k`` nearest rows (itself included): what one process's
    ``index.search`` over all rows gives, computed by ``shards`` Ray actors."""
    with sharded_index(X, index, params, prepare, k, cluster, shards, show_progress) as sh:
        return sh.lists(np.arange(len(X), dtype=np.int64))


class RayKnnGraph:
    """The k-NN graph of a dedup scan on Ray, read through :class:`neardup.dedup.knngraph.KnnGraph`.

    The search runs when a stage first asks for edges: at the floor that stage needs (less
    :data:`~neardup.dedup.large.RESCORE_MARGIN` for projected rows, so the grouping's later, lower floor is
    covered, and less ``headroom`` for a calibrated threshold below the first cut), and again only if a later
    stage asks below it. Each block's edges become one edge shard in ``folder`` (resumed by a re-run of the same
    search); ``lists`` searches just the rows asked for.
    """

    def __init__(self, index: ShardedIndex, rescore: bool, folder: Path | None, identity: dict[str, Any],
                 show_progress: bool = False, headroom: float = 0.0) -> None:
        from neardup.dedup.large import RESCORE_MARGIN

        self.index, self.rescore, self.folder, self.identity = index, rescore, folder, identity
        self.show_progress = show_progress
        self.margin = RESCORE_MARGIN if rescore else 0.0
        self.headroom = headroom
        self.n = index.n
        self.floor = np.inf
        self.seconds = 0.0
        self.stats: dict[str, Any] = {}
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
        self._e: tuple[np.ndarray, ...] = (empty_i, empty_i, empty_f, empty_f)

    # ------------------------------------------------------------------ the KnnGraph interface
    def edges(self, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._ensure(floor - self.margin)
        r, c, s, _ = self._e
        keep = s >= floor
        return r[keep], c[keep], s[keep]

    def scored_edges(self, X: Any, floor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._ensure(floor)
        r, c, s, f = self._e
        keep = s >= floor
        return r[keep], c[keep], f[keep]

    def lists(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = time.perf_counter()
        D, ids = self.index.lists(np.asarray(rows, dtype=np.int64))
        self.seconds += time.perf_counter() - t
        return np.where(ids >= 0, 1.0 - D / 2.0, -np.inf).astype(np.float32), ids

    # ------------------------------------------------------------------ the search
    def _ensure(self, floor: float) -> None:
        """Search (again) when a stage needs edges below those kept; the first search keeps ``headroom`` more."""
        if floor < self.floor:
            t = time.perf_counter()
            self._search(float(floor - (self.headroom if np.isinf(self.floor) else 0.0)))
            self.seconds += time.perf_counter() - t

    def _job(self, floor: float) -> dict[str, Any]:
        return {"schema": "neardup.ray-knn/1", **self.identity, "n": self.n, "k": self.index.k, "floor": floor,
                "block": QUERY_BLOCK, "rescored": self.rescore}

    def _committed(self, floor: float) -> dict[int, tuple[np.ndarray, ...]]:
        """Edge shards a killed run of the same search left (others are removed: they are this command's)."""
        from neardup.io_utils import atomic_write_json, read_json_object

        if self.folder is None:
            return {}
        self.folder.mkdir(parents=True, exist_ok=True)
        job, record = self._job(floor), self.folder / "job.json"
        same = record.is_file() and read_json_object(record, "k-NN graph record") == job
        found: dict[int, tuple[np.ndarray, ...]] = {}
        for path in sorted(self.folder.glob("edges-[0-9][0-9][0-9][0-9][0-9].npz")):
            arrays = _read_edges(path) if same else None
            if arrays is None:
                path.unlink()
            else:
                found[int(path.stem.split("-")[1])] = arrays
        if not same:
            atomic_write_json(record, job)
        return found

    def _search(self, floor: float) -> None:
        import ray

        from neardup.progress import progress

        blocks = [np.arange(s, min(self.n, s + QUERY_BLOCK), dtype=np.int64) for s in range(0, self.n, QUERY_BLOCK)]
        results = self._committed(floor)
        merge = ray.remote(num_cpus=1)(_block_edges)
        X_ref = self.index.X_ref if self.rescore else None
        todo = [b for b in range(len(blocks)) if b not in results]
        bar = progress(self.n, f"k-NN edges >= {floor:.4f} ({len(self.index.shards)} Ray shards)", "vec",
                       disable=not self.show_progress, initial=self.n - sum(len(blocks[b]) for b in todo))

        def done(i: int, res: tuple[np.ndarray, ...]) -> None:
            b = todo[i]
            if self.folder is not None:
                _write_edges(self.folder / EDGE_FILE.format(b), res)
            results[b] = res
            bar.update(len(blocks[b]))

        try:
            self.index.run([blocks[b] for b in todo],
                           lambda i, idx, parts: merge.remote(idx, self.index.k, floor, X_ref, self.rescore, *parts),
                           done)
        finally:
            bar.close()
        ordered = [results[b] for b in range(len(blocks))]
        self._e = tuple(np.concatenate([r[j] for r in ordered]) if ordered else self._e[j] for j in range(4))
        self.floor = floor
        need = grouping_bytes(self.n, len(self._e[0]))
        self.stats = {"edges": len(self._e[0]), "floor": floor, "edge_shards": len(blocks),
                      "grouping_bytes_estimate": need}
        if self.show_progress:
            from tqdm import tqdm

            tqdm.write(f"k-NN graph: {len(self._e[0]):,} edges at or above {floor:.4f} in {len(blocks)} edge "
                       f"shard(s); grouping them on this node needs about {need / 1e9:.2f} GB "
                       f"({BYTES_PER_EDGE} B per edge + {BYTES_PER_ROW} B per row, {self.n:,} rows)", file=sys.stderr)


def _write_edges(path: Path, res: tuple[np.ndarray, ...]) -> None:
    import io

    from neardup.io_utils import atomic_write

    buf = io.BytesIO()
    np.savez(buf, rows=res[0], cols=res[1], knn=res[2], full=res[3])
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _read_edges(path: Path) -> tuple[np.ndarray, ...] | None:
    """An edge shard's arrays, or None when it is damaged (then it is searched again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = tuple(np.asarray(z[k]) for k in ("rows", "cols", "knn", "full"))
    except (OSError, ValueError, KeyError):
        return None
    return arrays if len({len(a) for a in arrays}) == 1 else None


# ---------------------------------------------------------------------------------------------------- dedup's graph
@contextmanager
def dedup_graph(X: Any, k: int, exact_limit: int, cluster: Cluster, shards: int, folder: Path | None,
                identity: dict[str, Any], show_progress: bool = False, seed: int = 0,
                headroom: float = 0.0) -> Iterator[RayKnnGraph]:
    """The graph :func:`neardup.dedup.find.knn` computes, on Ray: flat on the unit rows in memory; above
    ``exact_limit`` streamed rows projected (:func:`~neardup.dedup.large.fit_projection`) into an
    :func:`~neardup.dedup.large.ivf_spec` index trained on :func:`~neardup.dedup.large.train_rows`, nprobe
    :data:`~neardup.dedup.large.NPROBE`; streamed rows below it projected, searched flat. ``headroom``: how much
    lower than a stage's floor the first search keeps edges (:data:`CALIBRATION_HEADROOM` when calibrating).
    """
    from functools import partial

    import faiss

    from neardup.clustering._common import check_features
    from neardup.dedup.large import NPROBE, SEARCH_DIM, StoredRows, fit_projection, ivf_spec, train_rows
    from neardup.fastsearch.indexes import build_index, check_trainable, train_index

    n = len(X)
    streamed = isinstance(X, StoredRows)
    proj = fit_projection(X, SEARCH_DIM, seed=seed) if streamed else None
    # in memory: the rows as knn_graph prepares them for the cosine metric (normalised again, bit for bit)
    prepare = proj.transform if proj is not None else None if streamed else partial(check_features, metric="cosine")
    d = proj.d_out if proj is not None else X.shape[1]
    params: dict[str, int] = {}
    if streamed and n > exact_limit:
        spec = ivf_spec(n)
        index = build_index(spec, d, "l2", n=n)
        sample = train_rows(n, seed)
        check_trainable(index, spec, len(sample), "the vectors to search")
        train_index(index, _prepared(X, sample, prepare), spec)
        params = {"nprobe": min(NPROBE, int(faiss.extract_index_ivf(index).nlist))}  # as ivf_knn
    else:
        index = build_index("Flat", d, "l2")
    with sharded_index(X, index, params, prepare, min(k, n), cluster, shards, show_progress) as sh:
        yield RayKnnGraph(sh, streamed, folder, identity, show_progress, headroom)


# ---------------------------------------------------------------------------------------------------- cluster's graph
def graph_knn(X: np.ndarray, k: int, metric: str, index: str, project: Prepare, ef_search: int, ray_cfg: Any,
              show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """What :func:`neardup.clustering.neighbors.knn_graph` returns (distances in ``metric``, ids; inf / -1 where
    none was found), searched by index shards on Ray: the same trained index, search parameters and preparation.

    Raises:
        UsageError: binary hashes (the Ray search takes float vectors), Ray missing or unreachable.
        ValueError: what ``knn_graph`` refuses (an index spec, too few vectors to train it).
    """
    from neardup.clustering._common import cluster_metric
    from neardup.clustering.neighbors import search_params, to_metric, trained_index
    from neardup.scaleout.engine import ray_session

    metric = cluster_metric(metric)
    if metric == "hamming":
        raise UsageError("--ray searches float features; binary hashes (hamming) are clustered without --ray")
    idx = trained_index(X, metric, index, project)
    params = search_params(idx, k, ef_search)
    with ray_session(ray_cfg) as cluster:
        raw, ids = knn_lists(X, min(k, len(X)), idx, params, project, cluster, cluster.shards(ray_cfg.actors),
                             show_progress)
    return np.where(ids >= 0, to_metric(raw, metric), np.inf), ids
