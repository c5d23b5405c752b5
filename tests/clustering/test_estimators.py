import tracemalloc

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from neardup.clustering.density import DBSCANClustering, HDBSCANClustering, dbscan_clustering, hdbscan_clustering
from neardup.clustering.graph import GraphClustering, graph_clustering
from neardup.clustering.hierarchical import (
    LINKAGES,
    HierarchicalClustering,
    check_memory,
    hierarchical_clustering,
    linkage_memory,
)
from neardup.clustering.methods import METHODS, cluster_sweep
from neardup.clustering.metrics import score_partition

from .conftest import planted, planted_bits


@pytest.mark.parametrize("linkage", LINKAGES)
def test_hierarchical_recovers_planted_groups(linkage):
    X, y = planted()
    metric = "euclidean" if linkage in ("centroid", "median", "ward") else "cosine"
    threshold = 0.2 if metric == "euclidean" else 0.05
    labels = hierarchical_clustering(X, linkage, metric, distance_threshold=threshold)
    assert score_partition(y, labels).ari == pytest.approx(1.0)
    by_count = hierarchical_clustering(X, linkage, metric, n_clusters=len(np.unique(y)))
    assert score_partition(y, by_count).ari == pytest.approx(1.0)


@pytest.mark.parametrize("method,kw", [
    ("dbscan", {"eps": 0.05, "min_samples": 2}),
    ("hdbscan", {"min_cluster_size": 2}),
    ("graph", {"threshold": 0.05, "k": 8}),
    ("graph", {"threshold": 0.05, "k": 8, "index": "hnsw"}),
    ("graph", {"threshold": 0.05, "k": 8, "pca": 8}),
])
def test_every_method_recovers_planted_groups(method, kw):
    X, y = planted()
    labels = METHODS[method].function(X, **kw)
    s = score_partition(y, labels)
    assert s.ari == pytest.approx(1.0) and s.n_noise == 0


@pytest.mark.parametrize("method,kw", [
    ("hierarchical", {"linkage": "average", "distance_threshold": 4}),
    ("dbscan", {"eps": 4, "min_samples": 2}),
    ("hdbscan", {"min_cluster_size": 2, "cluster_selection_epsilon": 4}),
    ("graph", {"threshold": 4, "k": 8}),
])
def test_hamming_on_packed_hashes(method, kw):
    B, y = planted_bits()
    labels = METHODS[method].function(B, metric="hamming", **kw)
    assert score_partition(y, labels).ari == pytest.approx(1.0)


def test_euclidean_only_linkages_refuse_other_metrics():
    X, _ = planted()
    for linkage in ("centroid", "median", "ward"):
        with pytest.raises(ValueError, match="only defined for the euclidean"):
            HierarchicalClustering(linkage=linkage, metric="cosine", n_clusters=3).fit(X)
    with pytest.raises(ValueError, match="hashes"):
        hierarchical_clustering(X, metric="hamming", n_clusters=3)
    with pytest.raises(ValueError, match="exactly one"):
        hierarchical_clustering(X, distance_threshold=0.1, n_clusters=3)
    with pytest.raises(ValueError, match="unknown linkage"):
        hierarchical_clustering(X, linkage="ward2", n_clusters=3)


def test_memory_guard_refuses_before_allocating():
    X = np.zeros((300_000, 4), dtype=np.float32)  # condensed float32 distances alone would be 180 GB
    assert linkage_memory(300_000, 4) > 5e11
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="--method graph"):
            HierarchicalClustering(distance_threshold=0.1, max_memory=8 * 1024 ** 3).fit(X)
        with pytest.raises(MemoryError, match="graph"):  # the default limit comes from the RAM available
            HierarchicalClustering(distance_threshold=0.1).fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    assert check_memory(100, 4, 10**9) == linkage_memory(100, 4)
    with pytest.raises(MemoryError):
        check_memory(1000, 4, 1000)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_graph_equals_single_linkage_cut(metric):
    rng = np.random.default_rng(1)
    X = np.cumsum(rng.standard_normal((150, 6)), axis=0).astype(np.float32)  # a random walk: chains and gaps
    single = HierarchicalClustering(linkage="single", metric=metric, distance_threshold=1.0).fit(X)
    graph = GraphClustering(k=len(X), metric=metric, threshold=1.0).fit(X)
    thresholds = [float(t) * 1.0001  # stay off exact merge heights (float32 vs float64 rounding)
                  for t in np.quantile(single.linkage_matrix_[:, 2], [0.1, 0.3, 0.5, 0.7, 0.9, 0.99])]
    db_sweep = cluster_sweep(X, "dbscan", {"metric": metric, "min_samples": 2}, "eps", thresholds).labels
    for t, db_swept in zip(thresholds, db_sweep, strict=True):
        expected = single.cut(distance_threshold=t)
        via_sweep = cluster_sweep(X, "graph", {"metric": metric, "k": len(X)}, "threshold", [t]).labels[0]
        np.testing.assert_array_equal(via_sweep, expected)
        # DBSCAN with min_samples=2 is the same cut, with singletons as noise
        db = dbscan_clustering(X, eps=t, min_samples=2, metric=metric)
        sizes = np.bincount(expected)
        np.testing.assert_array_equal(db == -1, sizes[expected] == 1)
        assert score_partition(expected, db).ari == pytest.approx(1.0)
        np.testing.assert_array_equal(db_swept, db)  # one range graph at the largest eps, filtered
    assert graph.labels_.shape == (150,)


def test_sweeps_reuse_and_match_single_fits():
    X, y = planted()
    values = [0.02, 0.05, 0.5]
    for method, name, kw in [("hierarchical", "distance_threshold", {"linkage": "average"}),
                             ("dbscan", "eps", {"min_samples": 2}), ("graph", "threshold", {"k": 8}),
                             ("hdbscan", "cluster_selection_epsilon", {"min_cluster_size": 2})]:
        out = cluster_sweep(X, method, {"metric": "cosine", **kw}, name, values)
        for v, labels in zip(values, out.labels, strict=True):
            np.testing.assert_array_equal(labels, METHODS[method].function(X, metric="cosine", **kw, **{name: v}))
    out = cluster_sweep(X, "hierarchical", {"metric": "cosine"}, "n_clusters", [2, 12])
    assert [len(np.unique(lab)) for lab in out.labels] == [2, 12] and out.linkage is not None
    with pytest.raises(ValueError, match="no parameter"):
        cluster_sweep(X, "graph", {"eps": 0.1})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_stable_ids_and_sklearn_conventions(method):
    X, _ = planted()
    est = METHODS[method].estimator()
    assert clone(est).get_params() == est.get_params()  # __init__ only stores
    kw = {"threshold": 0.05} if method == "graph" else {"eps": 0.05} if method == "dbscan" else {}
    if method == "hierarchical":
        kw = {"distance_threshold": 0.05}
    a = est.set_params(**kw).fit(X)
    assert a is est
    b = clone(est).fit(X).labels_
    np.testing.assert_array_equal(a.labels_, b)
    lab = a.labels_[a.labels_ >= 0]
    firsts = [int(np.flatnonzero(a.labels_ == c)[0]) for c in range(lab.max() + 1)]
    assert firsts == sorted(firsts)  # numbered by their smallest member
    assert np.array_equal(a.fit_predict(X), b)


@pytest.mark.parametrize("est", [HierarchicalClustering(n_clusters=2), DBSCANClustering(), HDBSCANClustering(),
                                 GraphClustering()])
def test_bad_input_is_a_clear_error(est):
    with pytest.raises(ValueError, match="0 sample"):
        clone(est).fit(np.zeros((0, 4), dtype=np.float32))
    X, _ = planted()
    X[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone(est).fit(X)
    with pytest.raises(ValueError, match="2D array"):
        clone(est).fit(np.zeros(5, dtype=np.float32))


@pytest.mark.parametrize("method,kw", [
    ("hierarchical", {"linkage": "ward", "distance_threshold": 0.2}),
    ("dbscan", {"eps": 0.2, "min_samples": 2}),
    ("hdbscan", {"min_cluster_size": 2}),
    ("graph", {"threshold": 0.2, "k": 8, "pca": 8}),
    ("graph", {"threshold": 0.2, "k": 8, "index": "IVF{nlist},Flat"}),  # fastsearch's factory strings
])
def test_l2_is_the_metric_name_and_euclidean_its_alias(method, kw):
    X, y = planted()
    l2 = METHODS[method].function(X, metric="l2", **kw)
    np.testing.assert_array_equal(l2, METHODS[method].function(X, metric="euclidean", **kw))
    assert score_partition(y, l2).ari == pytest.approx(1.0)


def test_bad_parameters():
    X, _ = planted()
    with pytest.raises(ValueError, match="eps"):
        DBSCANClustering(eps=0).fit(X)
    with pytest.raises(ValueError, match="min_cluster_size"):
        hdbscan_clustering(X, min_cluster_size=1)
    with pytest.raises(ValueError, match=r"unknown metric 'manhattan'; use one of l2 \(or euclidean\), cosine"):
        graph_clustering(X, metric="manhattan")
    with pytest.raises(ValueError, match="unsupported index spec 'LSH'"):
        graph_clustering(X, index="LSH")


# scikit-learn's own conformance checks (about 10 s for all four). HDBSCAN runs with eom selection here: with the
# near-duplicate default (leaf, min_cluster_size=2) sklearn's blobs split into many small clusters, which
# check_clustering's ARI > 0.4 rejects by design of that check, not by a bug.
@parametrize_with_checks([GraphClustering(metric="euclidean", threshold=1.0),
                          HierarchicalClustering(metric="euclidean", n_clusters=3),
                          DBSCANClustering(metric="euclidean", eps=0.5),
                          HDBSCANClustering(metric="euclidean", cluster_selection_method="eom", min_cluster_size=5)])
def test_sklearn_conformance(estimator, check):
    check(estimator)
