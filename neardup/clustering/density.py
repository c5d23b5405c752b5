"""Density-based clustering: DBSCAN (scikit-learn) and HDBSCAN (the ``hdbscan`` package).

Both leave images in sparse regions as noise (label -1): a near-duplicate
detector wants exactly that for photos with no copy.

References: Ester et al., A density-based algorithm for discovering clusters, KDD 1996;
Campello, Moulavi & Sander, Density-based clustering based on hierarchical density estimates, 2013;
McInnes & Healy, Accelerated hierarchical density clustering, 2017.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin

from neardup.clustering._common import as_2d, check_features, cluster_metric, relabel_stable
from neardup.clustering.neighbors import radius_graph


def dbscan_from_graph(graph: sparse.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN labels from a precomputed sparse radius graph built with a radius >= ``eps``.

    Why: an eps sweep builds the range-search graph once at the largest eps and
    filters it for each smaller one.
    """
    from sklearn.cluster import DBSCAN

    g = graph.tocsr()
    keep = g.data <= eps  # drop pairs beyond eps; rebuilt from arrays so exact-duplicate (zero) distances stay
    kept = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    g = sparse.csr_matrix((g.data[keep], g.indices[keep], kept[g.indptr]), shape=g.shape)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(g).labels_
    return relabel_stable(labels)


class DBSCANClustering(ClusterMixin, BaseEstimator):
    """DBSCAN over an exact faiss range-search graph (never a dense n x n matrix).

    Args:
        eps: neighbourhood radius in ``metric`` (cosine distance, L2, or bits).
        min_samples: neighbours (itself included) that make a core image; 2 makes
            DBSCAN a single-linkage cut at ``eps``.
        metric: l2 (alias euclidean), cosine or hamming.

    Attributes:
        labels_: (n,) cluster ids by smallest member, -1 for noise.
        graph_: the sparse radius graph (distances), reusable for smaller eps.
    """

    def __init__(self, eps: float = 0.1, min_samples: int = 2, metric: str = "cosine") -> None:
        self.eps = eps
        self.min_samples = min_samples
        self.metric = metric

    def fit(self, X: np.ndarray, y: object = None) -> DBSCANClustering:
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if int(self.min_samples) < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        X = as_2d(X)
        check_features(X[:1], self.metric)
        self.graph_ = radius_graph(X, float(self.eps), self.metric)
        self.n_features_in_ = X.shape[1]
        self.labels_ = dbscan_from_graph(self.graph_, float(self.eps), int(self.min_samples))
        return self


def dbscan_clustering(X: np.ndarray, eps: float = 0.1, min_samples: int = 2, metric: str = "cosine") -> np.ndarray:
    """Function twin of :class:`DBSCANClustering`: returns the labels."""
    return DBSCANClustering(eps, min_samples, metric).fit(X).labels_


#: Largest n for which HDBSCAN's ``auto`` algorithm uses dense distances (20K: 3.2 GB of float64).
GENERIC_MAX = 20_000


class HDBSCANClustering(ClusterMixin, BaseEstimator):
    """HDBSCAN: clusters of varying density, no global eps.

    Args:
        min_cluster_size: smallest group reported (2 finds pairs of copies).
        min_samples: density smoothing [default: min_cluster_size].
        cluster_selection_epsilon: clusters closer than this (in ``metric``) are merged.
        metric: l2 (alias euclidean), cosine or hamming. Cosine runs as euclidean on
            normalised vectors (a monotone map, so the hierarchy is the same;
            the epsilon is converted); hamming runs on unpacked bits.
        cluster_selection_method: ``leaf`` (many small clusters: near-duplicate
            groups) or ``eom``.
        algorithm: hdbscan's algorithm; ``auto`` takes ``generic`` (dense
            distances, n^2 x 8 bytes) up to ``GENERIC_MAX`` images of more than 32
            dimensions, where space trees are slow (6100 x 1280-d: 13 s against
            minutes), else hdbscan's ``best``.

    Attributes:
        labels_: (n,) cluster ids by smallest member, -1 for noise.
        probabilities_: membership strengths from hdbscan.
    """

    def __init__(self, min_cluster_size: int = 2, min_samples: int | None = None,
                 cluster_selection_epsilon: float = 0.0, metric: str = "cosine",
                 cluster_selection_method: str = "leaf", algorithm: str = "auto") -> None:
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.metric = metric
        self.cluster_selection_method = cluster_selection_method
        self.algorithm = algorithm

    def fit(self, X: np.ndarray, y: object = None) -> HDBSCANClustering:
        import hdbscan

        if int(self.min_cluster_size) < 2:
            raise ValueError(f"min_cluster_size must be >= 2, got {self.min_cluster_size}")
        if self.cluster_selection_epsilon < 0:
            raise ValueError(f"cluster_selection_epsilon must be >= 0, got {self.cluster_selection_epsilon}")
        if self.cluster_selection_method not in ("leaf", "eom"):
            raise ValueError(f"cluster_selection_method must be leaf or eom, not {self.cluster_selection_method!r}")
        algorithms = ("auto", "best", "generic", "prims_kdtree", "prims_balltree", "boruvka_kdtree",
                      "boruvka_balltree")
        if self.algorithm not in algorithms:
            raise ValueError(f"algorithm must be one of {', '.join(algorithms)}, not {self.algorithm!r}")
        own = cluster_metric(self.metric)
        Xp = check_features(X, own)
        eps, metric = float(self.cluster_selection_epsilon), "euclidean"  # hdbscan's name for l2
        if own == "cosine":
            eps = float(np.sqrt(2.0 * eps))  # ||a - b|| = sqrt(2 (1 - cos)) for unit vectors
        elif own == "hamming":
            Xp = np.unpackbits(Xp, axis=1).astype(np.float64)
            eps = float(np.sqrt(eps))  # euclidean on 0/1 bits = sqrt(differing bits)
        self.n_features_in_ = np.asarray(X).shape[1]
        if len(Xp) < 2:
            self.labels_ = np.full(len(Xp), -1, dtype=np.int64)
            self.probabilities_ = np.zeros(len(Xp))
            return self
        algorithm = self.algorithm
        if algorithm == "auto":
            algorithm = "generic" if len(Xp) <= GENERIC_MAX and Xp.shape[1] > 32 else "best"
        model = hdbscan.HDBSCAN(algorithm=algorithm, min_cluster_size=int(self.min_cluster_size),
                                min_samples=None if self.min_samples is None else int(self.min_samples),
                                cluster_selection_epsilon=eps, metric=metric,
                                cluster_selection_method=self.cluster_selection_method,
                                allow_single_cluster=True, core_dist_n_jobs=1)
        model.fit(Xp.astype(np.float64))
        self.labels_ = relabel_stable(model.labels_)
        self.probabilities_ = model.probabilities_
        return self


def hdbscan_clustering(X: np.ndarray, min_cluster_size: int = 2, min_samples: int | None = None,
                       cluster_selection_epsilon: float = 0.0, metric: str = "cosine",
                       cluster_selection_method: str = "leaf", algorithm: str = "auto") -> np.ndarray:
    """Function twin of :class:`HDBSCANClustering`: returns the labels."""
    return HDBSCANClustering(min_cluster_size, min_samples, cluster_selection_epsilon, metric,
                             cluster_selection_method, algorithm).fit(X).labels_
