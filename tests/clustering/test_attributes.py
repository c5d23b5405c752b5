import numpy as np
import pytest

from neardup.clustering.attributes import cluster_attributes
from neardup.clustering.data import GroundTruth
from neardup.clustering.plots import write_plots
from neardup.clustering.run import run_clustering


def test_attributes_hand_computed():
    X = np.array([[0], [1], [3], [10], [11], [30]], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 2])
    attrs, cents = cluster_attributes(X, labels, "euclidean", n_representatives=2)
    a, b = attrs
    assert (a.cluster, a.size, b.cluster, b.size) == (0, 3, 1, 2)  # singletons are not described
    assert a.diameter == pytest.approx(3) and a.diameter_exact
    assert a.dispersion == pytest.approx((4 / 3 + 1 / 3 + 5 / 3) / 3)
    assert a.separation == pytest.approx(10 - 4 / 3)
    assert a.closest == [1, 0] and a.farthest == [2, 0]
    assert (b.diameter, b.dispersion, b.separation) == pytest.approx((1, 0.5, 7.5))
    assert cents[:, 0] == pytest.approx([4 / 3, 10.5])
    assert a.to_dict([f"p{i}" for i in range(6)])["closest"] == ["p1", "p0"]


def test_attributes_cosine_and_hamming_and_sampled_diameter():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 8)).astype(np.float32)
    labels = np.repeat([0, 1], 25)
    (a, _), cents = cluster_attributes(X, labels, "cosine", max_exact=10)
    assert not a.diameter_exact and 0 < a.diameter <= 2
    assert np.linalg.norm(cents, axis=1) == pytest.approx([1, 1], abs=1e-5)
    B = np.packbits(np.array([[0] * 8, [1] + [0] * 7, [1, 1] + [0] * 6], dtype=np.uint8), axis=1)
    (h,), c = cluster_attributes(B, np.zeros(3, int), "hamming")
    assert h.diameter == 2 and h.dispersion == pytest.approx(2 / 3) and h.closest[0] == 1


def test_plots_and_mosaic(tmp_path, make_image_files):
    paths = make_image_files
    rng = np.random.default_rng(1)
    X = (np.repeat(rng.standard_normal((3, 8)), 2, axis=0) + 0.001 * rng.standard_normal((6, 8))).astype(np.float32)
    truth = GroundTruth(np.repeat([0, 1, 2], 2), ["a"] * 6, [frozenset()] * 6)
    res, labels, Z, _ = run_clustering(X, "hierarchical", {"linkage": "single"}, "cosine", paths=paths,
                                       values=[0.01, 0.5], truth=truth)
    files = write_plots(tmp_path, res, labels, paths, truth, Z, X, mosaics=5)
    names = sorted(p.name for p in files)
    assert {"sizes.png", "sweep.png", "dendrogram.png", "diameters.png"} <= set(names)
    assert len([n for n in names if n.startswith("cluster_")]) == 3


@pytest.fixture
def make_image_files(tmp_path):
    from tests.conftest import make_image

    out = []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        make_image(i // 2).save(p)
        out.append(str(p))
    return out
