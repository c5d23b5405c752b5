"""Exact k nearest neighbours, streaming the database in blocks (as faiss.contrib.exhaustive_search)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from neardup.fastsearch.vectors import get_metric, prepare_vectors


def merge_topk(scores: np.ndarray, ids: np.ndarray, new_scores: np.ndarray, new_ids: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k best (highest score; lower id on ties) of two (Q, *) result lists."""
    s = np.concatenate([scores, new_scores], axis=1)
    i = np.concatenate([ids, new_ids], axis=1)
    s = np.where(i < 0, -np.inf, s)
    order = _order(s, i)[:, :k]
    return np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)


def _order(s: np.ndarray, i: np.ndarray) -> np.ndarray:
    # stable sort by id first, then by descending score: ties keep the lower id
    by_id = np.argsort(i, axis=1, kind="stable")
    s2 = np.take_along_axis(s, by_id, 1)
    return np.take_along_axis(by_id, np.argsort(-s2, axis=1, kind="stable"), 1)


def exact_knn(chunks: Iterable[tuple[int, np.ndarray]], queries: np.ndarray, k: int,
              metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over database blocks ``(offset, block)``; only one block is in memory at a time.

    The one exact k-NN of the package: ``search exact``, the bench's ground truth and the tests use it.

    Args:
        chunks: ``(offset, block)`` pairs of raw database vectors (prepared here, block by block).
        queries: already prepared for ``metric`` (see ``prepare_vectors``).
        k: neighbours per query; rows are padded with id -1 and score -inf past the database size.

    Returns:
        (scores, ids), each (Q, k): similarities (negated distances for distance metrics), best first.
    """
    import faiss

    m = get_metric(metric)
    nq = len(queries)
    scores = np.full((nq, 0), -np.inf, dtype=np.float32)
    ids = np.full((nq, 0), -1, dtype=np.int64)
    for off, block in chunks:
        x = prepare_vectors(block, metric)
        index: Any
        if m.binary:
            index = faiss.IndexBinaryFlat(x.shape[1] * 8)
        else:
            index = faiss.IndexFlat(x.shape[1], getattr(faiss, m.faiss_metric))
        index.add(x)
        d, i = index.search(queries, min(k, len(x)))
        s = -d.astype(np.float32) if m.distance else d
        scores, ids = merge_topk(scores, ids, s, np.where(i >= 0, i + off, -1), k)
    if scores.shape[1] < k:  # database smaller than k
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores, ids
