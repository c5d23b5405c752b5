"""Class-retrieval metrics of ranked neighbours: small pure numpy functions, one value per query.

Every function reads ``rel``, a (queries, ranks) boolean matrix over each query's *whole* ranked
database (the query itself already taken out): ``rel[i, j]`` is True when the (j+1)-th nearest item
of query i has the query's class. R, a query's number of positives, is then ``rel[i].sum()``.

The definitions are pytorch-metric-learning's ``AccuracyCalculator`` (Musgrave, Belongie & Lim,
A Metric Learning Reality Check, ECCV 2020), which the tests check against:

- precision@k: positives among the first k, divided by k (a class smaller than k caps it below 1);
- R-precision: positives among the first R, divided by R;
- MAP@R: ``(1/R) * sum_{i<=R} P(i) rel(i)``, average precision truncated at rank R;
- mAP: ``(1/R) * sum_i P(i) rel(i)`` over the whole ranking (average precision).

A query without any positive (R = 0) gets NaN: it cannot be scored, and callers leave it out of the
averages, as ``AccuracyCalculator`` does with its "lone" queries.
"""

from __future__ import annotations

import numpy as np


def positives(rel: np.ndarray) -> np.ndarray:
    """R of each query: how many database items share its class."""
    return np.asarray(rel, dtype=bool).sum(axis=1)


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """(queries,) precision@k; NaN for queries without positives. ``k`` must not exceed the ranking length."""
    rel = np.asarray(rel, dtype=bool)
    if not 1 <= k <= rel.shape[1]:
        raise ValueError(f"precision@{k} needs k between 1 and the {rel.shape[1]} ranked items")
    out = rel[:, :k].sum(axis=1) / float(k)
    return np.where(positives(rel) > 0, out, np.nan)


def r_precision(rel: np.ndarray) -> np.ndarray:
    """(queries,) R-precision: the share of positives among the first R items; NaN where R = 0."""
    rel = np.asarray(rel, dtype=bool)
    r = positives(rel)
    hits = np.cumsum(rel, axis=1)[np.arange(len(rel)), np.maximum(r - 1, 0)] if rel.shape[1] else np.zeros(len(rel))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, hits / np.maximum(r, 1), np.nan)


def average_precision(rel: np.ndarray, at_r: bool = False) -> np.ndarray:
    """(queries,) average precision over the whole ranking (mAP's terms), or truncated at rank R (MAP@R's).

    Both divide by R, the number of positives, so a positive never retrieved (MAP@R: not within the first R)
    counts as a zero term.
    """
    rel = np.asarray(rel, dtype=bool)
    r = positives(rel)
    ranks = np.arange(1, rel.shape[1] + 1)
    terms = np.cumsum(rel, axis=1) / ranks * rel
    if at_r:
        terms = terms * (ranks[None, :] <= r[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(r > 0, terms.sum(axis=1) / np.maximum(r, 1), np.nan)


def majority_vote(labels: np.ndarray) -> np.ndarray:
    """(queries,) the most frequent class among each row of ``labels`` (queries, k), nearest first.

    A tie goes to the tied class met first, i.e. the one with the nearest neighbour.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError(f"a vote needs (queries, k >= 1) labels, got shape {labels.shape}")
    k = labels.shape[1]
    out = np.empty(len(labels), dtype=labels.dtype)
    step = max(1, (1 << 22) // (k * k))  # rows per chunk: the pairwise comparison is rows x k x k
    for s in range(0, len(labels), step):
        block = labels[s:s + step]
        counts = (block[:, :, None] == block[:, None, :]).sum(axis=2)  # occurrences of each entry's class
        out[s:s + step] = block[np.arange(len(block)), np.argmax(counts, axis=1)]  # argmax: nearest of a tie
    return out
