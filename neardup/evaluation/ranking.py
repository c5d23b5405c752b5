"""Full rankings of a database for blocks of queries, with the faiss exact index of the vector layer.

Why the whole ranking: mAP needs the rank of every positive, and a class can be as large as the database.
Each block of queries gets all database rows, best first (``BLOCK_ENTRIES`` ranks per block bound the
memory); the cost is that of exact search with k = N, O(queries x N x (d + log N)).

Determinism: faiss does not order equal scores, so rows with ties are re-sorted by score and then by
database row (a hash's Hamming distances tie often). The query's own row (``self_index``) is moved to
the end of its ranking, where callers ignore it: only that row is left out, so an exact duplicate of the
query stays in its database as a neighbour at distance 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from neardup.fastsearch.indexes import build_index, search
from neardup.fastsearch.vectors import get_metric, prepare_vectors
from neardup.progress import progress

#: Ranks held at a time (queries per block x database size): 4M int64 ids, ~32 MB, plus scores.
BLOCK_ENTRIES = 1 << 22


@dataclass
class RankedBlock:
    """Rankings of queries ``start:stop``: ``ids[i]`` lists every database row, best first.

    ``n_valid[i]`` ranks are real neighbours; a query whose own row is in the database has it moved to
    the last place (``n_valid = N - 1``).
    """

    start: int
    stop: int
    ids: np.ndarray  # (stop - start, N) int64
    n_valid: np.ndarray  # (stop - start,) int64


def _untie(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``ids`` with each row's equal scores ordered by database row (rows without ties are left as they are)."""
    tied: Any = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1)) if scores.shape[1] > 1 else []
    for r in tied:
        order = np.lexsort((ids[r], -scores[r]))
        ids[r] = ids[r][order]
    return ids


def rank_database(database: np.ndarray, queries: np.ndarray, metric: str, self_index: np.ndarray | None = None,
                  block_entries: int = BLOCK_ENTRIES, show_progress: bool = False) -> Iterator[RankedBlock]:
    """Yield the full ranking of ``database`` for each block of ``queries`` (exact faiss ``Flat``/``BFlat``).

    Args:
        database, queries: raw features (prepared here for ``metric``: L2-normalised for cosine).
        metric: a vector-layer metric name (cosine, l2, hamming...).
        self_index: (queries,) the database row that is the query itself, or -1; that row is moved last.

    Raises:
        UsageError: features the metric cannot use (from the vector layer).
    """
    m = get_metric(metric)
    db = prepare_vectors(np.asarray(database), m.name)
    n = len(db)
    d = db.shape[1] * 8 if m.binary else db.shape[1]
    index = build_index("BFlat" if m.binary else "Flat", d, m.name)
    index.add(db)
    nq = len(queries)
    own = np.full(nq, -1, dtype=np.int64) if self_index is None else np.asarray(self_index, dtype=np.int64)
    if own.shape != (nq,):
        raise ValueError(f"self_index has shape {own.shape}, expected ({nq},)")
    step = max(1, block_entries // max(n, 1))
    with progress(nq, "rank", "query", disable=not show_progress) as bar:
        for start in range(0, nq, step):
            stop = min(start + step, nq)
            q = prepare_vectors(np.asarray(queries[start:stop]), m.name)
            scores, ids = search(index, q, n, m.name)
            ids = _untie(scores, ids.astype(np.int64, copy=False))
            mine = own[start:stop]
            is_self = ids == mine[:, None]  # all False where mine = -1
            if is_self.any():
                ids = np.take_along_axis(ids, np.argsort(is_self, axis=1, kind="stable"), axis=1)
            yield RankedBlock(start, stop, ids, n - (mine >= 0).astype(np.int64))
            bar.update(stop - start)
