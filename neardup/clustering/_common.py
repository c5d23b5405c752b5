"""What every clustering method shares: input checks, metric handling, stable labels.

Distances are always *distances* (smaller = closer) in the method's metric, so
one threshold means the same thing to every method:

* ``cosine``: 1 - cosine similarity, in [0, 2] (features are L2-normalised);
* ``l2`` (alias ``euclidean``): the L2 distance of the raw features;
* ``hamming``: the number of differing bits of packed binary hashes (uint8).

Metric names are those of the vector layer (:mod:`neardup.fastsearch.vectors`); the
estimators accept its aliases and work with the canonical name (:func:`cluster_metric`).
"""

from __future__ import annotations

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.vectors import canonical_metric, l2_normalize

METRICS = ("l2", "cosine", "hamming")
#: Most settings one sweep may have: each costs a clustering (or a cut) and a scoring of every image.
MAX_SETTINGS = 1000


def as_2d(X: np.ndarray) -> np.ndarray:
    """A dense 2-d array with >= 1 row and column, without copying (rows are not scanned here).

    sklearn's ``check_array`` gives its standard messages for sparse, complex,
    1-d and empty input.
    """
    from sklearn.utils import check_array

    return check_array(X, accept_sparse=False, dtype=None, ensure_all_finite=False, input_name="features")


def cluster_metric(metric: str) -> str:
    """The canonical name of a clustering metric (``euclidean`` -> ``l2``); ValueError for others (sklearn's way)."""
    try:
        return canonical_metric(metric, METRICS)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def check_features(X: np.ndarray, metric: str) -> np.ndarray:
    """Validate features for ``metric`` and return them ready for distance computations.

    Float features come back C-contiguous float32 (L2-normalised for cosine);
    hashes (uint8 packed bits) come back as they are for hamming, or unpacked to
    0/1 floats for the other metrics.

    Raises:
        ValueError: not 2-d, empty, NaN/inf rows, unknown metric, or hamming on float features.
    """
    metric = cluster_metric(metric)
    X = as_2d(X)
    if X.dtype == np.uint8:
        if metric == "hamming":
            return np.ascontiguousarray(X)
        X = np.unpackbits(X, axis=1).astype(np.float32)
    elif metric == "hamming":
        raise ValueError("the hamming metric needs binary hashes (packed uint8 features), got float features")
    X = np.ascontiguousarray(X, dtype=np.float32)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{len(rows)} feature row(s) contain NaN or inf (first rows: {rows[:5].tolist()})")
    if metric == "cosine":
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError(f"{int(np.sum(norms == 0))} all-zero feature row(s): cosine distance is undefined")
        X = l2_normalize(X, eps=0)
    return X


def pair_distances(A: np.ndarray, B: np.ndarray, metric: str) -> np.ndarray:
    """(len(A), len(B)) float32 distances between rows prepared by :func:`check_features`."""
    if metric == "hamming":
        xor = np.bitwise_xor(A[:, None, :], B[None, :, :])
        return np.bitwise_count(xor).sum(axis=2, dtype=np.int32).astype(np.float32)
    if metric == "cosine":
        return np.clip(1.0 - A @ B.T, 0.0, 2.0).astype(np.float32, copy=False)
    sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.sqrt(np.maximum(sq, 0.0)).astype(np.float32, copy=False)


def condensed_distances(X: np.ndarray, metric: str, block: int = 1024) -> np.ndarray:
    """Condensed (scipy ``pdist`` order) float32 distances, computed in row blocks.

    Why not ``pdist``: it returns float64 and would double the memory of the
    largest array of hierarchical clustering.
    """
    n = len(X)
    out = np.empty(n * (n - 1) // 2, dtype=np.float32)
    if metric == "hamming":
        block = max(1, min(block, 64))
    for start in range(0, n - 1, block):
        stop = min(start + block, n - 1)
        D = pair_distances(X[start:stop], X[start:], metric)
        for r in range(stop - start):
            i = start + r
            off = i * n - i * (i + 1) // 2  # index of pair (i, i+1)
            out[off:off + n - i - 1] = D[r, r + 1:]
    return out


def relabel_stable(labels: np.ndarray) -> np.ndarray:
    """Number clusters 0, 1, ... by their smallest member index; noise (-1) stays -1.

    Why: the same input and seed must give the same cluster ids whatever order
    the algorithm discovered the clusters in.
    """
    labels = np.asarray(labels).astype(np.int64)
    out = np.full(len(labels), -1, dtype=np.int64)
    mask = labels != -1
    if not mask.any():
        return out
    uniq, first = np.unique(labels[mask], return_index=True)
    order = np.argsort(np.flatnonzero(mask)[first], kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    out[mask] = rank[np.searchsorted(uniq, labels[mask])]
    return out


def check_exactly_one(**kw: object) -> str:
    """Name of the single keyword that is not None; ValueError otherwise (e.g. threshold vs n_clusters)."""
    given = [k for k, v in kw.items() if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(kw)} (got {', '.join(given) or 'none'})")
    return given[0]
