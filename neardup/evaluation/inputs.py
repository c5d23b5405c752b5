"""Feature folders plus class labels -> :class:`~neardup.evaluation.retrieval.RetrievalData`, for each protocol.

- leave-one-out: one folder, every image queries all the others;
- a query folder against a database folder (same feature space; the labels cover both): an image in both
  folders (same path) is left out of its own ranking, as under leave-one-out;
- a class split (``split_seed``): only the images of the evaluation half of the classes are kept, in both
  folders, so no class trained on can reach the figures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neardup.data.labels import Labels
from neardup.errors import UsageError
from neardup.evaluation.retrieval import ClassSplit, RetrievalData, split_classes
from neardup.extract.space import require_same_space
from neardup.extract.store import FeatureStore


@dataclass
class RetrievalInputs:
    data: RetrievalData
    split: ClassSplit | None
    inputs: dict[str, object]  # what was read, for the result's ``inputs`` record


def _norm(p: str) -> str:
    return os.path.normpath(os.path.abspath(p))


def absolute_paths(store: FeatureStore) -> list[str]:
    """The store's image paths, absolute, whatever the working folder is now.

    Why: ``extract`` records paths as they were given (``digits/0/0000.png``, relative to the folder it ran
    in) and its input folder made absolute (``meta.json`` root). A relative path whose folder part ends the
    root is resolved against the root (as :func:`neardup.data.manifest.query_key` matches queries); any other
    one against the current folder.
    """
    from neardup.data.manifest import query_key

    root = store.meta.get("root") or None
    out = []
    for p in store.paths:
        if root and not os.path.isabs(p):
            rel = query_key(p, root)
            if rel != Path(os.path.normpath(p)).as_posix():  # the root's tail matched: relative to the root
                out.append(_norm(os.path.join(root, rel)))
                continue
        out.append(_norm(p))
    return out


def _labelled(store: FeatureStore, labels: Labels, what: str) -> tuple[np.ndarray, list[str], list[str]]:
    paths = absolute_paths(store)
    classes = labels.for_paths(paths, what=f"{what} feature".strip())  # UsageError: some rows have no label
    return np.asarray(store.features()), paths, classes


def load_retrieval_inputs(features: str, labels: Labels, queries: str | None = None,
                          split_seed: int | None = None) -> RetrievalInputs:
    """Open the feature folder(s), label every row and apply the class split.

    Raises:
        UsageError: an unreadable folder, feature spaces that differ, rows without a label, or a split that
            leaves no image.
    """
    db_store = FeatureStore.open(features)
    q_store = FeatureStore.open(queries) if queries else None
    if q_store is not None:
        require_same_space([db_store.space, q_store.space], [f"feature folder {features}", f"query folder {queries}"])
    db_x, db_paths, db_cls = _labelled(db_store, labels, "database" if q_store else "")
    if len(db_paths) == 0:
        raise UsageError(f"feature folder {features} holds no features")
    if q_store is not None:
        q_x, q_paths, q_cls = _labelled(q_store, labels, "query")
        if len(q_paths) == 0:
            raise UsageError(f"query folder {queries} holds no features")
    split = split_classes(labels.names, split_seed) if split_seed is not None else None
    if split is not None:
        keep = set(split.eval)
        db_rows = np.array([c in keep for c in db_cls], dtype=bool)
        db_x, db_paths, db_cls = db_x[db_rows], [p for p, k in zip(db_paths, db_rows, strict=True) if k], \
            [c for c, k in zip(db_cls, db_rows, strict=True) if k]
        if q_store is not None:
            q_rows = np.array([c in keep for c in q_cls], dtype=bool)
            q_x, q_paths, q_cls = q_x[q_rows], [p for p, k in zip(q_paths, q_rows, strict=True) if k], \
                [c for c, k in zip(q_cls, q_rows, strict=True) if k]
        if not db_paths or (q_store is not None and not q_paths):
            raise UsageError(f"the evaluation half of the classes (seed {split_seed}: {len(split.eval)} of "
                             f"{len(labels.names)}) has no image in the {'database' if not db_paths else 'query'} "
                             "features")
    names = sorted(set(db_cls) | (set(q_cls) if q_store is not None else set()))
    code = {c: i for i, c in enumerate(names)}
    db_codes = np.array([code[c] for c in db_cls], dtype=np.int64)
    if q_store is None:
        q_x, q_paths, q_codes = db_x, db_paths, db_codes
        self_index = np.arange(len(db_paths), dtype=np.int64)
    else:
        q_codes = np.array([code[c] for c in q_cls], dtype=np.int64)
        row = {_norm(p): i for i, p in enumerate(db_paths)}
        self_index = np.array([row.get(_norm(p), -1) for p in q_paths], dtype=np.int64)
    data = RetrievalData(db_x, db_codes, db_paths, q_x, q_codes, q_paths, names, self_index,
                         metric=db_store.metric, model=db_store.model)
    record: dict[str, object] = {"features": str(features), "queries": str(queries) if queries else None,
                                 "labels": labels.source, "n_labelled": len(labels),
                                 "n_labelled_classes": len(labels.names)}
    return RetrievalInputs(data, split, record)
