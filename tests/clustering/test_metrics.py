import itertools

import numpy as np
import pytest
from sklearn import metrics as skm

from neardup.clustering.metrics import bcubed, contingency, pairwise_prf, score_partition


def naive_pairs(t, p):
    tp = fp = fn = 0
    for i, j in itertools.combinations(range(len(t)), 2):
        same_t, same_p = t[i] == t[j], p[i] == p[j]
        tp += same_t and same_p
        fp += same_p and not same_t
        fn += same_t and not same_p
    return tp, fp, fn


def naive_bcubed(t, p):
    prec = [np.mean(t[p == p[i]] == t[i]) for i in range(len(t))]
    rec = [np.mean(p[t == t[i]] == p[i]) for i in range(len(t))]
    return float(np.mean(prec)), float(np.mean(rec))


def noise_to_singletons(p):
    p = np.asarray(p).copy()
    p[p == -1] = p.max() + 1 + np.arange(np.sum(p == -1))
    return p


def test_hand_computed_case():
    # true groups {0,1,2} {3,4} {5}; predicted {0,1} {2,3,4} and 5 as noise (a singleton)
    t = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, -1])
    # pairs together in both: (0,1), (3,4) = 2; predicted pairs: 1 + 3 = 4; true pairs: 3 + 1 = 4
    assert pairwise_prf(t, p) == pytest.approx((0.5, 0.5, 0.5))
    # per item precision 1, 1, 1/3, 2/3, 2/3, 1 ; recall 2/3, 2/3, 1/3, 1, 1, 1
    bp, br, bf = bcubed(t, p)
    assert bp == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3 + 1) / 6)
    assert br == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1 + 1) / 6)
    assert bf == pytest.approx(2 * bp * br / (bp + br))
    s = score_partition(t, p)
    assert (s.n_items, s.n_true_groups, s.n_clusters, s.n_noise) == (6, 3, 2, 1)
    assert s.noise_fraction == pytest.approx(1 / 6)
    assert s.fowlkes_mallows == pytest.approx(2 / np.sqrt(4 * 4))
    # ARI by hand: index = 2, expected = 4*4/15, max = 4
    assert s.ari == pytest.approx((2 - 16 / 15) / (4 - 16 / 15))
    assert contingency(t, p).toarray().tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 1]]


def test_perfect_and_all_in_one():
    t = np.array([0, 0, 1, 1, 2])
    s = score_partition(t, np.array([5, 5, 9, 9, 1]))
    assert s.ari == pytest.approx(1) and s.pairwise_f1 == 1 and s.bcubed_f1 == pytest.approx(1)
    one = score_partition(t, np.zeros(5, dtype=int))
    assert one.pairwise_recall == 1 and one.pairwise_precision == pytest.approx(2 / 10)
    assert one.bcubed_recall == pytest.approx(1)


@pytest.mark.parametrize("seed", range(6))
def test_against_naive_and_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    t = rng.integers(0, int(rng.integers(1, 12)), n)
    p = rng.integers(-1, int(rng.integers(1, 12)), n)
    s = score_partition(t, p)
    ps = noise_to_singletons(p)
    tp, fp, fn = naive_pairs(t, ps)
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    assert (s.pairwise_precision, s.pairwise_recall) == pytest.approx((prec, rec))
    assert (s.bcubed_precision, s.bcubed_recall) == pytest.approx(naive_bcubed(t, ps))
    # sklearn's pair confusion counts ordered pairs: C[1,1] = 2 tp
    C = skm.cluster.pair_confusion_matrix(t, ps)
    assert C[1, 1] == 2 * tp and C[0, 1] == 2 * fp and C[1, 0] == 2 * fn
    assert s.ari == pytest.approx(skm.adjusted_rand_score(t, ps))
    assert s.ami == pytest.approx(skm.adjusted_mutual_info_score(t, ps))
    assert (s.homogeneity, s.completeness, s.v_measure) == pytest.approx(skm.homogeneity_completeness_v_measure(t, ps))
    assert s.fowlkes_mallows == pytest.approx(skm.fowlkes_mallows_score(t, ps))
    assert s.n_noise == int(np.sum(p == -1))


def test_bad_input():
    with pytest.raises(ValueError, match="empty"):
        score_partition(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(ValueError, match="items"):
        score_partition(np.array([0, 1]), np.array([0, 1, 2]))


def test_string_labels_and_big_input_stay_linear():
    t = np.array(["a", "a", "b"])
    assert score_partition(t, np.array([0, 0, 1])).ari == pytest.approx(1)
    n = 200_000  # O(n^2) would be 2e10 pairs
    rng = np.random.default_rng(0)
    t = rng.integers(0, n // 3, n)
    s = score_partition(t, t)
    assert s.pairwise_f1 == 1 and s.ami is None  # AMI skipped on huge tables
