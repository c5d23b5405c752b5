"""Content vectors of a large collection, read from the feature stores block by block, never whole.

Why: a million 1280-d float32 features are 5.1 GB, more than the whole scan may use. Above ``exact_limit``
contents the scan keeps no feature matrix: :class:`StoredRows` knows where each content's row lies (shard file,
row) and reads the rows a stage asks for, a block at a time, through a memory map opened for that read and
closed after it (so the pages it touched leave the process's resident memory).

- **k-NN**: on a :class:`Projection` of the rows to :data:`SEARCH_DIM` dimensions (1M x 128 float32: 0.5 GB),
  with an IVF index searched list by list (:func:`ivf_knn`). Its similarities only rank candidates.
- **groups**: the candidate edges within :data:`RESCORE_MARGIN` of the threshold are scored again on the full
  rows (:func:`edge_similarities`), and the star guard's centre checks read the full rows of each group
  (:func:`guarded_by_component`), so every decision uses the similarity the threshold was calibrated on.
- calibration and the keepers' scores read the few full rows they need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neardup.errors import UsageError

#: dimensions of the projection the k-NN search uses above ``exact_limit`` (it only ranks candidates)
SEARCH_DIM = 128
#: rows the projection is fitted on (a seeded sample beyond that)
PCA_SAMPLE = 20_000
#: rows the inverted lists are trained on (a seeded sample beyond that)
TRAIN_SAMPLE = 50_000
#: rows read per block
BLOCK = 16384
#: inverted lists each row's neighbours are searched in
NPROBE = 8
#: k-NN edges whose projected similarity is within this of the threshold are scored again on the full rows
RESCORE_MARGIN = 0.05


@dataclass(frozen=True)
class Shard:
    """One ``.npy`` shard of a feature store, as the reader needs it: where it is and how its rows become unit."""

    path: Path
    rows: int
    width: int  # width of a unit row (bits for a hash)
    metric: str
    transform: Any  # the store's FeatureTransform, or None

    @classmethod
    def of_store(cls, store: Any) -> list[Shard]:
        """The shards of an opened :class:`neardup.extract.store.FeatureStore` (headers checked by its ``open``)."""
        from neardup.extract.store import npy_header

        out = []
        for s in store.meta["shards"]:
            path = store.root / "shards" / f"{s}.npy"
            rows = npy_header(path)[0][0]
            out.append(cls(path, rows, store.dim, store.metric, store.transform))
        return out

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Unit float32 vectors of the sorted ``rows``, read through a map that is closed on return."""
        from neardup.dedup.features import unit_rows
        from neardup.extract.store import check_finite

        if not len(rows):
            return np.zeros((0, self.width), dtype=np.float32)
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise UsageError(f"damaged feature folder: cannot read {self.path} ({exc})") from None
        try:
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            raw = np.array(mm[lo:hi]) if hi - lo == len(rows) else np.asarray(mm[rows])
        finally:
            del mm  # unmapped: the pages read leave the resident set
        check_finite(raw, str(self.path))
        if self.transform is not None:
            raw = self.transform.apply(raw)
        return unit_rows(raw, self.metric)


class StoredRows:
    """An (n, d) matrix of unit float32 rows that stays on disk: row ``i`` is row ``row[i]`` of ``shards[shard[i]]``.

    Indexing (an int, an integer array or a slice) reads just those rows; :meth:`blocks` walks all of them.
    It stands in for the in-memory feature matrix wherever the scan only reads rows.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, shards: Sequence[Shard], shard: np.ndarray, row: np.ndarray, block: int = BLOCK) -> None:
        self.shards = list(shards)
        self.shard = np.asarray(shard, dtype=np.int32)
        self.row = np.asarray(row, dtype=np.int64)
        self.block = int(block)
        if self.shard.shape != self.row.shape or self.shard.ndim != 1:
            raise ValueError("shard and row must be 1-d arrays of the same length")
        self.dim = self.shards[0].width if self.shards else 0
        if any(s.width != self.dim for s in self.shards):
            raise UsageError("feature stores of different widths cannot be read as one matrix")
        self._search: dict[tuple[int | None, int, int], np.ndarray] = {}

    @classmethod
    def from_stores(cls, roots: Sequence[str | Path], block: int = BLOCK) -> StoredRows:
        """Every row of the feature folders ``roots``, in order (their models must agree: refused otherwise)."""
        from neardup.extract.space import require_same_space
        from neardup.extract.store import FeatureStore

        stores = [FeatureStore.open(r) for r in roots]
        if stores:
            require_same_space([s.space for s in stores], [f"feature folder {s.root}" for s in stores])
        shards: list[Shard] = []
        shard_of, row_of = [], []
        for store in stores:
            for sh in Shard.of_store(store):
                shard_of.append(np.full(sh.rows, len(shards), dtype=np.int32))
                row_of.append(np.arange(sh.rows, dtype=np.int64))
                shards.append(sh)
        return cls(shards, np.concatenate(shard_of) if shards else np.zeros(0, np.int32),
                   np.concatenate(row_of) if shards else np.zeros(0, np.int64), block)

    # ------------------------------------------------------------------ the array protocol the scan uses
    def __len__(self) -> int:
        return len(self.row)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            return self.take(np.array([i]))[0]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        return self.take(np.asarray(key, dtype=np.int64))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed) as an (len(idx), d) float32 array, read a block at a time."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) > self.block:
            return np.concatenate([self.take(idx[s:s + self.block]) for s in range(0, len(idx), self.block)])
        shard, row = self.shard[idx], self.row[idx]
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        for s in np.unique(shard).tolist():
            at = np.flatnonzero(shard == s)
            want, inverse = np.unique(row[at], return_inverse=True)
            out[at] = self.shards[s].read(want)[inverse]
        return out

    def blocks(self, size: int | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, rows[start:stop]) for consecutive blocks of ``size`` rows (default: the reader's block)."""
        size = int(size or self.block)
        for start in range(0, len(self), size):
            stop = min(start + size, len(self))
            yield start, stop, self.take(np.arange(start, stop))

    # ------------------------------------------------------------------ the vectors the k-NN search uses
    def search_vectors(self, dim: int | None = SEARCH_DIM, sample: int = PCA_SAMPLE, seed: int = 0,
                       show_progress: bool = False) -> np.ndarray:
        """The rows projected to ``dim`` dimensions (:class:`Projection`), (n, dim) float32; computed once.

        No projection (the unit rows themselves) when ``dim`` is None or at least the feature width, or when
        there are fewer rows than ``dim`` to fit it on.
        """
        key = (dim, sample, seed)
        if key not in self._search:
            self._search = {key: project(self, dim, sample, seed, show_progress)}  # one projection held at a time
        return self._search[key]


class Projection:
    """Unit rows -> their coordinates on the top ``d_out`` eigenvectors of the rows' second moment, re-normalised.

    Why not centred PCA (:class:`neardup.fastsearch.vectors.PCA`): network features share a large mean direction,
    and centring removes it, so cosines in the centred space are on another scale than the features' (on BSDS500
    with distractors, nearest-neighbour similarities fell by 0.1, and the real groups' recall by 0.04 at the same
    threshold). Without centring the projection keeps the most energy of the rows themselves, and a projected
    cosine is close to the full one (above it by the residual left out). The search only uses it to find
    candidates: :func:`neardup.dedup.find.group_contents` scores them again on the full rows.
    """

    def __init__(self, d_out: int) -> None:
        self.d_out = d_out

    def fit(self, x: np.ndarray) -> Projection:
        """Fit on ``x`` (n, d) unit rows; UsageError when ``d_out`` is outside 1..min(n, d)."""
        n, d = x.shape
        if not 0 < int(self.d_out) <= min(n, d):
            raise UsageError(f"a projection to {self.d_out} dimensions needs that many rows and features, "
                             f"got {n} x {d}")
        x = np.asarray(x, dtype=np.float32)
        _, vecs = np.linalg.eigh((x.T @ x).astype(np.float64) / n)  # ascending
        self.components_ = np.ascontiguousarray(vecs[:, ::-1][:, :int(self.d_out)], dtype=np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        from neardup.fastsearch.vectors import l2_normalize

        return l2_normalize(np.asarray(x, dtype=np.float32) @ self.components_)


def project(X: StoredRows, dim: int | None, sample: int = PCA_SAMPLE, seed: int = 0,
            show_progress: bool = False) -> np.ndarray:
    """``X`` through a :class:`Projection` to ``dim`` dimensions fitted on a seeded sample of its rows.

    Read and projected block by block: only the sample, one block and the output are ever in memory.
    """
    from neardup.progress import progress

    n, d = X.shape
    proj = fit_projection(X, dim, sample, seed)
    out = np.empty((n, dim if proj is not None and dim else d), dtype=np.float32)
    with progress(n, "project" if proj is not None else "load", "vec", disable=not show_progress) as bar:
        for start, stop, block in X.blocks():
            out[start:stop] = proj.transform(block) if proj is not None else block
            bar.update(stop - start)
    return out


def fit_projection(X: StoredRows, dim: int | None, sample: int = PCA_SAMPLE, seed: int = 0) -> Projection | None:
    """The :class:`Projection` :func:`project` applies, fitted on a seeded sample of ``X``'s rows (None: the rows
    are searched as they are: no ``dim``, ``dim`` at least their width, or fewer rows than ``dim``)."""
    n, d = X.shape
    if dim is not None and dim < 1:
        raise UsageError(f"the search dimension must be >= 1, got {dim}")
    if dim is None or dim >= d or n < dim:
        return None
    rng = np.random.default_rng(seed)
    return Projection(dim).fit(X.take(np.sort(rng.choice(n, size=min(sample, n), replace=False))))


def ivf_spec(n: int) -> str:
    """The inverted-file index :func:`ivf_knn` builds over ``n`` rows: ``IVF{4 sqrt(n)},Flat``."""
    return f"IVF{max(1, int(4 * np.sqrt(n)))},Flat"


def train_rows(n: int, seed: int = 0) -> np.ndarray:
    """The sorted rows (a seeded sample of at most :data:`TRAIN_SAMPLE`) the inverted lists are trained on."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(n, TRAIN_SAMPLE), replace=False))


def search_vectors(X: np.ndarray | StoredRows, show_progress: bool = False) -> np.ndarray:
    """The vectors the k-NN search uses: ``X`` itself in memory, the projection when streamed."""
    return X.search_vectors(show_progress=show_progress) if isinstance(X, StoredRows) else X


def ivf_knn(V: np.ndarray, k: int, nprobe: int = NPROBE, seed: int = 0,
            show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of every row of ``V`` (unit, float32), itself included: (cosine similarities, indices).

    An ``IVF{4 sqrt(n)},Flat`` index of the vector layer, searched list by list (faiss' ``big_batch_search``:
    all the rows probing one inverted list are compared with it in one matrix product), and each row's lists
    found once, for the add and the search. At a million rows that is several times faster than a search
    query by query. -1 (similarity -inf) where fewer than ``k`` were found.
    """
    import contextlib
    import io

    import faiss
    from faiss.contrib.big_batch_search import big_batch_search
    from faiss.contrib.ivf_tools import add_preassigned

    from neardup.fastsearch.indexes import build_index, check_trainable, train_index
    from neardup.progress import progress

    n, d = V.shape
    spec = ivf_spec(n)
    index = build_index(spec, d, "l2", n=n)
    sample = train_rows(n, seed)
    check_trainable(index, spec, len(sample), "the vectors to search")
    train_index(index, V[sample], spec)
    ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))  # an IndexIVFFlat (the stubs say Index)
    ivf.nprobe = min(nprobe, ivf.nlist)
    assign = np.empty((n, ivf.nprobe), dtype=np.int64)
    with progress(n, "assign", "vec", disable=not show_progress) as bar:
        for start in range(0, n, BLOCK):
            assign[start:start + BLOCK] = ivf.quantizer.search(V[start:start + BLOCK], ivf.nprobe)[1]
            bar.update(min(BLOCK, n - start))
    add_preassigned(ivf, V, np.ascontiguousarray(assign[:, 0]))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress whatever its verbosity
        D, idx = big_batch_search(ivf, V, min(k, n), q_assign=assign.astype(np.int32))
    del assign, index
    return np.where(idx >= 0, 1.0 - D / 2.0, -np.inf).astype(np.float32), idx


def edge_similarities(X: StoredRows, rows: np.ndarray, cols: np.ndarray, chunk: int = BLOCK // 2) -> np.ndarray:
    """Cosine similarity of each edge (rows[e], cols[e]) on the full rows, each pair scored once (an edge and its
    reverse are one pair), reading at most 2 x ``chunk`` rows at a time."""
    n = int(max(rows.max(initial=0), cols.max(initial=0))) + 1
    keys, which = np.unique(np.minimum(rows, cols).astype(np.int64) * n + np.maximum(rows, cols),
                            return_inverse=True)
    sims = np.empty(len(keys), dtype=np.float32)
    for start in range(0, len(keys), chunk):
        a, b = np.divmod(keys[start:start + chunk], n)
        ends, inverse = np.unique(np.r_[a, b], return_inverse=True)
        V = X.take(ends)
        sims[start:start + chunk] = np.einsum("ij,ij->i", V[inverse[:len(a)]], V[inverse[len(a):]])
    return sims[which.reshape(-1)]


def guarded_by_component(n: int, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, threshold: float,
                         vectors: Callable[[np.ndarray], np.ndarray], centre_threshold: float, *,
                         offset: np.ndarray | None = None, min_pair_share: float | None = None,
                         max_bridge: float | None = None) -> np.ndarray:
    """:func:`neardup.dedup.grouping.guarded_groups` run on each component of the threshold graph on its own.

    The same partition and labels (the guard never looks outside a component, and labels are numbered by each
    group's smallest member), but each run's cost is its own component's: on the whole graph of a million items
    every split would pass over all edges. Pairs (the commonest component) are checked in one vectorised step.

    Args:
        vectors: the unit vectors of some items (indices -> (len, d) array), for the centre checks.
        offset: per item, subtracted twice from each pair's dot product (score normalisation), as ``sims`` were.
        min_pair_share: the pair-share rule (None: :data:`~neardup.dedup.grouping.MIN_PAIR_SHARE`).
        max_bridge: the bridge rule (None: :data:`~neardup.dedup.grouping.MAX_BRIDGE`).
    """
    from neardup.dedup.grouping import MAX_BRIDGE, MIN_PAIR_SHARE, components, dot_sim, gram, guarded_groups

    share = MIN_PAIR_SHARE if min_pair_share is None else min_pair_share
    bridge = MAX_BRIDGE if max_bridge is None else max_bridge

    keep = sims >= threshold
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    comp = components(n, rows, cols)
    size = np.bincount(comp, minlength=n)
    labels = np.arange(n, dtype=np.int64)  # each group is labelled by one of its members, then renumbered
    pair = np.flatnonzero(size[comp] == 2)
    if len(pair):  # either end is the centre; the other joins it when close enough
        order = pair[np.argsort(comp[pair], kind="stable")]
        a, b = order[0::2], order[1::2]  # a < b
        close = np.empty(len(a), dtype=bool)
        for s in range(0, len(a), BLOCK):
            score = np.einsum("ij,ij->i", vectors(a[s:s + BLOCK]), vectors(b[s:s + BLOCK]))
            if offset is not None:
                score = score - offset[a[s:s + BLOCK]] - offset[b[s:s + BLOCK]]
            close[s:s + BLOCK] = score >= centre_threshold
        labels[b[close]] = a[close]
    big = np.flatnonzero(size >= 3)
    if len(big):
        members = np.argsort(comp, kind="stable")
        starts = np.searchsorted(comp[members], big)
        e_order = np.argsort(comp[rows], kind="stable")
        e_comp = comp[rows][e_order]
        for c, m0 in zip(big.tolist(), starts.tolist(), strict=True):
            m = members[m0:m0 + size[c]]  # sorted
            e = e_order[np.searchsorted(e_comp, c):np.searchsorted(e_comp, c, side="right")]
            V, o = vectors(m), None if offset is None else offset[m]
            sub = guarded_groups(len(m), np.searchsorted(m, rows[e]), np.searchsorted(m, cols[e]), sims[e],
                                 threshold, dot_sim(V, o), centre_threshold=centre_threshold, dense=gram(V, o),
                                 min_pair_share=share, max_bridge=bridge)
            labels[m] = m[np.unique(sub, return_index=True)[1]][sub]
    return renumber(labels)


def renumber(labels: np.ndarray) -> np.ndarray:
    """Labels 0..G-1 numbered in order of each group's smallest member."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]
