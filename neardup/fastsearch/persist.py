"""A persistent index folder: ``neardup index build|add`` and ``neardup query``.

Layout::

    INDEX_DIR/index.faiss   the faiss index (binary indexes via write_index_binary)
    INDEX_DIR/paths.json    image path of each vector, in index order
    INDEX_DIR/meta.json     schema neardup.index/1: model, num_features, metric, preprocessing, factory, ntotal

Features added later, or queries, must come from the same model, dimension and
preprocessing; anything else is refused with a :class:`UsageError`, since
mixing feature spaces silently returns nonsense neighbours.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neardup import __version__
from neardup.errors import UsageError
from neardup.extract.store import FeatureStore
from neardup.fastsearch.indexes import (build_index, prepare_vectors, read_index, resolve_spec, search,
                                        set_search_params, train_size, write_index)
from neardup.io_utils import atomic_write_json

INDEX_SCHEMA = "neardup.index/1"
QUERY_SCHEMA = "neardup.query/1"


@dataclass
class IndexMeta:
    model: str
    num_features: int  # bits for hashes
    metric: str  # search metric
    preprocessing: dict[str, Any]
    factory: str  # resolved faiss factory string
    spec: str  # as given
    ntotal: int
    binary: bool
    created: str = ""
    neardup_version: str = __version__
    transform: str | None = None  # digest of the feature store's stored transform (L2/PCA whitening), if any

    def to_dict(self) -> dict[str, Any]:
        return {"schema": INDEX_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IndexMeta":
        if d.get("schema") != INDEX_SCHEMA:
            raise UsageError(f"not a neardup index (schema {d.get('schema')!r}, expected {INDEX_SCHEMA})")
        return cls(**{k: v for k, v in d.items() if k != "schema"})


def transform_digest(store: FeatureStore) -> str | None:
    """Digest of a store's stored feature transform (None without one, or with an older store)."""
    tf = getattr(store, "transform", None)
    return tf.digest() if tf is not None else None


def check_compatible(meta: IndexMeta, model: str, dim: int, preprocessing: dict[str, Any] | None, what: str,
                     transform: str | None = None) -> None:
    """Refuse features from another model, dimension, preprocessing or stored transform than the index's."""
    if model != meta.model or int(dim) != int(meta.num_features):
        raise UsageError(f"{what} are {model} ({dim}-d) but the index holds {meta.model} ({meta.num_features}-d) "
                         f"features; extract with --model {meta.model} or build another index")
    if preprocessing is not None and preprocessing != meta.preprocessing:
        raise UsageError(f"{what} use preprocessing {preprocessing} but the index was built with "
                         f"{meta.preprocessing}; re-extract with the index's settings")
    if transform != meta.transform:
        raise UsageError(f"{what} were post-processed with a different stored transform (L2/whitening) than the "
                         f"index's features; extract them with the same --transform-from")


@dataclass
class IndexDir:
    """An opened index folder (index in memory); ``save()`` writes it back atomically file by file."""

    root: Path
    index: Any
    meta: IndexMeta
    paths: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "IndexDir":
        root = Path(root)
        if not (root / "meta.json").is_file():
            raise UsageError(f"not a neardup index folder: {root} has no meta.json (make one with `neardup index build`)")
        meta = IndexMeta.from_dict(json.loads((root / "meta.json").read_text("utf-8")))
        paths = json.loads((root / "paths.json").read_text("utf-8"))
        index = read_index(root / "index.faiss", meta.binary)
        if not index.ntotal == len(paths) == meta.ntotal:
            raise UsageError(f"{root} is inconsistent: {index.ntotal} vectors, {len(paths)} paths, meta says "
                             f"{meta.ntotal}; rebuild it with `neardup index build`")
        return cls(root, index, meta, paths)

    def save(self) -> None:
        self.meta.ntotal = int(self.index.ntotal)
        write_index(self.index, self.root / "index.faiss")
        atomic_write_json(self.root / "paths.json", self.paths)
        atomic_write_json(self.root / "meta.json", self.meta.to_dict())  # last: the commit

    def add(self, feats: np.ndarray, paths: list[str]) -> int:
        """Append vectors whose path is not indexed yet; returns how many were added."""
        known = set(self.paths)
        keep = [i for i, p in enumerate(paths) if p not in known]
        if keep:
            self.index.add(prepare_vectors(np.asarray(feats)[keep], self.meta.metric))
            self.paths.extend(paths[i] for i in keep)
        return len(keep)


def build_index_dir(features: str | os.PathLike, factory: str, out: str | os.PathLike, metric: str | None = None,
                    overwrite: bool = False, seed: int = 0) -> IndexDir:
    """Build ``factory`` over a feature folder and save it to ``out``.

    Raises:
        UsageError: bad features folder, spec/metric, or an existing index without ``overwrite``.
    """
    store = FeatureStore.open(features)
    out = Path(out)
    if (out / "meta.json").exists() and not overwrite:
        raise UsageError(f"{out} already holds an index; use --overwrite or `neardup index add`")
    binary = store.metric == "hamming"
    metric = metric or store.metric
    feats = np.asarray(store.features())
    n = len(feats)
    spec = resolve_spec(factory, n)
    index = build_index(spec, store.dim, metric)
    if not index.is_trained:
        t = train_size(index, n)
        sel = np.sort(np.random.default_rng(seed).choice(n, t, replace=False)) if t < n else slice(None)
        index.train(prepare_vectors(feats[sel], metric))
    meta = IndexMeta(store.model, store.dim, metric, store.meta.get("preprocessing", {}), spec, factory, 0, binary,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), transform=transform_digest(store))
    out.mkdir(parents=True, exist_ok=True)
    idx = IndexDir(out, index, meta, [])
    idx.add(feats, list(store.paths))
    idx.save()
    return idx


def add_features(index_dir: str | os.PathLike, features: str | os.PathLike) -> int:
    """Append a feature folder (same model, dimension, preprocessing) to an index; returns vectors added."""
    idx = IndexDir.open(index_dir)
    store = FeatureStore.open(features)
    check_compatible(idx.meta, store.model, store.dim, store.meta.get("preprocessing"), f"features in {features}",
                     transform_digest(store))
    n = idx.add(np.asarray(store.features()), list(store.paths))
    idx.save()
    return n


def extract_like_index(meta: IndexMeta, images: str | os.PathLike | list[str], device: str | None = None,
                       weights: str | None = None, workers: int | None = None) -> tuple[np.ndarray, list[str], list[dict]]:
    """Features of ``images`` (folder, list file or list of paths) with the index's model and preprocessing.

    Returns:
        (features, paths, skipped) - skipped as ``{"path", "reason"}``.
    """
    from neardup.extract.pipeline import extract_features
    from neardup.extract.registry import create_extractor

    if meta.transform is not None:
        raise UsageError("this index holds features with a stored transform (L2/whitening): extract the images with "
                         "`neardup extract --transform-from FEATURES` and add that folder with `neardup index add`")
    pre = meta.preprocessing or {}
    ext = create_extractor(meta.model, weights=weights, device=device, input_size=pre.get("input_size") or None,
                           resize_size=pre.get("resize_size") or None)
    d = ext.describe()
    check_compatible(meta, d["model"], d["num_features"], d["preprocessing"], "the extractor's features")
    with tempfile.TemporaryDirectory(prefix="neardup-extract-") as tmp:
        src: str | os.PathLike = images if not isinstance(images, list) else Path(tmp) / "inputs.txt"
        if isinstance(images, list):
            Path(src).write_text("\n".join(str(Path(p).resolve()) for p in images) + "\n", "utf-8")
        report = extract_features(src, Path(tmp) / "feats", meta.model, extractor=ext, workers=workers,
                                  show_progress=False)
        store = FeatureStore.open(Path(tmp) / "feats")
        return np.array(store.features()), [str(Path(p).resolve()) for p in store.paths], report.skipped


def add_images(index_dir: str | os.PathLike, images: str | os.PathLike, device: str | None = None,
               weights: str | None = None, workers: int | None = None) -> tuple[int, list[dict]]:
    """Extract ``images`` with the index's model and append them: (vectors added, skipped files)."""
    idx = IndexDir.open(index_dir)
    feats, paths, skipped = extract_like_index(idx.meta, images, device, weights, workers)
    n = idx.add(feats, paths)
    idx.save()
    return n, skipped


@dataclass
class QueryResult:
    """Top-k neighbours of each query image; ``to_dict()`` is the JSON ``neardup query`` prints."""

    index: str
    k: int
    metric: str
    results: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": QUERY_SCHEMA, **asdict(self)}


def query_index(index_dir: str | os.PathLike, images: list[str], k: int = 10, params: dict[str, int] | None = None,
                device: str | None = None, weights: str | None = None, workers: int | None = None) -> QueryResult:
    """Search the index for each image; scores are similarities (cosine, or negated distance)."""
    if k < 1:
        raise UsageError("k must be >= 1")
    idx = IndexDir.open(index_dir)
    set_search_params(idx.index, params or {})
    feats, paths, skipped = extract_like_index(idx.meta, images, device, weights, workers)
    results = []
    if len(feats):
        scores, ids = search(idx.index, prepare_vectors(feats, idx.meta.metric), min(k, idx.index.ntotal),
                             idx.meta.metric)
        for p, srow, irow in zip(paths, scores, ids):
            results.append({"query": p, "neighbours": [
                {"rank": r + 1, "id": int(i), "path": idx.paths[i], "score": float(s)}
                for r, (s, i) in enumerate(zip(srow, irow)) if i >= 0]})
    return QueryResult(str(index_dir), k, idx.meta.metric, results, skipped)


def draw_grid(result: QueryResult, out: str | os.PathLike, max_queries: int = 8, thumb: int = 128) -> None:
    """Each query (left, framed) beside its neighbours with their scores; PNG/PDF by extension, Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neardup.data.images import ImageDecodeError, load_image
    from neardup.io_utils import atomic_write

    rows = result.results[:max_queries]
    if not rows:
        raise UsageError("no query could be read: nothing to draw")
    cols = 1 + max(len(r["neighbours"]) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.8 * len(rows)), squeeze=False)

    def show(ax: Any, path: str, title: str, color: str) -> None:
        try:
            img = load_image(path)
            img.thumbnail((thumb, thumb))
            ax.imshow(img)
        except ImageDecodeError as exc:
            ax.text(0.5, 0.5, exc.reason[:30], ha="center", va="center", fontsize=6)
        ax.set_title(title, fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_color(color)
            s.set_linewidth(2)

    for row, r in zip(axes, rows):
        for ax in row:
            ax.axis("off")
        row[0].axis("on")
        show(row[0], r["query"], "query: " + Path(r["query"]).name[:18], "tab:blue")
        for ax, nb in zip(row[1:], r["neighbours"]):
            ax.axis("on")
            show(ax, nb["path"], f"#{nb['rank']} {Path(nb['path']).name[:14]}\n{nb['score']:.3f}", "0.7")
    fig.tight_layout()
    fmt = Path(out).suffix.lstrip(".").lower() or "png"
    atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=120))
    plt.close(fig)
