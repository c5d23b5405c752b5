import numpy as np
import pytest

from neardup.fastsearch.groundtruth import exact_knn
from neardup.fastsearch.metrics import (
    ann_recall,
    first_hit_rank,
    mean_average_precision,
    micro_average_precision,
    recall_at_k,
)
from neardup.fastsearch.vectors import prepare_vectors


def search_exact(database: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The package's one exact k-NN over a database in two blocks (the streaming must not change the result)."""
    half = len(database) // 2
    return exact_knn([(0, database[:half]), (half, database[half:])], prepare_vectors(queries, metric), k, metric)


def test_metrics_on_a_hand_made_case():
    # 4 queries; true matches: 0, 1, 2, 3
    ranked = np.array([[0, 5, 6],    # hit at rank 1
                       [4, 1, 6],    # hit at rank 2
                       [4, 5, 2],    # hit at rank 3
                       [4, 5, 6]])   # miss
    scores = np.array([[0.9, 0.5, 0.4],
                       [0.8, 0.7, 0.1],
                       [0.6, 0.3, 0.2],
                       [0.95, 0.2, 0.1]])
    gt = np.array([0, 1, 2, 3])
    assert first_hit_rank(ranked, gt).tolist() == [1, 2, 3, 0]
    assert recall_at_k(ranked, gt, (1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.75}
    assert mean_average_precision(ranked, gt) == pytest.approx((1 + 1 / 2 + 1 / 3 + 0) / 4)
    # pooled by score: .95(-) .9(+) .8(-) .7(+) .6(-) .5 .4 .3 .2(+) ...
    # precision at the positives: 1/2, 2/4, 3/9 ; 4 positives in all
    assert micro_average_precision(ranked, scores, gt) == pytest.approx((1 / 2 + 2 / 4 + 3 / 9) / 4)


def test_micro_ap_perfect_and_ann_recall():
    ranked = np.array([[0, 1], [1, 0]])
    scores = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert micro_average_precision(ranked, scores, np.array([0, 1])) == pytest.approx(1.0)
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    approx = np.array([[0, 2, 9], [4, 8, 7]])
    assert ann_recall(approx, exact, 1) == pytest.approx(0.5)
    assert ann_recall(approx, exact, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flat_equals_numpy_bruteforce(metric):
    rng = np.random.default_rng(0)
    db, q = rng.normal(size=(200, 16)).astype(np.float32), rng.normal(size=(20, 16)).astype(np.float32)
    scores, idx = search_exact(db, q, 5, metric)
    if metric == "cosine":
        sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1, keepdims=True)).T
    else:
        sim = -((q[:, None, :] - db[None]) ** 2).sum(-1)
    ref = np.argsort(-sim, axis=1)[:, :5]
    assert np.array_equal(idx, ref)
    assert np.allclose(scores, np.take_along_axis(sim, ref, 1), rtol=1e-4, atol=1e-4)


def test_hamming_search():
    rng = np.random.default_rng(1)
    db = rng.integers(0, 256, size=(50, 8), dtype=np.uint8)
    q = db[[3, 7]].copy()
    q[0, 0] ^= 0b1  # one bit away
    scores, idx = search_exact(db, q, 3, "hamming")
    assert idx[:, 0].tolist() == [3, 7]
    assert scores[:, 0].tolist() == [-1.0, 0.0]
