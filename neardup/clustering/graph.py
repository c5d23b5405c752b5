"""Graph clustering for millions of images: k-NN graph, threshold, connected components.

Each image is linked to those of its k nearest neighbours within
``threshold``; the clusters are the connected components. With an exact index
and k large enough to hold every neighbour within the threshold this *is* a
single-linkage cut at ``threshold`` (components of the threshold graph), at
O(n k) memory instead of O(n^2). An IVF or HNSW index makes the k-NN search
approximate and fast; ``pca`` shrinks 1280-d features to e.g. 128-d first.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin

from neardup.clustering._common import as_2d, check_features, relabel_stable
from neardup.clustering.neighbors import knn_graph, projector


def components_from_knn(dist: np.ndarray, ids: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of the k-NN edges with distance <= ``threshold``, labels by smallest member.

    Why a separate function: a threshold sweep reuses one k-NN search.
    """
    from scipy.sparse.csgraph import connected_components

    n = len(dist)
    keep = (ids >= 0) & (dist <= threshold)
    rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)[keep]
    graph = sparse.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, ids[keep])), shape=(n, n))
    _, labels = connected_components(graph, directed=True, connection="weak")
    return relabel_stable(labels)


class GraphClustering(ClusterMixin, BaseEstimator):
    """Connected components of a thresholded faiss k-NN graph.

    Args:
        threshold: keep edges with distance <= this (cosine distance, L2, or
            bits): for cosine, similarity >= 1 - threshold.
        k: neighbours per image (itself included); a group larger than k can
            still be connected through chains of neighbours.
        metric: l2 (alias euclidean), cosine or hamming.
        index: ``flat`` (exact), ``hnsw`` (approximate), or a faiss factory string
            searched with nprobe 16, e.g. ``IVF4096,Flat``: for a million images this
            is faster than HNSW and, near-duplicates sharing their cell, keeps recall
            (HNSW loses links among near-identical vectors).
        pca: reduce float features to this many dimensions first (None: keep).
        ef_search: HNSW search breadth (recall against speed).
        seed: seed of the PCA training sample.
        ray: run the k-NN search on Ray: the fields of a :class:`neardup.scaleout.engine.RayConfig` (``{}``: a
            local instance), or None (in this process). The database is split into shards held by actors, each
            with a copy of the one trained index, so the lists are the ones this process would find.

    Attributes:
        labels_: (n,) cluster ids by smallest member (no noise: singletons are clusters).
        knn_distances_, knn_indices_: the (n, k) graph, reusable for other thresholds.
    """

    def __init__(self, threshold: float = 0.1, k: int = 10, metric: str = "cosine", index: str = "flat",
                 pca: int | None = None, ef_search: int = 64, seed: int = 0, ray: dict | None = None) -> None:
        self.threshold = threshold
        self.k = k
        self.metric = metric
        self.index = index
        self.pca = pca
        self.ef_search = ef_search
        self.seed = seed
        self.ray = ray

    def fit(self, X: np.ndarray, y: object = None, show_progress: bool = False) -> GraphClustering:
        if self.threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold}")
        if int(self.k) < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        X = as_2d(X)
        check_features(X[:1], self.metric)  # shape, dtype and metric; rows are checked per block
        project = projector(X, self.metric, self.pca, seed=self.seed)
        if self.ray is not None:
            from neardup.scaleout.engine import RayConfig
            from neardup.scaleout.knn import graph_knn

            self.knn_distances_, self.knn_indices_ = graph_knn(X, int(self.k), self.metric, self.index, project,
                                                               self.ef_search, RayConfig(**self.ray), show_progress)
        else:
            self.knn_distances_, self.knn_indices_ = knn_graph(X, int(self.k), self.metric, self.index, project,
                                                               ef_search=self.ef_search, show_progress=show_progress)
        self.n_features_in_ = X.shape[1]
        self.labels_ = components_from_knn(self.knn_distances_, self.knn_indices_, float(self.threshold))
        return self


def graph_clustering(X: np.ndarray, threshold: float = 0.1, k: int = 10, metric: str = "cosine",
                     index: str = "flat", pca: int | None = None, ef_search: int = 64, seed: int = 0,
                     ray: dict | None = None) -> np.ndarray:
    """Function twin of :class:`GraphClustering`: returns the labels."""
    return GraphClustering(threshold, k, metric, index, pca, ef_search, seed, ray).fit(X).labels_
