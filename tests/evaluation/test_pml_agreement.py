"""Our faiss-ranked figures agree with pytorch-metric-learning's AccuracyCalculator (the reference definitions).

``AccuracyCalculator`` has precision@1 only; precision@5/10 come from its own ``precision_at_k`` function through
the subclass below, the documented way to add a metric. Embeddings are L2-normalised for it (its faiss index is
L2, which ranks unit vectors as cosine does).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import accuracy_calculator as ac
from sklearn.datasets import load_digits

from neardup.evaluation.retrieval import RetrievalConfig, RetrievalData, evaluate_retrieval
from neardup.fastsearch.vectors import l2_normalize

from .conftest import clustered

PML = {"precision_at_1": "precision_at_1", "precision_at_5": "precision_at_5", "precision_at_10": "precision_at_10",
       "r_precision": "r_precision", "map_at_r": "mean_average_precision_at_r", "mAP": "mean_average_precision"}


class Calculator(ac.AccuracyCalculator):
    def _at_k(self, k, knn_labels, query_labels, not_lone_query_mask, label_counts, **kw):
        knn_labels, query_labels = ac.try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
        return ac.precision_at_k(knn_labels, query_labels[:, None], k, self.avg_of_avgs, self.return_per_class,
                                 self.label_comparison_fn)

    def calculate_precision_at_5(self, **kw):
        return self._at_k(5, **kw)

    def calculate_precision_at_10(self, **kw):
        return self._at_k(10, **kw)

    def requires_knn(self):
        return [*super().requires_knn(), "precision_at_5", "precision_at_10"]


def reference(q, ql, db=None, dbl=None, normalize=True, **kw) -> dict[str, object]:
    calc = Calculator(include=tuple(PML.values()), k=None, device=torch.device("cpu"), **kw)
    prep = l2_normalize if normalize else np.ascontiguousarray
    if db is None:
        return calc.get_accuracy(prep(q), ql)
    return calc.get_accuracy(prep(q), ql, prep(db), dbl, ref_includes_query=False)


def ours(q, ql, db=None, dbl=None, names=None, metric="cosine"):
    if db is None:
        db, dbl, self_index = q, ql, np.arange(len(q))
    else:
        self_index = np.full(len(q), -1)
    names = names or [str(c) for c in range(int(max(ql.max(), dbl.max())) + 1)]
    data = RetrievalData(db, dbl, [""] * len(db), q, ql, [""] * len(q), names, self_index)
    return evaluate_retrieval(data, RetrievalConfig(metric=metric)).result


def check(result, ref, macro=None, per_class=None) -> None:
    for ours_name, pml_name in PML.items():
        assert result.overall[ours_name] == pytest.approx(ref[pml_name], abs=1e-6), ours_name
        if macro is not None:
            assert result.macro[ours_name] == pytest.approx(macro[pml_name], abs=1e-6), ours_name
        if per_class is not None:
            scored = [r for r in result.per_class if r["n_scored"]]
            assert [r[ours_name] for r in scored] == pytest.approx(per_class[pml_name], abs=1e-6), ours_name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leave_one_out_matches_on_random_data(seed) -> None:
    X, y = clustered(n_classes=7, seed=seed)
    res = ours(X, y)
    assert 0.2 < res.overall["precision_at_1"] < 0.95  # a case where the figures say something
    check(res, reference(X, y), reference(X, y, avg_of_avgs=True), reference(X, y, return_per_class=True))


def test_query_set_against_a_database_matches() -> None:
    X, y = clustered(n_classes=5, sizes=(10, 20), seed=4)
    q, ql, db, dbl = X[::3], y[::3], np.delete(X, np.s_[::3], 0), np.delete(y, np.s_[::3], 0)
    res = ours(q, ql, db, dbl)
    assert res.n_queries == len(q) and res.n_database == len(db) and res.protocol == "queries"
    check(res, reference(q, ql, db, dbl), reference(q, ql, db, dbl, avg_of_avgs=True))


def test_queries_without_a_positive_are_left_out_as_pml_does() -> None:
    X, y = clustered(n_classes=5, seed=5)
    y = y.copy()
    y[:2] = [5, 6]  # two classes of one image each: no positive under leave-one-out
    res = ours(X, y)
    assert res.n_scored == len(y) - 2 and res.classes_without_positive == ["5", "6"]
    check(res, reference(X, y), reference(X, y, avg_of_avgs=True))
    lone = [r for r in res.per_class if r["class"] in ("5", "6")]
    assert all(r["n_scored"] == 0 and r["mAP"] is None and r["top1_accuracy"] == 0.0 for r in lone)


def test_real_images_sklearn_digits_match() -> None:
    """A real labelled image set: the 1797 8x8 digit scans of sklearn, as 64-d pixel vectors.

    Both sides search the same unit vectors with an L2 index here, so neighbours whose cosine differs only in the
    last float32 bit (which an inner-product index, or normalising twice, may order the other way) are ordered
    alike: the figures then agree to 1e-6 for every class, not only overall.
    """
    digits = load_digits()
    X, y = l2_normalize(digits.data)[::3], digits.target[::3]  # 599 images, 10 classes
    res = ours(X, y, metric="l2")
    assert res.n_queries == 599 and res.n_classes == 10
    assert res.overall["precision_at_1"] > 0.9  # raw pixels separate digits well
    check(res, reference(X, y, normalize=False), reference(X, y, normalize=False, avg_of_avgs=True),
          reference(X, y, normalize=False, return_per_class=True))
