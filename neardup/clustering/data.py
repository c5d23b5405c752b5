"""Clustering inputs: features from one or more feature folders, and ground-truth groups.

Ground truth comes from ``neardup attack`` manifests (an original and all its
attacked copies form one group; every other image, e.g. a distractor, is a
group of its own) or from a labels CSV (``path`` or ``id`` column, and
``label``). Each item also carries *tags* (``original``, ``query``,
``distractor``, ``unlabelled``, its attack and family, its group name) that
``--exclude`` matches to build the ``clean`` partition.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neardup.data.manifest import MANIFEST_NAME, image_id, read_manifest
from neardup.errors import UsageError
from neardup.extract.space import require_same_space
from neardup.extract.store import FeatureStore
from neardup.io_utils import read_text

#: Largest labels CSV read (a path and a label per image: ~100 bytes each, 10M images).
MAX_LABELS_BYTES = 1 << 30


@dataclass
class ClusterInput:
    features: np.ndarray  # (n, d) float32, or (n, bytes) uint8 packed hashes
    paths: list[str]
    ids: list[str]
    metric: str  # the extractor's metric: cosine or hamming
    model: str
    roots: list[str]  # extraction root of each folder (where manifests are looked for)


def load_features(folders: list[str | os.PathLike] | tuple) -> ClusterInput:
    """Concatenate feature folders of one feature space (model, dimension, preprocessing, stored transform,
    weights: see :mod:`neardup.extract.space`).

    Raises:
        UsageError: no folder, a folder given twice, folders of different feature spaces, no features, or a
            count mismatch between a folder's features and its paths.
    """
    if not folders:
        raise UsageError("give at least one feature folder")
    seen: dict[str, str] = {}
    for f in folders:
        key = os.path.realpath(f)
        if key in seen:
            raise UsageError(f"feature folder {f} is given twice (as {seen[key]}): its images would be counted twice")
        seen[key] = str(f)
    stores = [FeatureStore.open(f) for f in folders]
    ref = stores[0]
    require_same_space([s.space for s in stores], [f"feature folder {f}" for f in folders])
    feats, paths, ids = [], [], []
    for s in stores:
        f = s.features()
        if len(f) != len(s.paths):
            raise UsageError(f"{s.root}: {len(f)} feature rows but {len(s.paths)} paths (a damaged folder)")
        feats.append(f)
        paths.extend(s.paths)
        ids.extend(s.ids())
    X = feats[0] if len(feats) == 1 else np.concatenate(feats)
    if len(X) == 0:
        raise UsageError(f"no features in {', '.join(map(str, folders))}")
    return ClusterInput(X, paths, ids, ref.metric, ref.model, [str(s.meta.get("root", s.root)) for s in stores])


@dataclass
class GroundTruth:
    groups: np.ndarray  # (n,) int group id per item
    names: list[str]  # group name per item
    tags: list[frozenset[str]]

    def mask_excluding(self, exclude: list[str] | tuple) -> np.ndarray:
        """Items whose tags match none of ``exclude``."""
        ex = set(exclude)
        return np.array([not (t & ex) for t in self.tags], dtype=bool)


def _finish(names: list[str], tags: list[set[str]]) -> GroundTruth:
    _, codes = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    return GroundTruth(codes.reshape(-1).astype(np.int64), names,
                       [frozenset(t | {n}) for t, n in zip(tags, names, strict=True)])


def default_manifests(inp: ClusterInput) -> list[Path]:
    """The manifest.csv of every extraction root that has one (the attacked-query folders)."""
    out = []
    for root in dict.fromkeys(inp.roots):
        p = Path(root) / MANIFEST_NAME
        if p.is_file():
            out.append(p)
    return out


def truth_from_manifests(ids: list[str], manifests: list[str | os.PathLike] | tuple) -> GroundTruth:
    """Groups from attack manifests: query -> its source's group; a source id -> itself; others singletons.

    Raises:
        UsageError: no item is named in any manifest (wrong manifest or folders).
    """
    source_of: dict[str, tuple[str, str, str]] = {}
    sources: set[str] = set()
    for m in manifests:
        for r in read_manifest(m):
            # the query's id, also as image_ids gives it where a stale file differs only in extension
            for key in {image_id(r.query), str(Path(r.query).with_suffix("")).replace(os.sep, "__"),
                        str(Path(r.query)).replace(os.sep, "__")}:
                source_of[key] = (r.source, r.attack, r.family)
            sources.add(r.source)
    names, tags, matched = [], [], 0
    for i, item in enumerate(ids):
        if item in source_of:
            src, attack, family = source_of[item]
            names.append(src)
            tags.append({"query", attack, family})
            matched += 1
        elif item in sources:
            names.append(item)
            tags.append({"original"})
            matched += 1
        else:
            names.append(f"#singleton:{i}")
            tags.append({"distractor"})
    if not matched:
        raise UsageError(f"no image is named in the manifest(s) {', '.join(map(str, manifests))} "
                         f"(image ids look like {ids[:2]})")
    return _finish(names, tags)


def truth_from_labels(ids: list[str], paths: list[str], labels_csv: str | os.PathLike) -> GroundTruth:
    """Groups from a CSV with a ``label`` column and a ``path`` or ``id`` column; unlisted images are singletons.

    Raises:
        UsageError: missing file or columns, or no image listed.
    """
    p = Path(labels_csv)
    text = read_text(p, "labels file", max_bytes=MAX_LABELS_BYTES)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = reader.fieldnames or []
        key = "path" if "path" in cols else "id" if "id" in cols else None
        if key is None or "label" not in cols:
            raise UsageError(f"{p}: a labels CSV needs a 'label' column and a 'path' or 'id' column, got {cols}")
        table = {r[key]: r["label"] for r in reader if r.get(key) and r.get("label")}
    except csv.Error as exc:
        raise UsageError(f"labels file {p} is not a readable CSV (line {reader.line_num}: {exc})") from None
    by_name = {Path(k).stem: v for k, v in table.items()} if key == "path" else {}
    names, tags, matched = [], [], 0
    for i, (item, path) in enumerate(zip(ids, paths, strict=True)):
        label = table.get(path if key == "path" else item)
        if label is None and key == "path":
            label = table.get(os.path.abspath(path), by_name.get(Path(path).stem))
        if label is None:
            names.append(f"#singleton:{i}")
            tags.append({"unlabelled"})
        else:
            names.append(label)
            tags.append({"labelled"})
            matched += 1
    if not matched:
        raise UsageError(f"no image of the features is listed in {p} (by {key}; images look like "
                         f"{(paths if key == 'path' else ids)[:2]})")
    return _finish(names, tags)
