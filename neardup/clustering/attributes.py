"""Per-cluster attributes: size, diameter, dispersion, separation, centroid, representatives.

All distances are in the clustering metric (see ``_common``). Definitions:

* centroid: mean of the members (re-normalised for cosine; the majority bit for hashes);
* diameter: largest member-to-member distance (exact up to ``max_exact`` members,
  else over a seeded sample, flagged ``diameter_exact: false``);
* dispersion: mean member-to-centroid distance;
* separation: distance from the centroid to the nearest image *outside* the cluster
  (the gap a threshold must fall into);
* closest / farthest: the members nearest to and farthest from the centroid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from neardup.clustering._common import check_features, cluster_metric, pair_distances


@dataclass
class ClusterAttributes:
    cluster: int
    size: int
    diameter: float
    diameter_exact: bool
    dispersion: float
    separation: float
    closest: list[int]  # member indices, nearest the centroid first
    farthest: list[int]  # farthest first

    def to_dict(self, paths: list[str] | None = None) -> dict:
        d = asdict(self)
        d["separation"] = self.separation if np.isfinite(self.separation) else None  # one cluster: no outside
        if paths is not None:
            d["closest"] = [paths[i] for i in self.closest]
            d["farthest"] = [paths[i] for i in self.farthest]
        return d


def _centroid(Xm: np.ndarray, metric: str) -> np.ndarray:
    if metric == "hamming":
        bits = np.unpackbits(Xm, axis=1).mean(axis=0) >= 0.5
        return np.packbits(bits)[None, :]
    c = Xm.mean(axis=0, keepdims=True)
    if metric == "cosine":
        c /= max(float(np.linalg.norm(c)), 1e-12)
    return c.astype(np.float32)


def _diameter(Xm: np.ndarray, metric: str, max_exact: int, rng: np.random.Generator) -> tuple[float, bool]:
    exact = len(Xm) <= max_exact
    if not exact:
        Xm = Xm[np.sort(rng.choice(len(Xm), max_exact, replace=False))]
    best = 0.0
    for s in range(0, len(Xm), 256):
        best = max(best, float(pair_distances(Xm[s:s + 256], Xm, metric).max()))
    return best, exact


def cluster_attributes(X: np.ndarray, labels: np.ndarray, metric: str, max_clusters: int | None = 100,
                       n_representatives: int = 5, max_exact: int = 2000, seed: int = 0,
                       block: int = 64) -> tuple[list[ClusterAttributes], np.ndarray]:
    """Attributes of the ``max_clusters`` largest clusters of >= 2 members (ties by id), largest first.

    Returns:
        (attributes, centroids): centroids is (m, d) in the prepared feature
        space, one row per returned cluster.
    """
    labels = np.asarray(labels)
    metric = cluster_metric(metric)
    Xp = check_features(X, metric)
    ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    order = np.lexsort((ids, -sizes))
    chosen = [int(ids[i]) for i in order if sizes[i] >= 2][:max_clusters]
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in chosen} if len(chosen) < 64 else None
    if members is None:
        sort = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[sort], chosen, side="left")
        ends = np.searchsorted(labels[sort], chosen, side="right")
        members = {c: np.sort(sort[s:e]) for c, s, e in zip(chosen, starts, ends, strict=True)}
    cents = [_centroid(Xp[members[c]], metric) for c in chosen]
    out: list[ClusterAttributes] = []
    for b in range(0, len(chosen), block):
        batch = chosen[b:b + block]
        C = np.concatenate(cents[b:b + block]) if batch else Xp[:0]
        D = pair_distances(C, Xp, metric) if batch else None  # (m, n): centroid to every image
        for j, c in enumerate(batch):
            idx = members[c]
            d_in = D[j, idx]  # type: ignore[index]
            outside = D[j].copy()  # type: ignore[index]
            outside[idx] = np.inf
            rank = np.argsort(d_in, kind="stable")
            diam, exact = _diameter(Xp[idx], metric, max_exact, rng)
            out.append(ClusterAttributes(c, len(idx), diam, exact, float(d_in.mean()),
                                         float(outside.min()) if len(idx) < len(Xp) else float("inf"),
                                         idx[rank[:n_representatives]].tolist(),
                                         idx[rank[::-1][:n_representatives]].tolist()))
    centroids = np.concatenate(cents) if cents else np.zeros((0, Xp.shape[1]), dtype=Xp.dtype)
    return out, centroids
