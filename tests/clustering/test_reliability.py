"""cluster never mixes or loses outputs, and refuses what it cannot do with one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neardup.clustering._common import MAX_SETTINGS
from neardup.clustering.data import truth_from_labels
from neardup.clustering.methods import cluster_sweep
from neardup.clustering.neighbors import index_features, projector
from neardup.errors import UsageError
from tests.helpers import invoke

from .conftest import make_store, planted


@pytest.mark.parametrize("method, name, values, message", [
    ("graph", "threshold", [0.1] * (MAX_SETTINGS + 1), "at most 1000"),
    ("graph", "threshold", [0.1, float("nan")], "not a finite number"),
    ("graph", "threshold", [0.1, -0.1], ">= 0"),  # a fast sweep checks only its first value in the estimator
    ("hierarchical", "distance_threshold", [0.1, float("inf")], "not a finite number"),
    ("dbscan", "eps", [0.0, 0.1], "> 0"),
    ("hierarchical", "n_clusters", [2, 2.5], "whole number"),
    ("graph", "k", [0, 5], "whole number >= 1"),
])
def test_sweep_values_are_checked(method, name, values, message):
    X, _ = planted(n_groups=3, dim=8)
    with pytest.raises(ValueError, match=message):
        cluster_sweep(X, method, {"metric": "cosine"}, name, values)


def test_pca_needs_enough_vectors_and_float_features():
    X, _ = planted(n_groups=2, sizes=(3, 4), dim=32)
    with pytest.raises(ValueError, match=f"needs at least 16 vectors.*only {len(X)}"):
        projector(X, "cosine", 16)
    assert projector(X, "cosine", len(X))(X).shape == (len(X), len(X))  # as many components as vectors is fine
    bits = np.zeros((4, 8), np.uint8)
    with pytest.raises(ValueError, match="hamming"):
        projector(bits, "hamming", 4)


def test_untrainable_faiss_index_is_a_value_error():
    X, _ = planted(n_groups=5, dim=16)
    with pytest.raises(ValueError, match="IVF2,PQ4x12 needs at least 4096 training vectors"):
        index_features(X, "cosine", "IVF2,PQ4x12")


def test_labels_csv_is_read_as_utf8_csv(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_bytes(b"path,label\n\xe9t\xe9.jpg,1\n")  # latin-1
    with pytest.raises(UsageError, match="not UTF-8"):
        truth_from_labels(["a"], ["a.jpg"], f)
    f.write_bytes(b'path,label\n"' + b"x" * 200_000 + b'",1\n')
    with pytest.raises(UsageError, match="not a readable CSV"):
        truth_from_labels(["a"], ["a.jpg"], f)
    f.write_text("path,label\nb.jpg,\n,7\na.jpg,g1\nshort\n", encoding="utf-8")  # empty cells and short rows skipped
    gt = truth_from_labels(["a", "b"], ["a.jpg", "b.jpg"], f)
    assert gt.names[0] == "g1" and gt.names[1].startswith("#singleton")


def test_rerun_replaces_its_own_outputs_whole_and_nothing_else(tmp_path):
    X, _ = planted(n_groups=4, dim=16)
    feats = make_store(tmp_path / "f", X, [str(tmp_path / f"i{i}.jpg") for i in range(len(X))], tmp_path)
    out = tmp_path / "out"
    invoke("cluster", feats, "--out", out, "--sweep", "0.05,0.1", "--per-setting", "--no-plots", "--quiet")
    assert len(list((out / "sweep").glob("*.csv"))) == 2
    (out / "notes.txt").write_text("mine")
    invoke("cluster", feats, "--out", out, "--threshold", "0.3", "--no-plots", "--quiet")
    assert not (out / "sweep").exists()  # the earlier run's per-setting files do not linger beside the new result
    assert (out / "notes.txt").read_text() == "mine"
    m = json.loads((out / "metrics.json").read_text())
    assert [s["value"] for s in m["settings"]] == [0.3]
