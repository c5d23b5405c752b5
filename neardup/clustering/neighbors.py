"""Sparse neighbour graphs with faiss: radius (range search) and k-NN, streamed in blocks.

Why: DBSCAN and the graph method only need each image's *close* neighbours; a
sparse graph of those costs O(n * neighbours) memory where a dense distance
matrix costs O(n^2). Float features go through L2 indexes; for cosine the
vectors are L2-normalised, so 1 - cos = ||a - b||^2 / 2 and the same index
serves both metrics. Hashes use faiss' binary indexes (distances in bits).

Inputs are prepared block by block (:func:`blocks`), so a caller's feature
matrix is never copied whole: for a million 1280-d vectors that copy alone
would be 5 GB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse

from neardup.clustering._common import check_features
from neardup.progress import progress

BLOCK = 16384


class Projector:
    """Optional PCA reduction (faiss.PCAMatrix), trained on a sample, applied block by block.

    For cosine the projected vectors are re-normalised, so distances stay
    cosine distances, now measured in the reduced space.
    """

    def __init__(self, X: np.ndarray, metric: str, dim: int | None, sample: int = 100_000, seed: int = 0) -> None:
        self.metric, self.pca = metric, None
        if dim is not None and metric == "hamming":
            raise ValueError("pca reduces float features; it does not apply to the hamming metric of binary hashes")
        if dim is not None and int(dim) < 1:
            raise ValueError(f"pca must be >= 1 dimension, got {dim}")
        if dim is not None and dim < X.shape[1] * (8 if X.dtype == np.uint8 else 1):
            import faiss

            n_train = min(sample, len(X))
            if n_train < dim:  # faiss aborts: a PCA fitted on n vectors has at most n components
                raise ValueError(f"pca {dim} needs at least {dim} vectors to fit the projection, but there are only "
                                 f"{n_train}: use pca <= {n_train}, or no pca")
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(X), size=n_train, replace=False))
            train = check_features(X[idx], metric)
            self.pca = faiss.PCAMatrix(train.shape[1], int(dim))
            self.pca.train(train)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        Y = check_features(block, self.metric)
        if self.pca is not None:
            Y = self.pca.apply(Y)
            if self.metric == "cosine":
                Y /= np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(Y)


def blocks(n: int, size: int = BLOCK) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)


def build_index(X: np.ndarray, metric: str, index: str = "flat", project: Projector | None = None,
                hnsw_m: int = 16, ef_construction: int = 40, show_progress: bool = False) -> Any:
    """A faiss index over ``X`` (prepared in blocks): ``flat`` (exact), ``hnsw`` (approximate) or a factory string."""
    import faiss

    project = project or Projector(X, metric, None)
    first = project(X[:1])
    d = first.shape[1]
    if metric == "hamming":
        bits = d * 8
        if index == "flat":
            idx = faiss.IndexBinaryFlat(bits)
        elif index == "hnsw":
            idx = faiss.IndexBinaryHNSW(bits, hnsw_m)
            idx.hnsw.efConstruction = ef_construction
        else:
            idx = _factory(faiss.index_binary_factory, bits, index)
    else:
        if index == "flat":
            idx = faiss.IndexFlatL2(d)
        elif index == "hnsw":
            idx = faiss.IndexHNSWFlat(d, hnsw_m)
            idx.hnsw.efConstruction = ef_construction
        else:
            idx = _factory(faiss.index_factory, d, index)
    if not idx.is_trained:
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(X), size=min(len(X), 100_000), replace=False))
        if len(sample) < getattr(idx, "nlist", 0):
            raise ValueError(f"index {index!r} has {idx.nlist} lists but there are only {len(sample)} vectors "
                             f"to train it: use fewer lists (e.g. IVF{max(1, int(np.sqrt(len(X))))},Flat) or flat")
        try:
            idx.train(project(X[sample]))
        except RuntimeError as exc:  # e.g. a PQ codebook with more centroids than training vectors
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            msg = msg.split("failed: ")[-1]
            raise ValueError(f"faiss cannot train index {index!r} on {len(sample)} vectors: {msg}") from None
    with progress(len(X), "index", "vec", disable=not show_progress) as bar:
        for start, stop in blocks(len(X)):
            idx.add(project(X[start:stop]))
            bar.update(stop - start)
    return idx


def _factory(make: Any, d: int, spec: str) -> Any:
    """faiss' factory, with its RuntimeError for a bad string turned into a short ValueError."""
    try:
        return make(d, spec)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"faiss cannot build index {spec!r}: {msg}") from None


def to_metric(raw: np.ndarray, metric: str) -> np.ndarray:
    """faiss distances (squared L2 or bits) -> distances in ``metric``."""
    raw = raw.astype(np.float32, copy=False)
    if metric == "cosine":
        return np.clip(raw / 2.0, 0.0, 2.0)
    if metric == "euclidean":
        return np.sqrt(np.maximum(raw, 0.0))
    return raw


def from_metric(radius: float, metric: str) -> float:
    """A radius in ``metric`` -> the faiss radius (squared L2 or bits)."""
    if metric == "cosine":
        return 2.0 * radius
    if metric == "euclidean":
        return radius * radius
    return radius


def knn_graph(X: np.ndarray, k: int, metric: str, index: str = "flat", project: Projector | None = None,
              ef_search: int = 64, show_progress: bool = False, **index_kw: Any) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row (itself included): (distances float32, indices int64), both (n, k).

    Missing neighbours (approximate indexes) have index -1 and distance inf.
    """
    import faiss

    project = project or Projector(X, metric, None)
    idx = build_index(X, metric, index, project, show_progress=show_progress, **index_kw)
    if hasattr(idx, "hnsw"):
        idx.hnsw.efSearch = max(ef_search, k)
    elif index != "flat":
        with contextlib.suppress(RuntimeError):
            faiss.ParameterSpace().set_index_parameter(idx, "nprobe", 16)
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
    project = Projector(X, metric, None)
    idx = build_index(X, metric, "flat", project)
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
