"""Retrieval metrics as small pure numpy functions.

Conventions: ``ranked`` is (Q, k) database indices best first (-1 = no result),
``scores`` the matching similarities (higher = more similar), ``gt`` is (Q,)
the database index of each query's single true match.
"""

from __future__ import annotations

import numpy as np


def first_hit_rank(ranked: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """1-based rank of the true match in each row, 0 when it is not in the top k."""
    hits = ranked == gt[:, None]
    found = hits.any(axis=1)
    return np.where(found, hits.argmax(axis=1) + 1, 0)


def recall_at_k(ranked: np.ndarray, gt: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose true match is within the top k, for each k <= ranked.shape[1]."""
    rank = first_hit_rank(ranked, gt)
    n = max(len(gt), 1)
    return {k: float(np.sum((rank >= 1) & (rank <= k)) / n) for k in ks if k <= ranked.shape[1]}


def mean_average_precision(ranked: np.ndarray, gt: np.ndarray) -> float:
    """mAP@k with one relevant item per query: the mean of 1/rank (0 when missed)."""
    rank = first_hit_rank(ranked, gt)
    return float(np.mean(np.where(rank > 0, 1.0 / np.maximum(rank, 1), 0.0))) if len(gt) else 0.0


def micro_average_precision(ranked: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> float:
    """µAP as in the DISC21 image-similarity challenge.

    All (query, candidate, score) pairs from every query's result list are pooled
    and ranked by score; AP is taken over that single list, with one positive
    per query (so queries whose match is never retrieved lower recall).

    Reference: Douze et al., The 2021 Image Similarity Dataset and Challenge, 2021.
    """
    n_pos = len(gt)
    if n_pos == 0:
        return 0.0
    valid = ranked >= 0
    s = scores[valid]
    y = (ranked == gt[:, None])[valid]
    order = np.argsort(-s, kind="stable")
    y = y[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float(np.sum(precision[y]) / n_pos)


def ann_recall(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """faiss-style k-recall@k: the mean fraction of the exact top-k found in the approximate top-k.

    With k = 1 this is faiss' 1-recall@1.
    """
    a, e = approx[:, :k], exact[:, :k]
    inter = [len(np.intersect1d(ai[ai >= 0], ei[ei >= 0])) for ai, ei in zip(a, e, strict=True)]
    return float(np.mean(inter) / k) if len(inter) else 0.0
