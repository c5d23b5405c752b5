"""The vector layer: metric names and aliases, L2 normalisation, per-metric preparation, PCA."""

from __future__ import annotations

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.fastsearch.vectors import (
    METRIC_ALIASES,
    METRICS,
    PCA,
    canonical_metric,
    get_metric,
    l2_normalize,
    prepare_vectors,
)


def test_one_name_per_metric_with_euclidean_as_the_alias_of_l2():
    assert canonical_metric("euclidean") == canonical_metric("l2") == "l2"
    assert get_metric("euclidean") is METRICS["l2"]
    assert set(METRIC_ALIASES.values()) <= set(METRICS)
    assert canonical_metric("cosine", ("l2", "cosine", "hamming")) == "cosine"
    with pytest.raises(UsageError, match=r"unknown metric 'l1'; use one of l2 \(or euclidean\), cosine$"):
        canonical_metric("l1", ("l2", "cosine"))
    with pytest.raises(UsageError, match="unknown metric 'manhattan'"):
        get_metric("manhattan")


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0]], dtype=np.float64)
    y = l2_normalize(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous and y is not x
    np.testing.assert_allclose(y[0], [0.6, 0.8])
    assert np.all(y[1] == 0)  # a zero row stays zero instead of becoming NaN
    assert l2_normalize(x, dtype=None).dtype == np.float64
    z = l2_normalize(x[[0, 2]], dtype=None, eps=0)  # callers that refused zero rows: exact division
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0)


def test_prepare_vectors_per_metric():
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(5, 4)))
    np.testing.assert_array_equal(prepare_vectors(x, "euclidean"), prepare_vectors(x, "l2"))
    np.testing.assert_allclose(np.linalg.norm(prepare_vectors(x, "cosine"), axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(prepare_vectors(x, "js").sum(axis=1), 1.0, rtol=1e-6)
    bits = rng.integers(0, 256, (5, 2), dtype=np.uint8)
    assert prepare_vectors(bits, "hamming") is not None
    with pytest.raises(UsageError, match="binary hashes"):
        prepare_vectors(bits, "euclidean")


def test_pca_is_faiss_pca_and_renormalises_for_cosine():
    import faiss

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    pca = PCA(4).fit(x)
    ref = faiss.PCAMatrix(16, 4)
    ref.train(x)
    np.testing.assert_allclose(pca.transform(x), ref.apply(x), rtol=1e-5, atol=1e-5)
    y = PCA(4, normalize=True).fit(x).transform(x[:10])
    assert y.shape == (10, 4) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("d_out, rows, message", [
    (32, 200, "--pca 32 must be between 1 and the feature dimension 16"),
    (0, 200, "--pca 0 must be between 1"),
    (8, 5, "--pca 8 needs at least 8 sample rows to fit the projection, but there are only 5: use --pca <= 5"),
])
def test_pca_refuses_what_faiss_would_abort_on(d_out, rows, message):
    x = np.random.default_rng(2).normal(size=(rows, 16)).astype(np.float32)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        PCA(d_out, name="--pca").fit(x, source="sample rows")


def test_one_normalisation_helper_everywhere():
    """The modules that normalised vectors on their own now use the vector layer's helper."""
    import neardup.clustering._common as common
    import neardup.extract.postprocess as post
    import neardup.fastsearch.exact as exact
    import neardup.simclr.diagnostics as diag

    for mod in (common, post, exact, diag):
        assert mod.l2_normalize is l2_normalize, mod.__name__
