"""Sparse neighbour graphs with faiss: radius (range search) and k-NN, streamed in blocks.

Why: DBSCAN and the graph method only need each image's *close* neighbours; a
sparse graph of those costs O(n * neighbours) memory where a dense distance
matrix costs O(n^2). Indexes, PCA and search parameters come from the vector
layer (:mod:`neardup.fastsearch`). Float features go through L2 indexes; for
cosine the vectors are L2-normalised, so 1 - cos = ||a - b||^2 / 2 and the same
index serves both metrics. Hashes use faiss' binary indexes (distances in bits).

Inputs are prepared block by block (:func:`blocks`), so a caller's feature
matrix is never copied whole: for a million 1280-d vectors that copy alone
would be 5 GB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy import sparse

from neardup.clustering._common import check_features, cluster_metric
from neardup.errors import UsageError
from neardup.fastsearch.indexes import build_index, check_trainable, search_param_names, set_search_params, train_index
from neardup.fastsearch.vectors import PCA
from neardup.progress import progress

BLOCK = 16384


#: Most vectors an index is trained on (a seeded sample beyond that).
TRAIN_SAMPLE = 100_000


@contextlib.contextmanager
def _value_errors() -> Iterator[None]:
    """The vector layer's UsageErrors as ValueErrors: what scikit-learn-style estimators raise."""
    try:
        yield
    except UsageError as exc:
        raise ValueError(str(exc)) from None


Prepare = Callable[[np.ndarray], np.ndarray]


def projector(X: np.ndarray, metric: str, dim: int | None = None, sample: int = TRAIN_SAMPLE,
              seed: int = 0) -> Prepare:
    """``block -> vectors the index sees``: :func:`check_features`, then an optional PCA to ``dim`` dimensions.

    The PCA (:class:`neardup.fastsearch.vectors.PCA`) is fitted on a seeded sample of up to ``sample`` rows;
    ``dim`` at or above the feature width keeps the features as they are. For cosine the projected vectors
    are re-normalised, so distances stay cosine distances, now measured in the reduced space.

    Raises:
        ValueError: pca with hamming, a dimension < 1, or fewer sample rows than ``dim``.
    """
    metric = cluster_metric(metric)
    if dim is None:
        return lambda block: check_features(block, metric)
    if metric == "hamming":
        raise ValueError("pca reduces float features; it does not apply to the hamming metric of binary hashes")
    if int(dim) < 1:
        raise ValueError(f"pca must be >= 1 dimension, got {dim}")
    if dim >= X.shape[1] * (8 if X.dtype == np.uint8 else 1):
        return lambda block: check_features(block, metric)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(X), size=min(sample, len(X)), replace=False))
    with _value_errors():
        pca = PCA(int(dim), normalize=metric == "cosine").fit(check_features(X[idx], metric))
    return lambda block: pca.transform(check_features(block, metric))


def blocks(n: int, size: int = BLOCK) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def index_features(X: np.ndarray, metric: str, index: str = "flat", project: Prepare | None = None,
                   hnsw_m: int = 16, ef_construction: int = 40, show_progress: bool = False) -> Any:
    """A faiss index over ``X`` (prepared in blocks): ``flat`` (exact), ``hnsw`` (approximate) or a factory string.

    Built by the vector layer (:func:`neardup.fastsearch.indexes.build_index`): float vectors go into an l2
    index (cosine ones normalised first, see the module doc), hashes into a binary one.

    Raises:
        ValueError: an unsupported factory string, or too few vectors to train it.
    """
    metric = cluster_metric(metric)
    project = project or projector(X, metric)
    idx = trained_index(X, metric, index, project, hnsw_m, ef_construction)
    with progress(len(X), "index", "vec", disable=not show_progress) as bar:
        for start, stop in blocks(len(X)):
            idx.add(project(X[start:stop]))
            bar.update(stop - start)
    return idx


def trained_index(X: Any, metric: str, index: str, project: Prepare, hnsw_m: int = 16,
                  ef_construction: int = 40) -> Any:
    """The empty index :func:`index_features` fills: built by the vector layer and, when it needs training,
    trained on a seeded sample of up to :data:`TRAIN_SAMPLE` rows of ``X`` (prepared by ``project``).

    Why apart: the Ray k-NN (:mod:`neardup.scaleout.knn`) trains it once and gives a copy to each database shard.

    Raises:
        ValueError: an unsupported factory string, or too few vectors to train it.
    """
    first = project(X[:1])
    binary = metric == "hamming"
    d = first.shape[1] * 8 if binary else first.shape[1]
    prefix = "B" if binary else ""
    spec = {"flat": f"{prefix}Flat", "hnsw": f"{prefix}HNSW{int(hnsw_m)}"}.get(index, index)
    with _value_errors():
        idx = build_index(spec, d, "hamming" if binary else "l2", n=len(X), ef_construction=ef_construction)
        if not idx.is_trained:
            rng = np.random.default_rng(0)
            sample = np.sort(rng.choice(len(X), size=min(len(X), TRAIN_SAMPLE), replace=False))
            check_trainable(idx, spec, len(sample), "the features to cluster")
            train_index(idx, project(X[sample]), spec)
    return idx


def search_params(idx: Any, k: int, ef_search: int = 64) -> dict[str, int]:
    """The search parameters :func:`knn_graph` uses: efSearch = max(ef_search, k) for graphs, nprobe 16 for
    inverted lists, none for flat indexes."""
    names = search_param_names(idx)
    if "efSearch" in names:
        return {"efSearch": max(ef_search, k)}
    if "nprobe" in names:
        return {"nprobe": 16}
    return {}


def to_metric(raw: np.ndarray, metric: str) -> np.ndarray:
    """faiss distances (squared L2 or bits) -> distances in ``metric``."""
    raw = raw.astype(np.float32, copy=False)
    metric = cluster_metric(metric)
    if metric == "cosine":
        return np.clip(raw / 2.0, 0.0, 2.0)
    if metric == "l2":
        return np.sqrt(np.maximum(raw, 0.0))
    return raw


def from_metric(radius: float, metric: str) -> float:
    """A radius in ``metric`` -> the faiss radius (squared L2 or bits)."""
    metric = cluster_metric(metric)
    if metric == "cosine":
        return 2.0 * radius
    if metric == "l2":
        return radius * radius
    return radius


def knn_graph(X: np.ndarray, k: int, metric: str, index: str = "flat", project: Prepare | None = None,
              ef_search: int = 64, show_progress: bool = False, **index_kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row (itself included): (distances float32, indices int64), both (n, k).

    Graph indexes search with efSearch = max(ef_search, k), inverted lists with nprobe 16.
    Missing neighbours (approximate indexes) have index -1 and distance inf.
    """
    metric = cluster_metric(metric)
    project = project or projector(X, metric)
    idx = index_features(X, metric, index, project, show_progress=show_progress, **index_kw)
    set_search_params(idx, search_params(idx, k, ef_search))
    k = min(k, len(X))
    D = np.empty((len(X), k), dtype=np.float32)
    ids = np.empty((len(X), k), dtype=np.int64)
    with progress(len(X), "k-NN", "vec", disable=not show_progress) as bar:
        for start, stop in blocks(len(X)):
            d, i = idx.search(project(X[start:stop]), k)
            D[start:stop] = np.where(i >= 0, to_metric(d, metric), np.inf)
            ids[start:stop] = i
            bar.update(stop - start)
    return D, ids


def radius_graph(X: np.ndarray, radius: float, metric: str, show_progress: bool = False) -> sparse.csr_matrix:
    """Sparse (n, n) distances of every pair within ``radius`` (self pairs included, explicit zeros kept).

    Exact (faiss range search on a flat index). Memory grows with the number of
    pairs found: pick the radius with care on large, dense data.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    metric = cluster_metric(metric)
    project = projector(X, metric)
    idx = index_features(X, metric, "flat", project)
    # faiss keeps d < r (L2) strictly: search a hair wider, then filter exactly in the metric
    r = from_metric(radius, metric)
    r = int(np.floor(r)) + 1 if metric == "hamming" else r * (1 + 1e-5) + 1e-7
    indptr, data, indices = [np.zeros(1, dtype=np.int64)], [], []
    with progress(len(X), "range", "vec", disable=not show_progress) as bar:
        for start, stop in blocks(len(X)):
            lims, d, i = idx.range_search(project(X[start:stop]), r)
            d = to_metric(d, metric)
            keep = d <= radius
            kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
            counts = kept[lims[1:]] - kept[lims[:-1]]
            indptr.append(indptr[-1][-1] + np.cumsum(counts))
            data.append(d[keep])
            indices.append(i[keep])
            bar.update(stop - start)
    n = len(X)
    graph = sparse.csr_matrix((np.concatenate(data) if data else np.zeros(0, np.float32),
                               np.concatenate(indices) if indices else np.zeros(0, np.int64),
                               np.concatenate(indptr)), shape=(n, n))
    graph.has_sorted_indices = False
    graph.sort_indices()
    return graph
