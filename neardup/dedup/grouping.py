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

The star rule bounds a group's diameter, not its size around a *hub*: a vector
near the mean of many unrelated ones (hubness: Radovanovic et al., "Hubs in
space", JMLR 2010) is within the bound of all of them while they are not near
each other. So a group of at least ``HUB_MIN_SIZE`` members must also pass the
*pair-share* rule: at least ``min_pair_share`` of its member pairs (all of them,
or an even sample of ``SHARE_SAMPLE`` members) score at or above the threshold.
Copies of one image are near each other too (on BSDS500 with 58 attacked copies
per photo, every real group of 16 or more keeps >= 38 % of its pairs above the
calibrated threshold); a hub's members are not (2.5 % in the bench's hub group).
A group that fails loses its centre, which becomes a group of its own, and the
rest is grouped again among itself, by the same rules.

Neither rule sees a *bridge*: two photos of one shoot, each with its own copies,
joined by a single copy-to-copy edge. Every member is near the centre (the photos
are alike) and half of the pairs are above the threshold (each photo's own), so
the two groups merge; pair precision then falls by the product of their sizes. So
a group of at least ``HUB_MIN_SIZE`` members (whose similarity matrix is at hand:
up to ``DENSE_LIMIT``) must also pass the *bridge* rule: the weakest two-way cut
of its threshold graph, found by a sweep over the Fiedler vector of the
normalised Laplacian (Shi & Malik, "Normalized cuts and image segmentation",
PAMI 2000), must have a conductance (edges cut / edge ends on the smaller side)
of at least ``max_bridge``. Measured on BSDS500 (100 photos x 58 copies, each
photo's group 55-59 members): every real group's weakest cut has conductance
>= 0.19; the merged groups' 0.0003 (two photos) and 0.0017 (four). A group that
fails is cut there, and both sides are grouped again by the same rules.
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
#: groups of at least this many members must pass the pair-share rule (a star of fewer members whose leaves are
#: not near each other still has a share of 2 / size >= 0.125 from its own edges)
HUB_MIN_SIZE = 16
#: the default minimum share of member pairs at or above the threshold (0 turns the rule off)
MIN_PAIR_SHARE = 0.1
#: the default bridge rule: a group of HUB_MIN_SIZE+ members whose threshold graph has a cut of lower conductance
#: is cut in two (0 turns the rule off); real groups measured >= 0.19, merged ones <= 0.002
MAX_BRIDGE = 0.05
#: members whose pairs are scored when a group is larger (evenly spaced: deterministic; 32,640 pairs)
SHARE_SAMPLE = 256


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
                   sim: SimFn, centre_threshold: float | None = None, dense: DenseFn | None = None,
                   min_pair_share: float = MIN_PAIR_SHARE, max_bridge: float = MAX_BRIDGE) -> np.ndarray:
    """Group labels (0..G-1, singletons included) where each member is within ``threshold`` of its group's centre.

    Args:
        n: number of items.
        rows, cols, sims: edges with similarity ``sims`` (only those >= threshold are used).
        threshold: minimum similarity for two items to be duplicates.
        sim: similarity of one item to several others (features are not held here).
        centre_threshold: how close each member must be to its group's centre (default: ``threshold``).
        dense: the similarity matrix of a set of items; when given, components up to ``DENSE_LIMIT`` take the
            medoid as their centre (more members stay with it than with the strongest-linked one).
        min_pair_share: the pair-share rule for groups of ``HUB_MIN_SIZE`` or more (0: off).
        max_bridge: the bridge rule for groups of ``HUB_MIN_SIZE`` or more, up to ``DENSE_LIMIT`` (0: off).

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
    # each entry: sorted members, and their similarity matrix when a parent's was computed (a sub-matrix of it)
    stack: list[tuple[np.ndarray, np.ndarray | None]] = [(m, None) for m in np.split(order, bounds)]

    def push(parts: list[np.ndarray], parent: np.ndarray, sm: np.ndarray | None) -> None:
        for part in parts:
            at = np.searchsorted(parent, part) if sm is not None else None
            stack.append((part, None if at is None or sm is None else sm[np.ix_(at, at)]))

    while stack:
        members, sm = stack.pop()
        if len(members) == 1:
            labels[members[0]] = next_label
            next_label += 1
            continue
        if dense is not None and len(members) <= DENSE_LIMIT:
            sm = dense(members) if sm is None else sm
            within = sm >= bound
            c = int(np.argmax(within.sum(axis=1) + 1e-6 * sm.sum(axis=1) / len(members)))
            centre, close = members[c], within[c].copy()
        else:
            sm = None
            centre = members[np.argmax(strength[members])]
            close = sim(int(centre), members) >= bound
        close[members == centre] = True
        group, rest = members[close], members[~close]
        big = len(group) >= HUB_MIN_SIZE
        inner = sm[np.ix_(close, close)] if big and sm is not None else None  # the group's own matrix: both rules
        # a hub: its centre goes alone
        if big and min_pair_share > 0 and pair_share(group, threshold, sim, dense, inner) < min_pair_share:
            labels[centre] = next_label
            next_label += 1
            push(_split(members[members != centre], rows, cols), members, sm)
            continue
        if inner is not None and max_bridge > 0:
            conductance, side = bridge_cut(inner, threshold)
            if conductance < max_bridge:  # two groups joined by a few edges: each side is grouped again
                push(_split(group[side], rows, cols) + _split(group[~side], rows, cols) +
                     (_split(rest, rows, cols) if len(rest) else []), members, sm)
                continue
        labels[group] = next_label
        next_label += 1
        if len(rest):
            push(_split(rest, rows, cols), members, sm)
    return _renumber(labels)


def bridge_cut(matrix: np.ndarray, threshold: float) -> tuple[float, np.ndarray]:
    """The weakest two-way cut of the threshold graph of a group's similarity ``matrix``: (conductance, side).

    The cut is the best prefix of the members sorted by the Fiedler vector of the normalised Laplacian (the
    Cheeger sweep), scored by conductance: edges cut / edge ends on the smaller side. A graph already in pieces
    has a cut of conductance 0. Members with no edge at the threshold join the larger side; with fewer than
    two members that have an edge there is no cut (conductance 1, empty side). ``side`` holds the first member
    that has an edge.
    """
    a = matrix >= threshold
    a |= a.T  # a float matrix product is symmetric only to rounding: a pair at the threshold counts both ways
    np.fill_diagonal(a, False)
    deg = a.sum(axis=1).astype(np.float64)
    live = np.flatnonzero(deg > 0)
    side = np.zeros(len(a), dtype=bool)
    if len(live) < 2:
        return 1.0, side
    al, d = a[np.ix_(live, live)], deg[live]
    n_parts, part = connected_components(sparse.csr_matrix(al), directed=False)
    if n_parts > 1:
        conductance, cut = 0.0, part == part[0]
    else:
        norm = al / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
        # the second-largest eigenvector of D^-1/2 A D^-1/2 is the Fiedler vector of the normalised Laplacian
        # (all eigenpairs: LAPACK's subset driver returned none for a complete graph of 21 members)
        fiedler = np.linalg.eigh(norm)[1][:, -2]
        fiedler = fiedler * (1.0 if fiedler[np.argmax(np.abs(fiedler))] > 0 else -1.0)  # one sign: ties cut alike
        order = np.argsort(fiedler / np.sqrt(d), kind="stable")
        back = np.tril(al[np.ix_(order, order)], -1).sum(axis=1)  # edges from each member to those before it
        cut_size = np.cumsum(d[order] - 2 * back)[:-1]
        vol = np.cumsum(d[order])[:-1]
        score = cut_size / np.minimum(vol, d.sum() - vol)
        k = int(np.argmin(score))
        conductance, cut = float(score[k]), np.zeros(len(d), dtype=bool)
        cut[order[:k + 1]] = True
    cut = cut if cut[0] else ~cut  # oriented by its first member: the eigenvector's sign must not matter
    side[live[cut]] = True
    if 2 * cut.sum() >= len(cut):  # the isolated members join the larger side (on a tie, the first member's)
        side |= deg == 0
    return conductance, side


def pair_share(group: np.ndarray, threshold: float, sim: SimFn, dense: DenseFn | None = None,
               matrix: np.ndarray | None = None) -> float:
    """Share of the member pairs of ``group`` at or above ``threshold``: all pairs of ``matrix`` (the group's
    similarity matrix) when given, else those of an even sample of :data:`SHARE_SAMPLE` members."""
    if matrix is None:
        pick = group[np.unique(np.linspace(0, len(group) - 1, min(len(group), SHARE_SAMPLE)).round().astype(int))]
        matrix = dense(pick) if dense is not None else np.stack([sim(int(i), pick) for i in pick])
    m = len(matrix)
    if m < 2:
        return 1.0
    above = np.count_nonzero(matrix >= threshold) - np.count_nonzero(np.diagonal(matrix) >= threshold)
    return float(above / (m * (m - 1)))  # the matrix is symmetric: each pair counted twice, over twice the pairs


def dot_sim(V: np.ndarray, offset: np.ndarray | None = None) -> SimFn:
    """The :data:`SimFn` of unit rows ``V``: dot products, less ``offset[i] + offset[j]`` when given (a score
    normalisation: :func:`neardup.dedup.normalization.offsets`)."""
    if offset is None:
        return lambda i, js: V[js] @ V[i]
    return lambda i, js: V[js] @ V[i] - offset[js] - offset[i]


def gram(V: np.ndarray, offset: np.ndarray | None = None) -> DenseFn:
    """The :data:`DenseFn` of unit rows ``V`` (with the same ``offset`` as :func:`dot_sim`)."""
    if offset is None:
        return lambda js: V[js] @ V[js].T
    return lambda js: V[js] @ V[js].T - offset[js][:, None] - offset[js][None, :]


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
