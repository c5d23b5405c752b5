"""k-means (faiss): planted groups, metrics, seeds, centroids, sklearn conformance and ``cluster --method kmeans``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from neardup.clustering.kmeans import KMeansClustering, kmeans_clustering
from neardup.clustering.methods import cluster_sweep
from neardup.clustering.metrics import score_partition
from neardup.fastsearch.vectors import KMeans
from tests.helpers import expect_error, invoke

from .conftest import planted, planted_bits


@pytest.mark.parametrize("metric", ["cosine", "l2", "euclidean"])
def test_recovers_planted_groups(metric) -> None:
    X, y = planted(n_groups=6, dim=16)
    labels = kmeans_clustering(X, n_clusters=6, metric=metric, seed=0)
    assert score_partition(y, labels).ari == pytest.approx(1.0)


def test_hamming_on_packed_hashes() -> None:
    B, y = planted_bits(n_groups=5, size=4)
    est = KMeansClustering(n_clusters=5, metric="hamming").fit(B)
    assert score_partition(y, est.labels_).ari == pytest.approx(1.0)
    assert est.cluster_centers_.shape == (5, 64)  # centroids of the unpacked bits


def test_kmeans_plusplus_avoids_the_local_minima_of_random_starts() -> None:
    """faiss' own start (k random images) often leaves two centroids in one planted group; k-means++ does not."""
    aris = {"random": [], "k-means++": []}
    for seed in range(10):
        X, y = planted(n_groups=6, dim=16, seed=seed)
        for init in aris:
            aris[init].append(score_partition(y, kmeans_clustering(X, n_clusters=6, seed=seed, init=init)).ari)
    assert min(aris["k-means++"]) == pytest.approx(1.0)
    assert min(aris["random"]) < 0.9  # the reason for the seeding
    with pytest.raises(ValueError, match="unknown k-means init"):
        kmeans_clustering(X, n_clusters=2, init="forgy")


def test_seeded_and_deterministic() -> None:
    X, _ = planted(n_groups=8, dim=8, spread=0.8)  # overlapping groups: the initial centroids matter
    a = kmeans_clustering(X, n_clusters=5, seed=1)
    np.testing.assert_array_equal(a, kmeans_clustering(X, n_clusters=5, seed=1))
    runs = {tuple(kmeans_clustering(X, n_clusters=5, seed=s, niter=2)) for s in range(8)}
    assert len(runs) > 1  # the seed changes the start


def test_centroids_follow_the_labels_and_stay_on_the_sphere() -> None:
    X, _ = planted(n_groups=4, dim=16)
    est = KMeansClustering(n_clusters=4, metric="cosine").fit(X)
    firsts = [int(np.flatnonzero(est.labels_ == c)[0]) for c in range(4)]
    assert firsts == sorted(firsts)  # cluster ids by smallest member
    np.testing.assert_allclose(np.linalg.norm(est.cluster_centers_, axis=1), 1.0, atol=1e-5)  # spherical
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_array_equal(np.argmax(Xn @ est.cluster_centers_.T, axis=1), est.labels_)
    assert est.inertia_ > 0


def test_matches_its_registry_sweep_and_the_vector_layer() -> None:
    X, _ = planted(n_groups=5, dim=16)
    out = cluster_sweep(X, "kmeans", {"metric": "l2", "seed": 3}, None, [2, 5])
    for k, labels in zip([2, 5], out.labels, strict=True):
        np.testing.assert_array_equal(labels, kmeans_clustering(X, n_clusters=k, metric="l2", seed=3))
    km = KMeans(5, seed=3).fit(X)
    assert km.centroids_.shape == (5, 16) and km.predict(X).shape == (len(X),)


def test_bad_parameters() -> None:
    X, _ = planted(n_groups=3, dim=8)
    with pytest.raises(ValueError, match="more than the"):
        KMeansClustering(n_clusters=len(X) + 1).fit(X)
    with pytest.raises(ValueError, match="n_clusters must be >= 1"):
        KMeansClustering(n_clusters=0).fit(X)
    with pytest.raises(ValueError, match="niter must be >= 1"):
        KMeansClustering(niter=0).fit(X)
    with pytest.raises(ValueError, match="unknown metric"):
        KMeansClustering(metric="manhattan").fit(X)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clone(KMeansClustering(n_clusters=2)).fit(X)


def test_cli_kmeans_with_ground_truth_and_sweep(attacked_folders, tmp_path) -> None:
    folders, truth = attacked_folders  # 3 groups of 4 (an original and its attacks) and 2 distractors
    out = tmp_path / "km"
    invoke("cluster", *folders, "--method", "kmeans", "--n-clusters", 5, "--out", out, "--no-plots", "--quiet")
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "kmeans" and m["sweep_param"] == "n_clusters"
    assert m["params"] == {"n_clusters": 5} and m["settings"][0]["full"]["ari"] == pytest.approx(1.0)
    sweep = tmp_path / "sweep"
    res = invoke("cluster", *folders, "--method", "kmeans", "--sweep", "2:6:1", "--seed", 4, "--niter", 10,
                 "--out", sweep, "--no-plots")
    m = json.loads((sweep / "metrics.json").read_text())
    assert [s["value"] for s in m["settings"]] == [2, 3, 4, 5, 6] and m["settings"][m["best"]]["value"] == 5
    assert m["params"] == {"niter": 10, "seed": 4} and "best by ari" in res.output
    expect_error("cluster", *folders, "--method", "kmeans", "--out", tmp_path / "e",
                 message="--method kmeans needs --n-clusters (or --sweep)")
    expect_error("cluster", *folders, "--method", "kmeans", "--n-clusters", 3, "-k", 4, "--out", tmp_path / "e",
                 message="-k do(es) not apply to --method kmeans")
    expect_error("cluster", *folders, "--method", "kmeans", "--n-clusters", 99, "--out", tmp_path / "e",
                 message="more than the 14 images")


@parametrize_with_checks([KMeansClustering(metric="euclidean", n_clusters=3)])
def test_sklearn_conformance(estimator, check) -> None:
    check(estimator)


def test_required_parameters_are_checked_against_the_estimator() -> None:
    from neardup.clustering.methods import METHODS, MethodSpec, register_method

    assert METHODS["kmeans"].required == ("n_clusters",)
    with pytest.raises(ValueError, match=r"required names \['clusters'\]"):
        register_method(MethodSpec("km2", KMeansClustering, kmeans_clustering, "n_clusters", required=("clusters",)))
    assert "km2" not in METHODS
