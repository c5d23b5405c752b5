"""A persistent index folder: ``neardup index build|add`` and ``neardup query``.

Layout::

    INDEX_DIR/CURRENT              name of the committed generation, e.g. ``gen-000002`` (the commit point)
    INDEX_DIR/gen-000002/index.faiss   the faiss index (binary indexes via write_index_binary)
    INDEX_DIR/gen-000002/paths.json    image path of each vector, in index order (absolute, resolved)
    INDEX_DIR/gen-000002/meta.json     schema neardup.index/1: model, num_features, metric, preprocessing,
                                       factory, ntotal, the feature space (``space``), and the index
                                       file's size and sha256
    INDEX_DIR/config.yaml, .neardup.json, .neardup.lock

An update never touches the committed generation: it writes a new ``gen-N`` folder, then
replaces ``CURRENT`` by one atomic rename, and only then removes older generations. A crash
at any point leaves the previous generation readable; the next writer removes the leftovers.
Writers hold the folder's lock (``folder_lock``), so two updates cannot interleave; readers
read ``CURRENT`` once and retry if a writer removed that generation meanwhile.

Folders written before generations existed (``index.faiss``, ``paths.json`` and ``meta.json``
directly in INDEX_DIR) are still read; the next update turns them into a generation.

Features added later, or queries, must come from the same feature space (model, dimension,
preprocessing, stored transform, weights: :class:`neardup.extract.space.FeatureSpace`);
anything else is refused by :func:`neardup.extract.space.require_same_space`, since
mixing feature spaces silently returns nonsense neighbours.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup import __version__
from neardup.errors import UsageError
from neardup.extract.space import FeatureSpace, require_same_space
from neardup.extract.store import FeatureStore
from neardup.fastsearch.indexes import (
    build_index,
    check_trainable,
    faiss_message,
    read_index,
    resolve_spec,
    search,
    set_search_params,
    train_index,
    train_size,
    write_index,
)
from neardup.fastsearch.vectors import METRICS, canonical_metric, prepare_vectors
from neardup.io_utils import atomic_write_json, atomic_write_text, read_json, read_json_object, read_text
from neardup.outdir import check_out_dir, claim_out_dir, folder_lock, remove_files

if TYPE_CHECKING:
    from neardup.fastsearch.normalize import ScoreNormalization

INDEX_SCHEMA = "neardup.index/1"
QUERY_SCHEMA = "neardup.query/1"
BUILD_COMMAND = "index build"
CURRENT = "CURRENT"
FILES = ("index.faiss", "paths.json", "meta.json")
#: Everything ``index build`` writes in its folder (the ownership rule's ``owned`` patterns).
OWNED = ("gen-*", CURRENT, *FILES, "config.yaml")
_GEN = re.compile(r"gen-(\d{6,})")
#: Image formats ``query --grid`` can write (by file extension).
GRID_FORMATS = ("png", "pdf", "svg")


def normalise_path(path: str | os.PathLike) -> str:
    """One spelling per file (absolute, symlinks and ``..`` resolved), so ``a.jpg`` and ``/x/a.jpg`` are one image."""
    return str(Path(os.fspath(path)).resolve())


_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "num_features": (int,), "metric": (str,), "preprocessing": (dict,), "factory": (str,),
    "spec": (str,), "ntotal": (int,), "binary": (bool,), "created": (str,), "neardup_version": (str,),
    "transform": (str, type(None)), "index_bytes": (int, type(None)), "index_sha256": (str, type(None)),
    "paths_resolved": (bool,), "space": (dict, type(None))}
_REQUIRED = ("model", "num_features", "metric", "preprocessing", "factory", "spec", "ntotal", "binary")


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
    index_bytes: int | None = None  # size and sha256 of index.faiss (None in folders written before they existed)
    index_sha256: str | None = None
    paths_resolved: bool = False  # every path in paths.json is normalise_path()'d (not in older folders)
    space: dict[str, Any] | None = None  # FeatureSpace.to_dict() of the vectors (None in older folders)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": INDEX_SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Any, source: str = "index meta.json") -> IndexMeta:
        """Validated metadata; a UsageError naming ``source`` for anything missing or of the wrong type."""
        if not isinstance(d, dict) or d.get("schema") != INDEX_SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise UsageError(f"{source}: not a neardup index (schema {got!r}, expected {INDEX_SCHEMA})")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise UsageError(f"{source} is damaged: it lacks {', '.join(missing)}; rebuild with `neardup index build`")
        for k, t in _TYPES.items():
            v = d.get(k)
            if k in d and (not isinstance(v, t) or (isinstance(v, bool) and bool not in t)):
                raise UsageError(f"{source} is damaged: {k} is {v!r}; rebuild with `neardup index build`")
        if d["metric"] not in METRICS or d["num_features"] < 1 or d["ntotal"] < 0:
            raise UsageError(f"{source} is damaged: metric {d['metric']!r}, num_features {d['num_features']}, "
                             f"ntotal {d['ntotal']}; rebuild with `neardup index build`")
        space = d.get("space")
        if space is not None and not (isinstance(space.get("model"), str) and isinstance(space.get("metric"), str)
                                      and isinstance(space.get("dim"), int)):
            raise UsageError(f"{source} is damaged: its feature space {str(space)[:80]} lacks model, dim or metric; "
                             f"rebuild with `neardup index build`")
        return cls(**{k: d[k] for k in _TYPES if k in d})  # unknown keys (newer versions) are ignored


# --------------------------------------------------------------------------- generations
def _read_pointer(root: Path) -> str | None:
    """The committed generation's name from ``CURRENT`` (None without one)."""
    ptr = root / CURRENT
    if not ptr.is_file():
        return None
    name = read_text(ptr, "index pointer", max_bytes=256).strip()
    if not _GEN.fullmatch(name):
        raise UsageError(f"{ptr} is damaged (it should name a generation such as gen-000001, not {name[:40]!r}); "
                         f"rebuild with `neardup index build`")
    return name


def _committed(root: Path) -> Path | None:
    """The folder holding the committed index files: ``root/gen-N``, ``root`` itself (old layout), or None."""
    name = _read_pointer(root)
    if name is not None:
        return root / name
    return root if (root / "meta.json").is_file() else None


def _generations(root: Path) -> list[Path]:
    return sorted((p for p in root.glob("gen-*") if _GEN.fullmatch(p.name) and p.is_dir() and not p.is_symlink()),
                  key=lambda p: int(p.name[4:]))


def is_index_dir(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a neardup index (either layout): used to recognise folders without a marker."""
    root = Path(root)
    try:
        folder = _committed(root)
        if folder is None:
            return False
        return read_json_object(folder / "meta.json", "index meta.json").get("schema") == INDEX_SCHEMA
    except UsageError:
        return False


def _fsync(path: Path) -> None:
    """Flush a file's or folder's entries to disk, so a rename that follows cannot outlive its contents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _remove_generations(root: Path, keep: set[str]) -> None:
    """Delete the generations not in ``keep`` (and the old flat files once a generation is committed)."""
    for gen in _generations(root):
        if gen.name not in keep:  # its own files only: a file someone put there survives (with its folder)
            remove_files(root, [*(f"{gen.name}/{f}" for f in FILES), f"{gen.name}/.*.tmp", gen.name])
    if _read_pointer(root) is not None and (root / "meta.json").is_file():
        for name in FILES:  # the old layout's files: the generation before the first pointer
            (root / name).unlink(missing_ok=True)


def _load(root: Path, folder: Path) -> IndexDir:
    where = f"{root}" if folder == root else f"{root} ({folder.name})"
    if not folder.is_dir():
        raise FileNotFoundError(folder)
    meta = IndexMeta.from_dict(read_json(folder / "meta.json", "index meta.json"), f"{folder / 'meta.json'}")
    paths = read_json(folder / "paths.json", "index paths.json")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UsageError(f"{folder / 'paths.json'} is damaged (not a list of paths); "
                         f"rebuild with `neardup index build`")
    index_file = folder / "index.faiss"
    if not index_file.is_file():
        raise FileNotFoundError(index_file)
    size = index_file.stat().st_size
    if meta.index_bytes is not None and (size != meta.index_bytes or _sha256(index_file) != meta.index_sha256):
        raise UsageError(f"{index_file} is damaged ({size} bytes, checksum differs from the one recorded when it "
                         f"was written); rebuild with `neardup index build`")
    try:
        index = read_index(index_file, meta.binary)
    except RuntimeError as exc:
        raise UsageError(f"{index_file} is not a readable faiss index (truncated or damaged: "
                         f"{faiss_message(exc, 120)}); rebuild with `neardup index build`") from None
    if not index.ntotal == len(paths) == meta.ntotal or int(index.d) != meta.num_features:
        raise UsageError(f"{where} is inconsistent: {index.ntotal} vectors of {index.d} dimensions, "
                         f"{len(paths)} paths, meta says {meta.ntotal} of {meta.num_features}; "
                         f"rebuild it with `neardup index build`")
    return IndexDir(root, index, meta, paths, folder)


@dataclass
class IndexDir:
    """An opened index folder (index in memory); ``commit()`` writes it back as a new generation."""

    root: Path
    index: Any
    meta: IndexMeta
    paths: list[str] = field(default_factory=list)
    folder: Path | None = None  # the generation it was read from (root itself for the old layout)

    @classmethod
    def open(cls, root: str | os.PathLike, retries: int = 3) -> IndexDir:
        """Read the committed generation; retried when a concurrent update removed it while we read.

        Raises:
            UsageError: not an index folder, or a damaged one (with the reason and the file).
        """
        root = Path(root)
        if not root.is_dir():
            raise UsageError(f"index folder not found: {root} (make one with `neardup index build`)")
        for attempt in range(retries + 1):
            folder = _committed(root)
            if folder is None:
                raise UsageError(f"not a neardup index folder: {root} has no committed index "
                                 f"(make one with `neardup index build`)")
            try:
                return _load(root, folder)
            except (FileNotFoundError, UsageError) as exc:
                # a writer may have committed a newer generation and removed this one meanwhile
                if _committed(root) != folder and attempt < retries:
                    continue
                if isinstance(exc, UsageError):
                    raise
                raise UsageError(f"{root} is damaged: {exc.filename or exc} is missing; "
                                 f"rebuild it with `neardup index build`") from None
        raise AssertionError("unreachable")

    def save(self) -> None:
        """Kept for API callers: the same as :meth:`commit` (the caller holds the folder lock)."""
        self.commit()

    def commit(self) -> None:
        """Write a new generation, switch ``CURRENT`` to it (the one commit point), then drop older ones.

        The caller holds the folder's lock. Leftovers of killed writers are removed first.
        """
        root = self.root
        current = _read_pointer(root)
        _remove_generations(root, {current} if current else set())
        gens = _generations(root)
        gen = root / f"gen-{(int(gens[-1].name[4:]) if gens else 0) + 1:06d}"
        gen.mkdir(parents=True)
        self.meta.ntotal = int(self.index.ntotal)
        write_index(self.index, gen / "index.faiss")
        _fsync(gen / "index.faiss")
        self.meta.index_bytes = (gen / "index.faiss").stat().st_size
        self.meta.index_sha256 = _sha256(gen / "index.faiss")
        atomic_write_json(gen / "paths.json", self.paths)
        atomic_write_json(gen / "meta.json", self.meta.to_dict())
        _fsync(gen)
        atomic_write_text(root / CURRENT, gen.name + "\n")  # the commit
        _fsync(root)
        self.folder = gen
        _remove_generations(root, {gen.name})

    def add(self, feats: np.ndarray, paths: Sequence[str]) -> int:
        """Append vectors whose (normalised) path is not indexed yet, each path once; returns how many.

        Raises:
            UsageError: a count mismatch, or NaN/inf features (faiss would index them silently).
        """
        feats = np.asarray(feats)
        if len(feats) != len(paths):
            raise UsageError(f"{len(feats)} feature vectors but {len(paths)} paths")
        check_finite(feats, "the features to add")
        # paths this version wrote are normalised already (no file-system call per indexed image)
        known = set(self.paths) if self.meta.paths_resolved else {normalise_path(p) for p in self.paths}
        keep, new = [], []
        for i, p in enumerate(paths):
            norm = normalise_path(p)
            if norm not in known:
                known.add(norm)
                keep.append(i)
                new.append(norm)
        if keep:
            self.index.add(prepare_vectors(feats[keep], self.meta.metric))
            self.paths.extend(new)
        return len(keep)


# --------------------------------------------------------------------------- build and add
def check_finite(feats: np.ndarray, source: str) -> None:
    """Refuse NaN or infinite feature values: faiss would index and return them without a word."""
    if feats.dtype.kind == "f" and feats.size and not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats).all(axis=1)).sum())
        raise UsageError(f"{source}: {bad} feature vectors hold NaN or infinite values; re-extract them")


def _index_for(store: FeatureStore, factory: str, metric: str | None) -> tuple[Any, str, str]:
    """An empty index for ``store`` (validated: spec, metric, enough vectors to train): (index, spec, metric)."""
    metric = canonical_metric(metric or store.metric)
    n = len(store)
    if n == 0:
        raise UsageError(f"{store.root} holds no feature vectors: nothing to index")
    spec = resolve_spec(factory, n)
    index = build_index(spec, store.dim, metric)
    check_trainable(index, spec, train_size(index, n), f"feature folder {store.root}")
    return index, spec, metric


def build_index_dir(features: str | os.PathLike, factory: str, out: str | os.PathLike, metric: str | None = None,
                    overwrite: bool = False, seed: int = 0,
                    on_commit: Callable[[IndexDir], None] | None = None) -> IndexDir:
    """Build ``factory`` over a feature folder and save it to ``out`` (claimed for ``index build``).

    ``out`` follows the output-folder rule (:func:`neardup.outdir.claim_out_dir`). Rebuilding with
    ``overwrite`` keeps the old index readable until the new one is committed. ``on_commit(index_dir)`` runs
    under the folder lock after the commit (the CLI writes ``config.yaml`` there).

    Raises:
        UsageError: bad features folder, spec/metric, too few vectors to train, a folder that is not
            ours, or an existing index without ``overwrite``.
    """
    store = FeatureStore.open(features)
    index, spec, metric = _index_for(store, factory, metric)  # all input checks before the folder is touched
    out = Path(out)
    own = check_out_dir(out, BUILD_COMMAND, overwrite=overwrite, owned=OWNED, recognise=is_index_dir)
    # on our own folder nothing is removed up front: the new generation replaces the old one at the commit
    with claim_out_dir(out, BUILD_COMMAND, overwrite=overwrite and not own, owned=OWNED, recognise=is_index_dir):
        if not overwrite and _committed(out) is not None:
            raise UsageError(f"{out} already holds an index; use --overwrite or `neardup index add`")
        feats = np.asarray(store.features())
        check_finite(feats, f"feature folder {store.root}")
        n = len(feats)
        if not index.is_trained:
            t = train_size(index, n)
            sel = np.sort(np.random.default_rng(seed).choice(n, t, replace=False)) if t < n else slice(None)
            train_index(index, prepare_vectors(feats[sel], metric), spec)
        space = store.space
        meta = IndexMeta(store.model, store.dim, metric, store.meta.get("preprocessing", {}), spec, factory, 0,
                         store.metric == "hamming", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         transform=space.transform, paths_resolved=True, space=space.to_dict())
        idx = IndexDir(out, index, meta, [])
        idx.add(feats, list(store.paths))
        idx.commit()
        if on_commit is not None:
            on_commit(idx)
    return idx


def _locked_update(index_dir: str | os.PathLike) -> Any:
    """The folder lock of an existing index (checked first, so a typo never creates a folder)."""
    root = Path(index_dir)
    if not root.is_dir() or _committed(root) is None:
        IndexDir.open(root)  # raises the clear "not an index folder" error
    return folder_lock(root, "updating")


def add_features(index_dir: str | os.PathLike, features: str | os.PathLike) -> int:
    """Append a feature folder (of the index's feature space) to an index; returns vectors added."""
    store = FeatureStore.open(features)
    with _locked_update(index_dir):
        idx = IndexDir.open(index_dir)
        require_same_space([FeatureSpace.of_index(idx.meta), store.space],
                           ["the index", f"feature folder {features}"])
        n = idx.add(np.asarray(store.features()), list(store.paths))
        if n:
            idx.commit()
    return n


def _skip_reason(path: str) -> str:
    """Why an image the extractor dropped could not be used (decoded again, only for the dropped ones)."""
    from neardup.data.images import ImageDecodeError, load_image

    try:
        load_image(path)
    except ImageDecodeError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - a reason string, whatever went wrong
        return f"{type(exc).__name__}: {exc}"
    return "preprocessing failed"


def _input_paths(images: str | os.PathLike | Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Image paths, each used as given (no text round trip: names with blanks or newlines survive).

    A folder or a list file is expanded; a sequence is taken element by element (folders in it expanded).
    """
    from neardup.extract.pipeline import collect_inputs

    if isinstance(images, (str, os.PathLike)):
        paths, _, found = collect_inputs(images)
        return paths, found
    out: list[str] = []
    problems: list[dict[str, str]] = []
    for p in images:
        if Path(p).is_dir():
            sub, _, probs = collect_inputs(p)
            out += sub
            problems += probs
        else:
            out.append(os.fspath(p))
    return out, problems


def extract_like_index(meta: IndexMeta, images: str | os.PathLike | Sequence[str], device: str | None = None,
                       weights: str | None = None, workers: int | None = None, show_progress: bool = False,
                       engine: str = "auto") -> tuple[np.ndarray, list[str], list[dict]]:
    """Features of ``images`` (folder, list file, or a list of paths) with the index's model and preprocessing.

    Extracted in memory, path by path: nothing is written, and file names are never parsed from text.
    The extractor is built as ``neardup extract`` builds it (same engine, ``auto`` by default).

    Returns:
        (features, resolved paths, skipped) - skipped as ``{"path", "reason"}``.

    Raises:
        UsageError: a stored transform, a fine-tuned model without ``weights``, or features that do not match.
    """
    from neardup.extract.pipeline import encode_paths
    from neardup.extract.registry import builder_name, create_extractor

    if meta.transform is not None:
        raise UsageError("this index holds features with a stored transform (L2/whitening): extract the images with "
                         "`neardup extract --transform-from FEATURES` and add that folder with `neardup index add`")
    name = builder_name(meta.model)
    if name != meta.model and not weights:
        raise UsageError(f"this index holds features of a fine-tuned encoder ({meta.model}): pass --weights with the "
                         f"file they were extracted with (RUN_DIR/best.pt from neardup finetune)")
    paths, problems = _input_paths(images)
    pre = meta.preprocessing or {}
    if engine == "auto" and FeatureSpace.of_index(meta).quantization:  # int8 features: query with the int8 engine
        engine = "onnx-int8"
    ext = create_extractor(name, weights=weights, device=device, engine=engine,
                           input_size=pre.get("input_size") or None, resize_size=pre.get("resize_size") or None)
    require_same_space([FeatureSpace.of_index(meta), FeatureSpace.of_extractor(ext)],
                       ["the index", f"the {meta.model} extractor"])
    feats, idx = encode_paths(ext, paths, workers=workers, show_progress=show_progress, desc=f"encode {ext.name}")
    if feats.dtype.kind == "f":
        feats = feats.astype(np.float32, copy=False)
        check_finite(feats, f"features extracted with {meta.model} (check the weights)")
    got = set(idx.tolist())
    skipped = [{"path": p, "reason": _skip_reason(p)} for i, p in enumerate(paths) if i not in got]
    return feats, [normalise_path(paths[i]) for i in idx], [*problems, *skipped]


def add_images(index_dir: str | os.PathLike, images: str | os.PathLike | Sequence[str], device: str | None = None,
               weights: str | None = None, workers: int | None = None,
               show_progress: bool = False) -> tuple[int, list[dict]]:
    """Extract ``images`` with the index's model and append them: (vectors added, skipped files)."""
    with _locked_update(index_dir):
        idx = IndexDir.open(index_dir)
        feats, paths, skipped = extract_like_index(idx.meta, images, device, weights, workers, show_progress)
        n = idx.add(feats, paths)
        if n:
            idx.commit()
    return n, skipped


# --------------------------------------------------------------------------- query
@dataclass
class QueryResult:
    """Top-k neighbours of each query image; ``to_dict()`` is the JSON ``neardup query`` prints."""

    index: str
    k: int
    metric: str
    results: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    score_normalization: dict[str, Any] | None = None  # BackgroundNormalizer.to_dict() when scores were normalised

    def to_dict(self) -> dict[str, Any]:
        return {"schema": QUERY_SCHEMA, **asdict(self)}


def query_index(index_dir: str | os.PathLike, images: Sequence[str], k: int = 10, params: dict[str, int] | None = None,
                device: str | None = None, weights: str | None = None, workers: int | None = None,
                show_progress: bool = False, normalization: ScoreNormalization | None = None,
                background_cache: str | os.PathLike | None = None) -> QueryResult:
    """Search the index for each image; scores are similarities (cosine, or negated distance).

    ``normalization``: scores normalised against a background set (:mod:`neardup.fastsearch.normalize`;
    background images are extracted like the index, into ``background_cache`` when given).
    """
    if k < 1:
        raise UsageError("k must be >= 1")
    idx = IndexDir.open(index_dir)
    set_search_params(idx.index, params or {})
    norm = None
    if normalization is not None:  # before the queries are extracted: a bad background fails at once
        from neardup.fastsearch.normalize import BackgroundNormalizer

        norm = BackgroundNormalizer.load(normalization, FeatureSpace.of_index(idx.meta), idx.meta.metric,
                                         cache=background_cache, workers=workers, show_progress=show_progress,
                                         reference="the index")
    feats, paths, skipped = extract_like_index(idx.meta, list(images), device, weights, workers, show_progress)
    results = []
    if len(feats):
        kk = min(k, idx.index.ntotal)
        if kk:
            scores, ids = search(idx.index, prepare_vectors(feats, idx.meta.metric), kk, idx.meta.metric)
            if norm is not None:
                scores, ids = norm.apply(feats, scores, ids)
        else:  # an empty index: no neighbours
            scores, ids = np.zeros((len(feats), 0)), np.zeros((len(feats), 0), dtype=np.int64)
        for p, srow, irow in zip(paths, scores, ids, strict=False):
            results.append({"query": p, "neighbours": [
                {"rank": r + 1, "id": int(i), "path": idx.paths[i], "score": float(s)}
                for r, (s, i) in enumerate(zip(srow, irow, strict=False)) if i >= 0]})
    if not results:
        first = skipped[0] if skipped else {"path": "?", "reason": "no input"}
        raise UsageError(f"no query image could be read ({len(skipped)} given), e.g. {first['path']}: "
                         f"{first['reason']}")
    return QueryResult(str(index_dir), k, idx.meta.metric, results, skipped,
                       norm.to_dict() if norm is not None else None)


def grid_format(out: str | os.PathLike) -> str:
    """The image format of a ``--grid`` file from its extension (png without one).

    Raises:
        UsageError: an extension matplotlib should not be asked to write here.
    """
    suffix = Path(out).suffix.lstrip(".").lower()
    if suffix and suffix not in GRID_FORMATS:
        raise UsageError(f"--grid {out}: unknown image format .{suffix}; use a .png, .pdf or .svg file name")
    return suffix or "png"


def draw_grid(result: QueryResult, out: str | os.PathLike, max_queries: int = 8, thumb: int = 128) -> None:
    """Each query (left, framed) beside its neighbours with their scores; PNG/PDF/SVG by extension, Agg backend."""
    fmt = grid_format(out)
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

    for row, r in zip(axes, rows, strict=False):
        for ax in row:
            ax.axis("off")
        row[0].axis("on")
        show(row[0], r["query"], "query: " + Path(r["query"]).name[:18], "tab:blue")
        for ax, nb in zip(row[1:], r["neighbours"], strict=False):
            ax.axis("on")
            show(ax, nb["path"], f"#{nb['rank']} {Path(nb['path']).name[:14]}\n{nb['score']:.3f}", "0.7")
    fig.tight_layout()
    try:
        from neardup.outdir import FIGURE_TAG

        tag = {"png": {"Software": FIGURE_TAG}, "pdf": {"Creator": FIGURE_TAG}, "svg": {"Creator": FIGURE_TAG}}
        atomic_write(out, lambda f: fig.savefig(f, format=fmt, dpi=120, metadata=tag.get(fmt)))
    finally:
        plt.close(fig)
