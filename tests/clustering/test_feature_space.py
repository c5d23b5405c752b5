"""cluster mixes feature folders only from one feature space: the stored transform counts too (it used not to)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neardup.clustering.data import load_features
from neardup.errors import UsageError
from neardup.extract.postprocess import FILE, FeatureTransform, fit_transform
from tests.helpers import assert_one_error, invoke

from .conftest import make_store, planted


def folder(tmp_path: Path, name: str, X: np.ndarray, transform: FeatureTransform | None = None) -> Path:
    out = make_store(tmp_path / name, X, [str(tmp_path / f"{name}{i}.jpg") for i in range(len(X))], tmp_path)
    if transform is not None:  # as `extract --normalize/--whiten` leaves it: raw shards, transform.npz beside
        transform.save(out / FILE)
        meta = json.loads((out / "meta.json").read_text())
        meta["output_dim"] = transform.out_dim(X.shape[1])
        (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_cluster_refuses_folders_post_processed_differently(tmp_path):
    X, _ = planted(n_groups=6, dim=16)
    half = len(X) // 2
    raw = folder(tmp_path, "raw", X[:half])
    normalized = folder(tmp_path, "norm", X[half:], FeatureTransform(l2=True))
    with pytest.raises(UsageError, match="feature spaces disagree: feature folder .*norm and feature folder .*raw "
                                         "use different stored transforms"):
        load_features([raw, normalized])
    white_a = folder(tmp_path, "wa", X[:half], fit_transform(X[:half], whiten_dim=8))
    white_b = folder(tmp_path, "wb", X[half:], fit_transform(X[half:], whiten_dim=8))
    with pytest.raises(UsageError, match="stored transform"):  # --whiten fitted on each folder separately
        load_features([white_a, white_b])
    res = invoke("cluster", raw, normalized, "--out", tmp_path / "o", "--no-plots", ok=False)
    assert_one_error(res, "feature spaces disagree")
    assert not (tmp_path / "o").exists()


def test_cluster_mixes_folders_sharing_one_transform(tmp_path):
    """`extract --transform-from` copies the transform: those folders are one space and cluster together."""
    X, _ = planted(n_groups=6, dim=16)
    half = len(X) // 2
    tf = fit_transform(X, whiten_dim=8)
    inp = load_features([folder(tmp_path, "a", X[:half], tf), folder(tmp_path, "b", X[half:], tf)])
    assert inp.features.shape == (len(X), 8)


def test_cluster_refuses_folders_extracted_with_other_weights(tmp_path):
    X, _ = planted(n_groups=4, dim=16)
    a, b = folder(tmp_path, "a", X[:10]), folder(tmp_path, "b", X[10:])
    for f, digest in ((a, "1" * 64), (b, "2" * 64)):
        (f / "job.json").write_text(json.dumps({"model": "toy", "weights_sha256": digest}))
    with pytest.raises(UsageError, match="other weights"):
        load_features([a, b])
