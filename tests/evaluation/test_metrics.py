"""Retrieval figures on a case small enough to compute by hand, and the metric functions one by one."""

from __future__ import annotations

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.evaluation.metrics import average_precision, majority_vote, precision_at_k, r_precision
from neardup.evaluation.retrieval import RetrievalConfig, RetrievalData, evaluate_retrieval

# Six points on a line, classes A A B A B B, l2 distance (no two distances from a point are equal):
#   p0 x=0 A   p1 x=1 A   p2 x=2.2 B   p3 x=3.5 A   p4 x=5 B   p5 x=11 B
# Leave-one-out rankings (nearest first) and their relevance (1 = same class); every query has R = 2:
#   p0: p1 A, p2 B, p3 A, p4 B, p5 B   rel 1 0 1 0 0   P@1 1  R-prec 1/2  MAP@R 1/2        AP (1/1 + 2/3)/2 = 5/6
#   p1: p0 A, p2 B, p3 A, p4 B, p5 B   rel 1 0 1 0 0   P@1 1  R-prec 1/2  MAP@R 1/2        AP 5/6
#   p2: p1 A, p3 A, p0 A, p4 B, p5 B   rel 0 0 0 1 1   P@1 0  R-prec 0    MAP@R 0          AP (1/4 + 2/5)/2 = 0.325
#   p3: p2 B, p4 B, p1 A, p0 A, p5 B   rel 0 0 1 1 0   P@1 0  R-prec 0    MAP@R 0          AP (1/3 + 2/4)/2 = 5/12
#   p4: p3 A, p2 B, p1 A, p0 A, p5 B   rel 0 1 0 0 1   P@1 0  R-prec 1/2  MAP@R (1/2)/2    AP (1/2 + 2/5)/2 = 0.45
#   p5: p4 B, p3 A, p2 B, p1 A, p0 A   rel 1 0 1 0 0   P@1 1  R-prec 1/2  MAP@R 1/2        AP 5/6
# P@5 = 2/5 for every query; P@10 does not exist (5 neighbours).
# Top-1 class: A A A B A B -> right for p0 p1 p5: 3/6. Vote of 3: p0 A,B,A->A  p1 A,B,A->A  p2 A,A,A->A
#   p3 B,B,A->B  p4 A,B,A->A  p5 B,A,B->B -> right for p0 p1 p5: 3/6.
X = np.array([[0.0], [1.0], [2.2], [3.5], [5.0], [11.0]], dtype=np.float32)
Y = np.array([0, 0, 1, 0, 1, 1])
AP = np.array([5 / 6, 5 / 6, 0.325, 5 / 12, 0.45, 5 / 6])


def tiny(vote_k: int = 3):
    data = RetrievalData(X, Y, [f"p{i}" for i in range(6)], X, Y, [f"p{i}" for i in range(6)], ["A", "B"],
                         np.arange(6), metric="cosine")
    return evaluate_retrieval(data, RetrievalConfig(vote_k=vote_k, metric="l2"))


def test_hand_computed_six_points() -> None:
    out = tiny()
    o, r = out.outcomes, out.result
    np.testing.assert_allclose(o.figures["precision_at_1"], [1, 1, 0, 0, 0, 1])
    np.testing.assert_allclose(o.figures["precision_at_5"], [0.4] * 6)
    np.testing.assert_allclose(o.figures["r_precision"], [0.5, 0.5, 0, 0, 0.5, 0.5])
    np.testing.assert_allclose(o.figures["map_at_r"], [0.5, 0.5, 0, 0, 0.25, 0.5])
    np.testing.assert_allclose(o.figures["mAP"], AP)
    assert "precision_at_10" not in o.figures
    assert o.top1.tolist() == [0, 0, 0, 1, 0, 1] and o.vote.tolist() == [0, 0, 0, 1, 0, 1]
    assert o.nearest.tolist() == [1, 0, 1, 2, 3, 4]
    assert o.positives.tolist() == [2] * 6
    s = r.overall
    assert s["precision_at_1"] == pytest.approx(0.5) and s["precision_at_5"] == pytest.approx(0.4)
    assert s["precision_at_10"] is None
    assert s["r_precision"] == pytest.approx(1 / 3) and s["map_at_r"] == pytest.approx(1.75 / 6)
    assert s["mAP"] == pytest.approx(AP.mean()) and s["mAP"] == pytest.approx(0.6152777777)
    assert s["top1_accuracy"] == pytest.approx(0.5) and s["vote_accuracy"] == pytest.approx(0.5)
    a, b = r.per_class
    assert a["class"] == "A" and a["precision_at_1"] == pytest.approx(2 / 3) and a["mAP"] == pytest.approx(25 / 36)
    assert b["class"] == "B" and b["precision_at_1"] == pytest.approx(1 / 3)
    assert b["mAP"] == pytest.approx((0.325 + 0.45 + 5 / 6) / 3)
    assert a["n_queries"] == a["n_database"] == 3 and a["n_scored"] == 3
    assert a["confused_with"] == "B" and a["n_confused"] == 1  # p3's nearest is B
    assert b["confused_with"] == "A" and b["n_confused"] == 2
    assert r.macro["precision_at_1"] == pytest.approx(0.5) and r.macro["mAP"] == pytest.approx(AP.mean())
    assert r.n_scored == 6 and r.classes_without_positive == [] and r.vote_k == 3 and r.protocol == "loo"
    true, pred, count = out.outcomes.confusion()  # the matrix [[2, 1], [2, 1]], cell by cell
    assert true.tolist() == [0, 0, 1, 1] and pred.tolist() == [0, 1, 0, 1] and count.tolist() == [2, 1, 2, 1]


def test_vote_of_five_differs_from_top1() -> None:
    # all 5 neighbours vote: p0, p1 A,B,A,B,B -> B; p2 A,A,A,B,B -> A; p3 B,B,A,A,B -> B; p4 A,B,A,A,B -> A;
    # p5 B,A,B,A,A -> A: every vote is wrong (the majority class of the others is always the other class)
    out = tiny(vote_k=5)
    assert out.outcomes.vote.tolist() == [1, 1, 0, 1, 0, 0]
    assert out.result.overall["vote_accuracy"] == 0.0 and out.result.overall["top1_accuracy"] == 0.5


def test_vote_k_beyond_the_database_is_lowered() -> None:
    assert tiny(vote_k=50).result.vote_k == 5


def test_metric_functions_directly() -> None:
    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], dtype=bool)
    np.testing.assert_allclose(precision_at_k(rel, 2), [0.5, np.nan, 0.5])
    np.testing.assert_allclose(r_precision(rel), [0.5, np.nan, 2 / 3])
    # row 2: R = 3, positives at ranks 2, 3, 4: AP = (1/2 + 2/3 + 3/4) / 3; MAP@R keeps ranks <= 3
    np.testing.assert_allclose(average_precision(rel), [(1 + 2 / 3) / 2, np.nan, (1 / 2 + 2 / 3 + 3 / 4) / 3])
    np.testing.assert_allclose(average_precision(rel, at_r=True), [1 / 2, np.nan, (1 / 2 + 2 / 3) / 3])
    with pytest.raises(ValueError, match="precision@5"):
        precision_at_k(rel, 5)


def test_majority_vote_ties_go_to_the_nearest() -> None:
    labels = np.array([[3, 1, 1, 3], [2, 2, 5, 5], [7, 8, 9, 9], [4, 4, 4, 1]])
    assert majority_vote(labels).tolist() == [3, 2, 9, 4]
    assert majority_vote(np.array([[6]])).tolist() == [6]
    with pytest.raises(ValueError):
        majority_vote(np.zeros((2, 0)))


@pytest.mark.parametrize("kw, message", [
    ({"vote_k": 0}, "--vote-k"), ({"vote_k": True}, "--vote-k"), ({"metric": "js"}, "unknown metric"),
    ({"protocol": "cross"}, "unknown protocol"), ({"split_seed": -1}, "--split-classes"),
])
def test_config_is_validated_in_one_place(kw, message) -> None:
    with pytest.raises(UsageError, match=message):
        RetrievalConfig(**kw).validate()


def test_protocol_must_match_the_inputs() -> None:
    assert RetrievalConfig().validate(has_queries=False).protocol == "loo"
    assert RetrievalConfig().validate(has_queries=True).protocol == "queries"
    with pytest.raises(UsageError, match="needs --queries"):
        RetrievalConfig(protocol="queries").validate(has_queries=False)
    with pytest.raises(UsageError, match="drop --queries"):
        RetrievalConfig(protocol="loo").validate(has_queries=True)
