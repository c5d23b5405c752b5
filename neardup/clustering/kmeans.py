"""k-means: a fixed number of clusters, every image in one (no noise): k-means++ seeding, then faiss' Lloyd iterations.

Unlike the threshold methods, k-means needs the number of groups; it suits class-level grouping (how many
classes there are is known) more than near-duplicate detection (how many groups of copies is not).
Metrics: cosine runs spherical k-means on L2-normalised features (centroids kept on the unit sphere), l2
plain k-means, hamming k-means on the unpacked bits (squared L2 of 0/1 vectors is the Hamming distance).

References: Lloyd, Least squares quantization in PCM, IEEE Trans. Inf. Theory 1982; Arthur & Vassilvitskii,
k-means++: the advantages of careful seeding, SODA 2007; faiss' ``Kmeans``
(Johnson, Douze & Jégou, Billion-scale similarity search with GPUs, 2019).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from neardup.clustering._common import as_2d, check_features, cluster_metric, relabel_stable
from neardup.errors import UsageError
from neardup.fastsearch.vectors import KMeans


class KMeansClustering(ClusterMixin, BaseEstimator):
    """k-means with faiss (:class:`neardup.fastsearch.vectors.KMeans`).

    Args:
        n_clusters: k, the number of clusters (at most the number of images).
        metric: cosine (spherical k-means), l2 (alias euclidean) or hamming (on unpacked bits).
        niter: Lloyd iterations.
        seed: seed of the initial centroids: the same seed gives the same clusters.
        init: ``k-means++`` (seeding spread over the data) or ``random`` (k random images, faiss' own).

    Attributes:
        labels_: (n,) cluster ids by smallest member.
        cluster_centers_: (n_clusters, d) centroids in the space clustered (unit vectors for cosine, bits as
            floats for hamming), in the order of ``labels_``; a centroid no image is nearest to comes last.
        inertia_: faiss' final objective (sum of squared distances; spherical: of similarities).
    """

    def __init__(self, n_clusters: int = 8, metric: str = "cosine", niter: int = 20, seed: int = 0,
                 init: str = "k-means++") -> None:
        self.n_clusters = n_clusters
        self.metric = metric
        self.niter = niter
        self.seed = seed
        self.init = init

    def fit(self, X: np.ndarray, y: object = None) -> KMeansClustering:
        if int(self.n_clusters) < 1:
            raise ValueError(f"n_clusters must be >= 1, got {self.n_clusters}")
        if int(self.niter) < 1:
            raise ValueError(f"niter must be >= 1, got {self.niter}")
        metric = cluster_metric(self.metric)
        X = as_2d(X)
        Xp = check_features(X, metric)
        if metric == "hamming":
            Xp = np.unpackbits(Xp, axis=1).astype(np.float32)
        if int(self.n_clusters) > len(Xp):
            raise ValueError(f"n_clusters {self.n_clusters} is more than the {len(Xp)} images to cluster")
        try:
            km = KMeans(int(self.n_clusters), int(self.niter), int(self.seed), spherical=metric == "cosine",
                        init=self.init, name="n_clusters").fit(Xp)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        raw = km.predict(Xp)
        self.labels_ = relabel_stable(raw)
        # centroids in label order: label l came from raw centroid raw[first member of l]
        _, first = np.unique(self.labels_, return_index=True)
        order = list(raw[first]) + [c for c in range(len(km.centroids_)) if c not in set(raw[first].tolist())]
        self.cluster_centers_ = km.centroids_[order]
        self.inertia_ = km.objective_
        self.n_features_in_ = X.shape[1]
        return self


def kmeans_clustering(X: np.ndarray, n_clusters: int = 8, metric: str = "cosine", niter: int = 20,
                      seed: int = 0, init: str = "k-means++") -> np.ndarray:
    """Function twin of :class:`KMeansClustering`: returns the labels."""
    return KMeansClustering(n_clusters, metric, niter, seed, init).fit(X).labels_
