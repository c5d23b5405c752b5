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


def planted_hub(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A hub (the mean direction) and 200 unrelated spokes around it, plus 5 planted groups of 6 copies.

    In 128 dimensions every spoke is at cosine ~0.77 of the hub (0.73-0.80) but ~0.6 of the other spokes (0.35 % of
    their pairs reach 0.75); copies are at >= 0.86 of each other and <= 0.23 of anything else. Returns (vectors,
    planted group of each: -1 for the hub and the spokes).
    """
    rng = np.random.default_rng(seed)
    d = 128
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    spokes = mu + 0.066 * rng.standard_normal((200, d))
    centres = rng.standard_normal((5, d))
    copies = np.repeat(centres / np.linalg.norm(centres, axis=1, keepdims=True), 6, axis=0)
    copies += 0.03 * rng.standard_normal((30, d))
    V = np.concatenate([mu[None], spokes, copies])
    V = (V / np.linalg.norm(V, axis=1, keepdims=True)).astype(np.float32)
    return V, np.r_[np.full(201, -1), np.repeat(np.arange(5), 6)]


@pytest.mark.parametrize("dense", [True, False])
def test_a_planted_hub_is_split_and_real_copies_stay_grouped(dense: bool) -> None:
    from neardup.dedup.grouping import HUB_MIN_SIZE, dot_sim, gram, pair_share
    from neardup.dedup.large import guarded_by_component

    V, planted = planted_hub()
    rows, cols = np.triu_indices(len(V), 1)
    sims = np.einsum("ij,ij->i", V[rows], V[cols])
    t, bound = 0.75, 0.55

    def run(share: float) -> np.ndarray:
        return guarded_groups(len(V), rows, cols, sims, t, dot_sim(V), centre_threshold=bound,
                              dense=gram(V) if dense else None, min_pair_share=share)

    star_only = run(0.0)
    hub_group = np.flatnonzero(star_only == star_only[0])
    assert len(hub_group) > 150  # the star guard alone: the hub holds most spokes (all within its bound)
    assert pair_share(hub_group, t, dot_sim(V)) < 0.05  # whose pairs are not duplicates
    labels = run(0.1)
    assert (labels == labels[0]).sum() == 1  # the hub is alone
    assert np.bincount(labels[1:201]).max() < HUB_MIN_SIZE  # the spokes fall apart
    for g in range(5):  # every planted group is one group, of its copies only
        members = np.flatnonzero(planted == g)
        assert len(set(labels[members])) == 1 and (labels == labels[members[0]]).sum() == 6
    if dense:  # the large path applies the same rule, component by component
        assert np.array_equal(guarded_by_component(len(V), rows, cols, sims, t, lambda idx: V[idx], bound,
                                                   min_pair_share=0.1), labels)


def test_the_pair_share_is_counted_by_hand() -> None:
    from neardup.dedup.grouping import pair_share

    S = np.array([[1.0, 0.9, 0.2, 0.8], [0.9, 1.0, 0.95, 0.1], [0.2, 0.95, 1.0, 0.3], [0.8, 0.1, 0.3, 1.0]])
    # pairs (0,1) .9, (0,2) .2, (0,3) .8, (1,2) .95, (1,3) .1, (2,3) .3: 3 of 6 at or above 0.8
    assert pair_share(np.arange(4), 0.8, lambda i, js: S[i, js]) == 0.5
    assert pair_share(np.arange(4), 0.8, lambda i, js: S[i, js], matrix=S) == 0.5
    assert pair_share(np.arange(4), 0.8, lambda i, js: S[i, js], dense=lambda js: S[np.ix_(js, js)]) == 0.5


def bridged_photos(n: int = 30) -> np.ndarray:
    """Two alike photos (cosine 0.7), ``n`` copies each (0.91+ among themselves, 0.72- across), and one copy of
    each pulled a quarter of the way towards the other photo: those two score 0.915, every other pair across
    0.824 or less. At threshold 0.87 they are one component joined by a single edge."""
    rng = np.random.default_rng(0)
    d = 64
    a, b = np.zeros(d), np.zeros(d)
    a[0], b[0], b[1] = 1.0, 0.7, np.sqrt(1 - 0.49)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    A, B = unit(a + 0.03 * rng.standard_normal((n, d))), unit(b + 0.03 * rng.standard_normal((n, d)))
    A[0], B[0] = unit(a + 0.25 * (b - a)), unit(b + 0.25 * (a - b))
    return np.concatenate([A, B]).astype(np.float32)


@pytest.mark.parametrize("dense", [True, False])
def test_a_planted_bridge_is_cut_and_each_photo_keeps_its_copies(dense: bool) -> None:
    from neardup.dedup.grouping import dot_sim, gram
    from neardup.dedup.large import guarded_by_component

    V = bridged_photos()
    rows, cols = np.triu_indices(len(V), 1)
    sims = np.einsum("ij,ij->i", V[rows], V[cols])
    t = 0.87
    r, c = rows[sims >= t], cols[sims >= t]
    assert len(set(components(len(V), r, c))) == 1 and ((r < 30) != (c < 30)).sum() == 1  # one bridge edge

    def run(bridge: float) -> np.ndarray:
        return guarded_groups(len(V), rows, cols, sims, t, dot_sim(V), centre_threshold=0.65,
                              dense=gram(V) if dense else None, max_bridge=bridge)

    # the star and hub rules keep both photos together: all near the centre, half of the pairs above threshold
    assert len(set(run(0.0))) == 1
    labels = run(0.05)
    if not dense:  # without the similarity matrix (components above DENSE_LIMIT) the rule is not applied
        assert len(set(labels)) == 1
        return
    assert len(set(labels[:30])) == 1 and len(set(labels[30:])) == 1 and labels[0] != labels[30]
    assert np.array_equal(guarded_groups(len(V), rows, cols, sims, t, dot_sim(V), centre_threshold=0.65,
                                         dense=gram(V)), labels)  # the default
    # the large path builds each component's matrix and cuts the same
    assert np.array_equal(guarded_by_component(len(V), rows, cols, sims, t, lambda idx: V[idx], 0.65), labels)


def test_a_group_with_weakly_linked_copies_is_not_cut() -> None:
    """Heavy attacks link only to their original: cutting them off has conductance 1, far above the bound."""
    n, leaves = 30, 8
    S = np.full((n, n), 0.7)
    S[: n - leaves, : n - leaves] = 0.95  # the original (0) and its mild copies
    S[0, n - leaves:] = S[n - leaves:, 0] = 0.88  # heavy copies: near the original only
    np.fill_diagonal(S, 1.0)
    rows, cols = np.triu_indices(n, 1)
    labels = guarded_groups(n, rows, cols, S[rows, cols], 0.85, lambda i, js: S[i, js], centre_threshold=0.65,
                            dense=lambda js: S[np.ix_(js, js)])
    assert len(set(labels)) == 1


def test_the_bridge_cut_is_counted_by_hand() -> None:
    from neardup.dedup.grouping import bridge_cut

    # two triangles {0,1,2} and {3,4,5} joined by the edge 2-3: degrees 2,2,3 | 3,2,2; cut 1 of volume 7 a side
    S = np.eye(7)
    for a, b in [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5), (2, 3)]:
        S[a, b] = S[b, a] = 0.9
    conductance, side = bridge_cut(S, 0.8)
    assert conductance == pytest.approx(1 / 7)
    # the side of the first member; 6 has no edge: it joins the larger side, on a tie the first member's
    assert np.flatnonzero(side).tolist() == [0, 1, 2, 6]
    conductance, side = bridge_cut(S[::-1, ::-1], 0.8)  # reversed: 6 is now member 0 (no edge), 5 the first with one
    assert conductance == pytest.approx(1 / 7) and np.flatnonzero(side).tolist() == [0, 1, 2, 3]
    S[2, 3] = S[3, 2] = 0.5  # no edge across: a graph in pieces has a cut of conductance 0
    assert bridge_cut(S, 0.8)[0] == 0.0
    assert bridge_cut(np.eye(3), 0.8) == (1.0, pytest.approx(np.zeros(3, bool)))  # no edges: no cut


@pytest.mark.parametrize("n", [16, 21, 40])
def test_a_group_whose_pairs_all_pass_is_one_group(n: int) -> None:
    """A complete threshold graph (LAPACK's subset eigensolver once returned no vector for 21 members)."""
    from neardup.dedup.grouping import bridge_cut

    S = np.full((n, n), 0.9)
    np.fill_diagonal(S, 1.0)
    assert bridge_cut(S, 0.5)[0] > 0.45  # a clique has no weak cut
    rows, cols = np.triu_indices(n, 1)
    labels = guarded_groups(n, rows, cols, S[rows, cols], 0.5, lambda i, js: S[i, js],
                            dense=lambda js: S[np.ix_(js, js)])
    assert len(set(labels)) == 1


def test_a_pair_at_the_threshold_by_rounding_counts_both_ways() -> None:
    from neardup.dedup.grouping import bridge_cut

    a = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=bool)
    S = np.where(a, 0.9, 0.1)
    S[0, 2] = S[3, 1] = 0.5  # a product's two halves either side of the threshold
    S[2, 0] = S[1, 3] = np.nextafter(0.5, 0)
    conductance, side = bridge_cut(S, 0.5)
    assert 0 <= conductance <= 1


def test_tied_cuts_do_not_depend_on_the_eigenvectors_sign(monkeypatch) -> None:
    """Two cuts of equal conductance: LAPACK may return either sign of the Fiedler vector; the groups are the same."""
    adj = {0: [6, 7, 15, 16], 1: [3, 5, 9, 10, 11, 14], 2: [4, 8, 12, 13], 3: [1, 5, 9, 10, 11, 14],
           4: [2, 8, 12, 13], 5: [1, 3, 9, 10, 11, 14], 6: [0, 7, 15, 16], 7: [0, 6, 15, 16], 8: [2, 4, 12, 13],
           9: [1, 3, 5, 10, 11, 12, 14, 16], 10: [1, 3, 5, 9, 11, 14], 11: [1, 3, 5, 9, 10, 14],
           12: [2, 4, 8, 9, 13], 13: [2, 4, 8, 12], 14: [1, 3, 5, 9, 10, 11], 15: [0, 6, 7, 16], 16: [0, 6, 7, 9, 15]}
    S = np.full((17, 17), 0.5)
    for i, js in adj.items():
        S[i, js] = 0.9
    np.fill_diagonal(S, 1.0)
    rows, cols = np.triu_indices(17, 1)

    def run() -> np.ndarray:
        return guarded_groups(17, rows, cols, S[rows, cols], 0.85, lambda i, js: S[i, js], centre_threshold=0.4,
                              dense=lambda js: S[np.ix_(js, js)], min_pair_share=0.0)

    first = run()
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda m: (lambda w, v: (w, -v))(*eigh(m)))
    assert np.array_equal(run(), first)
