"""Groups from a thresholded similarity graph, guarded against chaining.

Why a guard: connected components of a threshold graph merge unrelated images
through chains A~B~C~... of near neighbours, and the chains get longer as a
collection grows. Single-linkage clustering has this defect by construction.

The guard chosen here is the *star* rule: every member of a group must itself be
within a bound of the group's centre: the member with the most others within the
bound (a medoid; for components above ``DENSE_LIMIT`` members, the one with the
largest summed edge similarity, which needs no dense matrix). Members that fail are
peeled off and grouped again among themselves, recursively. So every reported pair
(member, keeper-side centre) really scored above the threshold, and a group's
diameter is bounded by two threshold steps, whatever the collection size. It
costs one similarity per member and component, never a dense matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

#: sim(i, js) -> similarities of item i to items js (1-d), in the same scale as the threshold.
SimFn = Callable[[int, np.ndarray], np.ndarray]
#: dense(js) -> the (m, m) similarities among items js
DenseFn = Callable[[np.ndarray], np.ndarray]
#: components up to this size choose their centre from their dense similarity matrix (16 MB at float32)
DENSE_LIMIT = 2048


def edges(sims: np.ndarray, nbrs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k-NN edges (row, col, similarity) at or above ``threshold``, self loops dropped."""
    r = np.repeat(np.arange(len(sims)), nbrs.shape[1] if nbrs.ndim == 2 else 0)
    c, s = nbrs.ravel(), sims.ravel()
    keep = (c >= 0) & (c != r) & (s >= threshold)
    return r[keep], c[keep], s[keep]


def components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected-component label of every item (0..n-1) for the undirected edges (rows[e], cols[e])."""
    g = sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n)).tocsr()
    return connected_components(g, directed=True, connection="weak")[1]


def guarded_groups(n: int, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, threshold: float,
                   sim: SimFn, centre_threshold: float | None = None, dense: DenseFn | None = None) -> np.ndarray:
    """Group labels (0..G-1, singletons included) where each member is within ``threshold`` of its group's centre.

    Args:
        n: number of items.
        rows, cols, sims: edges with similarity ``sims`` (only those >= threshold are used).
        threshold: minimum similarity for two items to be duplicates.
        sim: similarity of one item to several others (features are not held here).
        centre_threshold: how close each member must be to its group's centre (default: ``threshold``).
        dense: the similarity matrix of a set of items; when given, components up to ``DENSE_LIMIT`` take the
            medoid as their centre (more members stay with it than with the strongest-linked one).

    Returns:
        (n,) int64 labels, numbered by each group's smallest member.
    """
    bound = threshold if centre_threshold is None else centre_threshold
    keep = sims >= threshold
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    labels = np.full(n, -1, dtype=np.int64)
    comp = components(n, rows, cols)
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    strength = np.bincount(rows, weights=sims, minlength=n) + np.bincount(cols, weights=sims, minlength=n)
    next_label = 0
    stack = [members for members in np.split(order, bounds)]
    while stack:
        members = stack.pop()
        if len(members) == 1:
            labels[members[0]] = next_label
            next_label += 1
            continue
        if dense is not None and len(members) <= DENSE_LIMIT:
            sm = dense(members)
            within = sm >= bound
            c = int(np.argmax(within.sum(axis=1) + 1e-6 * sm.sum(axis=1) / len(members)))
            centre, close = members[c], within[c].copy()
        else:
            centre = members[np.argmax(strength[members])]
            close = sim(int(centre), members) >= bound
        close[members == centre] = True
        group, rest = members[close], members[~close]
        labels[group] = next_label
        next_label += 1
        if len(rest):
            stack.extend(_split(rest, rows, cols))
    return _renumber(labels)


def _split(items: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """Connected components of the edges among ``items`` only."""
    inside = np.zeros(int(max(rows.max(initial=0), cols.max(initial=0), items.max())) + 1, dtype=bool)
    inside[items] = True
    e = inside[rows] & inside[cols]
    local = np.full(len(inside), -1, dtype=np.int64)
    local[items] = np.arange(len(items))
    comp = components(len(items), local[rows[e]], local[cols[e]])
    return [items[comp == c] for c in np.unique(comp)]


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels numbered in order of each group's smallest member (stable across runs)."""
    first: dict[int, int] = {}
    for lab in labels.tolist():
        first.setdefault(lab, len(first))
    return np.array([first[lab] for lab in labels.tolist()], dtype=np.int64)


def largest_group_share(labels: np.ndarray) -> float:
    """Size of the largest group as a share of all items (the chaining symptom)."""
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0
