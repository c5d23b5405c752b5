"""The anti-chaining guard and label-free threshold calibration, on planted data."""

from __future__ import annotations

import numpy as np
import pytest

from neardup.dedup.calibrate import choose_threshold, precision_recall
from neardup.dedup.grouping import components, guarded_groups, largest_group_share


def line_sim(x: np.ndarray):
    return lambda i, js: 1.0 - np.abs(x[js] - x[i])


def all_pairs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = np.triu_indices(len(x), 1)
    return r, c, 1.0 - np.abs(x[r] - x[c])


@pytest.mark.parametrize("dense", [False, True])
def test_a_planted_chain_is_split_but_tight_groups_stay_whole(dense: bool) -> None:
    chain = np.arange(21) * 0.05            # neighbours 0.05 apart: one component at threshold 0.94
    tight_a = 5.0 + np.array([0, 0.01, 0.02, 0.015])
    tight_b = 9.0 + np.array([0, 0.02, 0.03])
    x = np.concatenate([chain, tight_a, tight_b])
    rows, cols, sims = all_pairs(x)
    assert len(np.unique(components(len(x), *(a[sims >= 0.94] for a in (rows, cols))))) == 3  # the chain chains
    matrix = (lambda js: 1.0 - np.abs(x[js][:, None] - x[js][None, :])) if dense else None
    labels = guarded_groups(len(x), rows, cols, sims, 0.94, line_sim(x), dense=matrix)
    chain_labels = labels[:21]
    assert np.bincount(chain_labels).max() <= 3            # no group spans the chain
    for g in np.unique(labels):
        members = x[labels == g]
        assert members.max() - members.min() <= 2 * 0.06 + 1e-9  # bounded diameter: two threshold steps
    assert len(set(labels[21:25])) == 1 and len(set(labels[25:])) == 1  # true groups intact
    assert labels[21] != labels[25] and not set(labels[21:]) & set(chain_labels)
    assert largest_group_share(labels) == pytest.approx(4 / len(x))


def test_edges_below_threshold_are_ignored_and_labels_are_stable() -> None:
    x = np.array([0.0, 0.5, 0.51, 2.0])
    rows, cols, sims = all_pairs(x)
    labels = guarded_groups(4, rows, cols, sims, 0.95, line_sim(x))
    assert labels.tolist() == [0, 1, 1, 2]  # numbered by smallest member
    perm = guarded_groups(4, cols, rows, sims, 0.95, line_sim(x))  # edge direction does not matter
    assert perm.tolist() == labels.tolist()


def test_choose_threshold_by_hand() -> None:
    pos = np.array([0.9, 0.8, 0.7, 0.6])
    neg = np.array([0.65, 0.5, 0.4, 0.3])
    cal = choose_threshold(pos, neg, 0.99)
    # accepting 0.7 and above: recall 3/4, no negative -> precision 1; the cut sits midway to the 0.65 negative
    assert cal.threshold == pytest.approx(0.675) and cal.recall == pytest.approx(0.75) and cal.precision == 1.0
    cal = choose_threshold(pos, neg, 0.75)
    # accepting 0.6 and above: recall 1, fpr 1/4 -> precision 0.8 >= 0.75; midway to the 0.5 negative
    assert cal.threshold == pytest.approx(0.55) and cal.precision == pytest.approx(0.8) and cal.reached
    p, r = precision_recall(pos, neg, np.array([0.6]))
    assert p[0] == pytest.approx(0.8) and r[0] == 1.0


def test_choose_threshold_when_the_target_is_out_of_reach() -> None:
    cal = choose_threshold(np.array([0.5, 0.6]), np.array([0.9]), 0.99)
    assert not cal.reached and cal.threshold > 0.9 and cal.recall == 0.0


@pytest.mark.parametrize("pos, neg, target, message", [
    ([], [0.1], 0.99, "at least one"), ([0.5], [np.nan], 0.99, "finite"), ([0.5], [0.1], 0.0, "target precision"),
])
def test_choose_threshold_refuses_bad_input(pos, neg, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        choose_threshold(np.array(pos), np.array(neg), target)


def test_calibration_holds_on_held_back_scores() -> None:
    """A threshold chosen on one sample keeps its precision on another from the same distributions."""
    rng = np.random.default_rng(0)
    draw = lambda n: (np.clip(rng.normal(0.85, 0.06, n), -1, 1), np.clip(rng.normal(0.55, 0.1, n), -1, 1))  # noqa: E731
    pos, neg = draw(2000)
    cal = choose_threshold(pos, neg, 0.99)
    pos2, neg2 = draw(2000)
    p, r = precision_recall(pos2, neg2, np.array([cal.threshold]))
    assert abs(p[0] - 0.99) <= 0.01 and r[0] == pytest.approx(cal.recall, abs=0.03)
