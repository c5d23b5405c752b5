"""Partition scores against ground truth, as small pure numpy functions.

Every score is computed from the contingency table of (true group, predicted
cluster) counts, never from the n x n pair matrix, so scoring a million images
costs O(n) memory. Conventions:

* ``labels_true`` / ``labels_pred`` are (n,) integer arrays (or anything
  ``np.unique`` accepts). Predicted ``-1`` is *noise* (DBSCAN/HDBSCAN): every
  noise point is scored as its own singleton cluster, which is what a user of
  the clusters sees (an unclustered image is a group of one).
* Pairwise scores count unordered pairs of items put together. With no
  predicted pairs precision is 1 (nothing was wrongly merged); with no true
  pairs recall is 1 (nothing could be missed).
* BCubed (Bagga & Baldwin 1998; Amigó et al. 2009) averages per-item
  precision |C(e) ∩ L(e)| / |C(e)| and recall |C(e) ∩ L(e)| / |L(e)|.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import sparse

#: Above this many (true groups x predicted clusters) the expected mutual information that AMI needs is
#: too slow (sklearn's EMI loops over the table: ~2 s at 1000 x 1000); AMI is then reported as None.
AMI_MAX_CELLS = 1e6


def encode_labels(labels: np.ndarray, noise_as_singletons: bool = False) -> np.ndarray:
    """Labels as dense ints 0..k-1; with ``noise_as_singletons`` each ``-1`` gets its own new label."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {labels.shape}")
    if noise_as_singletons and labels.dtype.kind in "iu":
        labels = labels.astype(np.int64, copy=True)
        noise = labels == -1
        if noise.any():
            top = labels.max(initial=-1) + 1
            labels[noise] = top + np.arange(int(noise.sum()))
    _, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def contingency(labels_true: np.ndarray, labels_pred: np.ndarray) -> sparse.csr_matrix:
    """Sparse (n_true_groups x n_pred_clusters) count table; noise in ``labels_pred`` becomes singletons."""
    t = encode_labels(labels_true)
    p = encode_labels(labels_pred, noise_as_singletons=True)
    if len(t) != len(p):
        raise ValueError(f"labels_true has {len(t)} items but labels_pred has {len(p)}")
    ones = np.ones(len(t), dtype=np.int64)
    shape = (int(t.max(initial=-1)) + 1, int(p.max(initial=-1)) + 1)
    table = sparse.coo_matrix((ones, (t, p)), shape=shape).tocsr()
    table.sum_duplicates()
    return table


def _pairs(x: np.ndarray) -> int:
    x = np.asarray(x, dtype=np.int64)
    return int(np.sum(x * (x - 1) // 2))


def pair_counts(table: sparse.spmatrix) -> tuple[int, int, int]:
    """(together in both, together in prediction, together in truth) unordered pair counts."""
    table = sparse.csr_matrix(table)
    return (_pairs(table.data), _pairs(np.asarray(table.sum(axis=0)).ravel()),
            _pairs(np.asarray(table.sum(axis=1)).ravel()))


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def pairwise_prf(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1 over unordered item pairs."""
    tp, pred, true = pair_counts(contingency(labels_true, labels_pred))
    p = tp / pred if pred else 1.0
    r = tp / true if true else 1.0
    return p, r, _f1(p, r)


def bcubed(labels_true: np.ndarray, labels_pred: np.ndarray) -> tuple[float, float, float]:
    """BCubed precision, recall and F1: sum_ij n_ij^2 / |cluster j| (resp. / |group i|), over n."""
    table = contingency(labels_true, labels_pred).tocoo()
    n = int(table.data.sum())
    if n == 0:
        return 1.0, 1.0, 1.0
    csr = table.tocsr()
    col = np.asarray(csr.sum(axis=0)).ravel()[table.col]
    row = np.asarray(csr.sum(axis=1)).ravel()[table.row]
    sq = table.data.astype(np.float64) ** 2
    p, r = float(np.sum(sq / col) / n), float(np.sum(sq / row) / n)
    return p, r, _f1(p, r)


@dataclass
class PartitionScores:
    """Scores of one predicted partition against ground truth (all JSON scalars)."""

    n_items: int
    n_true_groups: int
    n_clusters: int  # predicted clusters, noise not counted
    n_noise: int
    noise_fraction: float
    ari: float
    ami: float | None  # None when the table is too large for the expected mutual information
    homogeneity: float
    completeness: float
    v_measure: float
    fowlkes_mallows: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCORE_NAMES = ("ari", "ami", "homogeneity", "completeness", "v_measure", "fowlkes_mallows", "pairwise_precision",
               "pairwise_recall", "pairwise_f1", "bcubed_precision", "bcubed_recall", "bcubed_f1")


def score_partition(labels_true: np.ndarray, labels_pred: np.ndarray) -> PartitionScores:
    """All partition scores at once (noise scored as singletons, see the module docstring).

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    from sklearn import metrics as skm

    labels_pred = np.asarray(labels_pred)
    if len(labels_pred) == 0:
        raise ValueError("cannot score an empty partition")
    t = encode_labels(labels_true)
    p = encode_labels(labels_pred, noise_as_singletons=True)
    if len(t) != len(p):
        raise ValueError(f"labels_true has {len(t)} items but labels_pred has {len(p)}")
    n_noise = int(np.sum(labels_pred == -1)) if labels_pred.dtype.kind in "iu" else 0
    n_true, n_pred = int(t.max()) + 1, int(p.max()) + 1
    tp, pred, true = pair_counts(contingency(t, p))
    pp = tp / pred if pred else 1.0
    pr = tp / true if true else 1.0
    bp, br, bf = bcubed(t, p)
    h, c, v = skm.homogeneity_completeness_v_measure(t, p)
    ami = float(skm.adjusted_mutual_info_score(t, p)) if n_true * n_pred <= AMI_MAX_CELLS else None
    fmi = float(np.sqrt(pp * pr)) if tp else 0.0  # sklearn's definition: tp / sqrt(pred * true)
    return PartitionScores(
        n_items=len(t), n_true_groups=n_true, n_clusters=len(np.unique(labels_pred[labels_pred != -1]))
        if labels_pred.dtype.kind in "iu" else n_pred, n_noise=n_noise, noise_fraction=n_noise / len(t),
        ari=float(skm.adjusted_rand_score(t, p)), ami=ami, homogeneity=float(h), completeness=float(c),
        v_measure=float(v), fowlkes_mallows=fmi, pairwise_precision=pp, pairwise_recall=pr,
        pairwise_f1=_f1(pp, pr), bcubed_precision=bp, bcubed_recall=br, bcubed_f1=bf)
