"""One retrieval-set interface: database, queries and ground truth, from feature stores or synthetic.

Ground truth comes from the query folder's ``manifest.csv`` (or the
``<source>_<attack>`` names): each query's true match is the database image
whose id equals the query's ``source``. Distractor images have ids that no
query names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neardup.data.manifest import MANIFEST_NAME, load_ground_truth, query_key, read_manifest
from neardup.errors import UsageError
from neardup.extract.space import require_same_space
from neardup.extract.store import FeatureStore
from neardup.fastsearch.vectors import canonical_metric


@dataclass
class RetrievalSet:
    database: np.ndarray  # (N, D) float32, or (N, bytes) uint8 for hashes
    db_ids: list[str]
    queries: np.ndarray
    query_ids: list[str]
    gt: np.ndarray  # (Q,) database index of each query's true match
    families: np.ndarray  # (Q,) attack family per query
    attacks: np.ndarray  # (Q,) attack instance per query
    metric: str  # "cosine" | "l2" | "hamming"
    model: str = ""
    n_distractors: int = 0
    n_unmatched: int = 0  # queries whose source is not in the database (left out)

    @property
    def binary(self) -> bool:
        return self.database.dtype == np.uint8


def load_retrieval_set(database: str | os.PathLike, queries: str | os.PathLike,
                       distractors: Sequence[str | os.PathLike] = (), manifest: str | os.PathLike | None = None,
                       metric: str | None = None) -> RetrievalSet:
    """Assemble database (originals + distractors), queries and ground truth from feature folders.

    Args:
        manifest: the query set's ``manifest.csv``; by default the one in the
            folder the queries were extracted from, else names are parsed.
        metric: ``cosine`` or ``l2`` for float features; hashes are always ``hamming``.

    Raises:
        UsageError: folders from different feature spaces (model, preprocessing, stored transform, weights),
            no query with a match in the database.
    """
    db_store, q_store = FeatureStore.open(database), FeatureStore.open(queries)
    d_stores = [FeatureStore.open(d) for d in distractors]
    require_same_space([s.space for s in (db_store, q_store, *d_stores)],
                       [f"database {database}", f"queries {queries}", *(f"distractors {d}" for d in distractors)])
    if db_store.metric == "hamming":
        if metric not in (None, "hamming"):
            raise UsageError(f"{db_store.model} features are binary hashes: the metric is hamming, not {metric}")
        metric = "hamming"
    elif metric == "hamming":
        raise UsageError(f"{db_store.model} features are not binary hashes: use metric cosine or l2, not hamming")
    else:
        metric = canonical_metric(metric or "cosine", ("cosine", "l2"))

    db_ids = db_store.ids()
    d_ids = [f"distractor{j}:{i}" for j, s in enumerate(d_stores) for i in s.ids()]
    parts = [np.asarray(db_store.features())] + [np.asarray(s.features()) for s in d_stores]
    db = np.concatenate(parts) if len(parts) > 1 else parts[0]

    q_root = Path(q_store.meta["root"])
    if manifest is not None:
        rows = read_manifest(manifest)
    elif (q_root / MANIFEST_NAME).is_file():
        rows = read_manifest(q_root / MANIFEST_NAME)
    else:
        rows = load_ground_truth(q_root)
    # matched by relative path with extension: the manifest is authoritative, an unlisted file is not a query
    by_query = {query_key(r.query, q_root): r for r in rows}
    index_of: dict[str, int] = {}
    for i, name in enumerate(db_ids):
        index_of.setdefault(name, i)

    q_feats = np.asarray(q_store.features())
    keep, gt, fams, atts, unmatched = [], [], [], [], 0
    for qi, path in enumerate(q_store.paths):
        row = by_query.get(query_key(path, q_root))
        if row is None or row.source not in index_of:
            unmatched += 1
            continue
        keep.append(qi)
        gt.append(index_of[row.source])
        fams.append(row.family)
        atts.append(row.attack)
    if not keep:
        raise UsageError(f"no query in {queries} has its source image in {database}: check the folders "
                         f"and the manifest (query ids look like {q_store.ids()[:1]}, database ids like {db_ids[:1]})")
    q_ids = q_store.ids()
    return RetrievalSet(db, db_ids + d_ids, q_feats[keep], [q_ids[i] for i in keep], np.asarray(gt, dtype=np.int64),
                        np.asarray(fams), np.asarray(atts), metric, db_store.model, len(d_ids), unmatched)
