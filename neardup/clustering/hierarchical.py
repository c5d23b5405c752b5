"""Agglomerative (hierarchical) clustering with scipy, guarded against dense matrices that cannot fit.

The n(n-1)/2 condensed distance matrix is what limits this method: 20K images
need 0.8 GB of float32 distances (and 3.2 GB at the peak, in scipy's float64 copies), 1M images
would need 2 TB. :func:`linkage_memory` estimates the bytes *before* anything is
allocated and :func:`check_memory` refuses, pointing to the graph method.

Reference: Müllner, Modern hierarchical, agglomerative clustering algorithms, 2011
(the nearest-neighbour-chain and MST algorithms scipy implements).
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from neardup.clustering._common import (
    as_2d,
    check_exactly_one,
    check_features,
    cluster_metric,
    condensed_distances,
    relabel_stable,
)

LINKAGES = ("single", "complete", "average", "weighted", "centroid", "median", "ward")
EUCLIDEAN_ONLY = ("centroid", "median", "ward")


def available_memory() -> int:
    """Bytes of RAM available now (MemAvailable), falling back to free physical pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def default_max_memory() -> int:
    """The default limit: 80% of the RAM available when clustering starts."""
    return int(0.8 * available_memory())


def linkage_memory(n: int, dim: int, linkage: str = "average") -> int:
    """Peak bytes hierarchical clustering of ``n`` x ``dim`` features needs.

    The float32 condensed distances (4 B/pair) are converted to the float64
    scipy needs (8 B/pair; the float32 copy is freed right after), and every
    linkage but single works on a further float64 copy (nn_chain / generic
    algorithms modify their matrix): 16 B/pair, 12 B/pair for single. Plus the
    float32 features and the (n-1) x 4 float64 linkage matrix.
    """
    pairs = n * (n - 1) // 2
    return pairs * (12 if linkage == "single" else 16) + n * dim * 4 + n * 32


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB" if b >= 1e8 else f"{b / 1e6:.1f} MB"


def check_memory(n: int, dim: int, max_memory: int | None, linkage: str = "average") -> int:
    """Raise MemoryError (before allocating) when hierarchical clustering would exceed ``max_memory`` bytes."""
    need = linkage_memory(n, dim, linkage)
    limit = default_max_memory() if max_memory is None else int(max_memory)
    if need > limit:
        raise MemoryError(
            f"hierarchical clustering of {n} images needs about {_gb(need)} for its dense distance matrix, "
            f"more than the {_gb(limit)} allowed: use --method graph (sparse k-NN graph, scales to millions) "
            f"or dbscan, or raise --max-memory")
    return need


def linkage_matrix(X: np.ndarray, linkage: str = "average", metric: str = "cosine",
                   max_memory: int | None = None) -> np.ndarray:
    """The scipy linkage matrix Z ((n-1) x 4) of ``X``.

    Raises:
        ValueError: unknown linkage, or centroid/median/ward with a metric other than l2, bad features.
        MemoryError: the distance matrix would not fit in ``max_memory`` bytes (nothing allocated).
    """
    from scipy.cluster import hierarchy

    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}; use one of {', '.join(LINKAGES)}")
    metric = cluster_metric(metric)
    if linkage in EUCLIDEAN_ONLY and metric != "l2":
        raise ValueError(f"{linkage} linkage is only defined for the euclidean (l2) metric, not {metric} "
                         f"(use --metric l2, alias euclidean, with --normalize for cosine-like features)")
    X = as_2d(X)
    check_memory(X.shape[0], X.shape[1] * (8 if X.dtype == np.uint8 else 1), max_memory, linkage)
    X = check_features(X, metric)
    if len(X) < 2:
        return np.zeros((0, 4))
    D = condensed_distances(X, metric).astype(np.float64)  # the float32 original is freed here, not held
    return hierarchy.linkage(D, method=linkage)


def cut_linkage(Z: np.ndarray, n: int, distance_threshold: float | None = None,
                n_clusters: int | None = None) -> np.ndarray:
    """Flat clusters from a linkage matrix: merges at heights <= threshold, or at most ``n_clusters``."""
    from scipy.cluster import hierarchy

    which = check_exactly_one(distance_threshold=distance_threshold, n_clusters=n_clusters)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    if which == "distance_threshold":
        labels = hierarchy.fcluster(Z, t=float(distance_threshold), criterion="distance")  # type: ignore[arg-type]
    else:
        if int(n_clusters) < 1:  # type: ignore[arg-type]
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        labels = hierarchy.fcluster(Z, t=int(n_clusters), criterion="maxclust")  # type: ignore[arg-type]
    return relabel_stable(labels)


class HierarchicalClustering(ClusterMixin, BaseEstimator):
    """Agglomerative clustering, cut by distance threshold or number of clusters.

    Args:
        linkage: single, complete, average, weighted, centroid, median or ward
            (the last three need ``metric='l2'``).
        metric: l2 (alias euclidean), cosine (1 - similarity) or hamming (differing bits of hashes).
        distance_threshold: merge while the linkage height is <= this.
        n_clusters: or cut to at most this many clusters (give at most one of the two;
            neither means 2 clusters, as in scikit-learn).
        max_memory: bytes the distance matrix may use [default: 80% of available RAM].

    Attributes:
        labels_: (n,) cluster ids, numbered by their smallest member index.
        linkage_matrix_: scipy's (n-1) x 4 linkage matrix, reusable with :meth:`cut`.
    """

    def __init__(self, linkage: str = "average", metric: str = "cosine", distance_threshold: float | None = None,
                 n_clusters: int | None = None, max_memory: int | None = None) -> None:
        self.linkage = linkage
        self.metric = metric
        self.distance_threshold = distance_threshold
        self.n_clusters = n_clusters
        self.max_memory = max_memory

    def fit(self, X: np.ndarray, y: object = None) -> HierarchicalClustering:
        threshold, k = self.distance_threshold, self.n_clusters
        if threshold is None and k is None:
            k = 2  # as sklearn's AgglomerativeClustering
        check_exactly_one(distance_threshold=threshold, n_clusters=k)
        X = as_2d(X)
        self.linkage_matrix_ = linkage_matrix(X, self.linkage, self.metric, self.max_memory)
        self.n_features_in_ = X.shape[1]
        self.labels_ = cut_linkage(self.linkage_matrix_, len(X), threshold, k)
        return self

    def cut(self, distance_threshold: float | None = None, n_clusters: int | None = None) -> np.ndarray:
        """Labels of another cut of the fitted tree (a sweep without re-fitting)."""
        return cut_linkage(self.linkage_matrix_, len(self.labels_), distance_threshold, n_clusters)


def hierarchical_clustering(X: np.ndarray, linkage: str = "average", metric: str = "cosine",
                            distance_threshold: float | None = None, n_clusters: int | None = None,
                            max_memory: int | None = None) -> np.ndarray:
    """Function twin of :class:`HierarchicalClustering`: returns the labels."""
    return HierarchicalClustering(linkage, metric, distance_threshold, n_clusters, max_memory).fit(X).labels_
