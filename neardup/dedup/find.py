"""``find_duplicates``: the exact and near duplicates of a collection, in one call.

Stages, each timed and each reused by a re-run:

1. **hash**: every file's bytes (cached by path, size and mtime); identical bytes are one content.
2. **features**: one vector per distinct content, cached under ``DIR/features`` (:mod:`neardup.dedup.features`).
3. **k-NN**: each content's ``k`` nearest contents through the fastsearch index layer: exact (flat) up to
   ``exact_limit`` contents, IVF above.
   With ``--normalize-scores BACKGROUND`` each content's background bias is computed and every k-NN score is
   normalised (:mod:`neardup.dedup.normalization`): the candidates are the raw search's ``k`` neighbours, and
   everything after (threshold, calibration, guard, reported scores) is on the normalised scale.
4. **calibrate**: unless a threshold is given, one chosen on the collection's own images
   (:mod:`neardup.dedup.scores`, :mod:`neardup.dedup.calibrate`).
5. **group**: connected components of the k-NN edges at the threshold, split by the star guard and the
   pair-share rule (:mod:`neardup.dedup.grouping`) so that chains of near neighbours and hubs cannot merge
   unrelated images.
6. **keepers**: one per group by the ``keep`` rule; members with the keeper's decoded pixels are marked exact.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup.dedup.calibrate import Calibration
from neardup.dedup.grouping import MAX_BRIDGE, MIN_PAIR_SHARE, edges  # noqa: F401  (edges re-exported: callers import it from here)
from neardup.dedup.inventory import FileInfo
from neardup.dedup.knngraph import KnnGraph, KnnLists
from neardup.dedup.large import StoredRows
from neardup.errors import UsageError

if TYPE_CHECKING:
    from neardup.dedup.normalization import Background
    from neardup.fastsearch.normalize import ScoreNormalization
    from neardup.scaleout.engine import RayConfig

SCHEMA = "neardup.dedup/1"
KEEP_RULES = ("largest", "smallest-file", "oldest", "newest", "first")
#: above this similarity two different files are checked for identical decoded pixels (a lossless re-encode)
PIXEL_CHECK = 0.999


@dataclass
class DedupConfig:
    """Every option of a scan; the CLI's flags and YAML keys are these fields.

    ``threshold`` is a cosine similarity, or a normalised score with ``normalize_scores`` (None: calibrated to
    reach ``precision``); ``centre_margin`` loosens the star guard: a member must be within
    ``threshold - centre_margin`` of its group's centre; ``min_pair_share``: groups of
    :data:`~neardup.dedup.grouping.HUB_MIN_SIZE` or more must have this share of member pairs at or above the
    threshold (0: no such check); ``max_bridge``: such groups are cut in two where their threshold graph has a cut
    of lower conductance (0: never). ``normalize_scores`` and ``norm_*``: :class:`ScoreNormalization`'s fields.
    """

    model: str = "neardup_cd"
    weights: str | None = None
    threshold: float | None = None
    # 0.995, not 0.99: the estimate rests on ~200 negatives, so at 0.99 the cut may sit just above the second
    # highest; a false merge puts a distinct photo among the copies that `apply` acts on
    precision: float = 0.995
    keep: str = "largest"
    calibration_images: int = 200
    calibration_attacks: str = "default"
    copies_per_image: int = 3
    centre_margin: float = 0.2
    min_pair_share: float = MIN_PAIR_SHARE
    max_bridge: float = MAX_BRIDGE
    k: int = 20
    exact_limit: int = 100_000
    batch_size: int = 32
    workers: int | None = None
    device: str = "auto"
    engine: str = "auto"
    seed: int = 0
    normalize_scores: str | None = None
    norm_k: int | None = None
    norm_beta: float | None = None
    norm_reduction: str | None = None

    def normalization(self) -> ScoreNormalization | None:
        """The score normalisation these options ask for (validated), or None."""
        from neardup.fastsearch.normalize import ScoreNormalization

        return ScoreNormalization.from_options(self.normalize_scores, self.norm_k, self.norm_beta,
                                               self.norm_reduction)

    def validate(self) -> DedupConfig:
        """Raises UsageError naming the flag of the first bad value."""
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))

        norm = self.normalization()
        if norm is None and self.threshold is not None and not (is_num(self.threshold)
                                                                and -1.0 <= self.threshold <= 1.0):
            raise UsageError(f"--threshold is a cosine similarity in [-1, 1], got {self.threshold!r}")
        if norm is not None and self.threshold is not None and not (
                is_num(self.threshold) and abs(self.threshold) <= 1.0 + norm.beta):
            raise UsageError(f"--threshold is a normalised score (a cosine less --norm-beta x a background "
                             f"similarity) in [{-1 - norm.beta:g}, {1 + norm.beta:g}], got {self.threshold!r}")
        if not (is_num(self.precision) and 0.5 <= self.precision < 1.0):
            raise UsageError(f"--precision must be in [0.5, 1), got {self.precision!r}")
        if not (is_num(self.centre_margin) and 0.0 <= self.centre_margin <= 1.0):
            raise UsageError(f"--centre-margin must be in [0, 1], got {self.centre_margin!r}")
        if not (is_num(self.min_pair_share) and 0.0 <= self.min_pair_share <= 1.0):
            raise UsageError(f"--min-pair-share must be in [0, 1], got {self.min_pair_share!r}")
        if not (is_num(self.max_bridge) and 0.0 <= self.max_bridge <= 1.0):
            raise UsageError(f"--max-bridge must be in [0, 1], got {self.max_bridge!r}")
        if self.keep not in KEEP_RULES:
            raise UsageError(f"--keep must be one of {', '.join(KEEP_RULES)}, got {self.keep!r}")
        for name, lo, hi in (("calibration_images", 2, 100_000), ("copies_per_image", 1, 100), ("k", 2, 1000),
                             ("exact_limit", 1, 10**9), ("batch_size", 1, 4096), ("seed", 0, 2**32 - 1)):
            v = getattr(self, name)
            if not is_int(v) or not lo <= v <= hi:
                raise UsageError(f"--{name.replace('_', '-')} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.workers is not None and (not is_int(self.workers) or self.workers < 0):
            raise UsageError(f"--workers must be an integer >= 0, got {self.workers!r}")
        from neardup.extract.registry import ENGINES, get_model_cfg

        if self.engine not in ENGINES:
            raise UsageError(f"unknown --engine {self.engine!r}; use {', '.join(ENGINES)}")
        get_model_cfg(self.model)  # an unknown model is one Error line, before any file is read
        return self


@dataclass
class DedupResult:
    """The groups of a scan. ``group[i]`` is the group of ``files[i]`` (-1: in no group of two or more)."""

    files: list[FileInfo]
    group: np.ndarray
    keepers: dict[int, int]
    # score of each file to its group's keeper (1 for keepers and exact copies; with score normalisation, the
    # normalised score: 1 - offsets for keepers and exact copies)
    scores: np.ndarray
    kinds: list[str]  # keeper | exact | near | unique | unreadable
    reference: np.ndarray  # bool: the file came from --against
    pairs: list[tuple[int, int, float]]
    threshold: float
    calibration: Calibration | None
    skipped: dict[int, str]
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    against: bool = False
    normalization: dict[str, Any] | None = None  # the background's record: scores are normalised scores

    def groups(self) -> dict[int, list[int]]:
        """group -> member file indices, keeper first."""
        out: dict[int, list[int]] = {}
        for i, g in enumerate(self.group.tolist()):
            if g >= 0:
                out.setdefault(g, []).append(i)
        return {g: sorted(m, key=lambda i: (i != self.keepers[g], i)) for g, m in sorted(out.items())}

    def path_groups(self) -> list[frozenset[str]]:
        """The groups as sets of paths (comparable across runs and orders)."""
        return sorted((frozenset(self.files[i].path for i in m) for m in self.groups().values()),
                      key=lambda s: sorted(s))

    def to_dict(self) -> dict[str, Any]:
        groups = self.groups()
        dups = [i for m in groups.values() for i in m[1:]]
        n_exact = sum(1 for i in dups if self.kinds[i] == "exact")
        largest = max((len(m) for m in groups.values()), default=0)
        return {"schema": SCHEMA, "files": len(self.files), "unreadable": len(self.skipped),
                "groups": len(groups), "duplicates": len(dups), "exact_duplicates": n_exact,
                "near_duplicates": len(dups) - n_exact, "largest_group": largest,
                "largest_group_share": round(largest / len(self.files), 6) if self.files else 0.0,
                "pairs": len(self.pairs), "threshold": round(float(self.threshold), 6),
                "threshold_source": "given" if self.calibration is None else "calibrated",
                "calibration": None if self.calibration is None else
                {k: v for k, v in self.calibration.to_dict().items() if k != "curve"},
                "model": self.model, "against": self.against, "timings_s": self.timings,
                "normalization": self.normalization}


# ---------------------------------------------------------------------------------------------------- inputs
def collect_paths(inputs: list[str], stores: list[Path] | None = None) -> list[str]:
    """Real paths (symlinks resolved) of the images of folders, list files and feature folders, each once, sorted.

    Why real paths: a symlink and its target are one file, not two copies; reporting them as duplicates would let
    ``apply --delete`` remove the data a kept link points to. Feature folders (``neardup extract`` outputs) are
    appended to ``stores``: their vectors are reused.
    """
    from neardup.extract.pipeline import collect_inputs, is_extraction

    seen: set[str] = set()
    for src in inputs:
        if Path(src).is_dir() and is_extraction(Path(src)):
            from neardup.extract.store import FeatureStore

            paths = FeatureStore.open(src).paths
            if stores is not None:
                stores.append(Path(src))
        else:
            paths, _, _ = collect_inputs(src)
        seen.update(os.path.realpath(p) for p in paths)
    return sorted(seen)


def _scan(paths: list[str], out: Path, show_progress: bool, on_ray: Any = None) -> list[FileInfo]:
    from neardup.dedup.inventory import hash_files, scan_files

    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UsageError(f"{len(missing)} listed file(s) do not exist, e.g. {missing[0]}")
    if on_ray is None:
        return scan_files(paths, out, show_progress, hash_files)
    from neardup.scaleout.inventory import ray_hasher

    return scan_files(paths, out, show_progress, ray_hasher)


# ---------------------------------------------------------------------------------------------------- stages
def knn(X: np.ndarray | StoredRows, k: int, exact_limit: int,
        show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of each row's ``k`` nearest rows, itself included; -1 where none was found.

    Exact (flat) up to ``exact_limit`` rows, IVF above. Rows streamed from the feature stores
    (:class:`~neardup.dedup.large.StoredRows`) are searched in their projection, list by list
    (:func:`~neardup.dedup.large.ivf_knn`); their similarities are then the projection's, which
    :func:`group_contents` scores again on the full rows near the threshold.
    """
    from neardup.clustering.neighbors import knn_graph
    from neardup.dedup.large import ivf_knn

    if len(X) == 0:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.int64)
    if isinstance(X, StoredRows):
        V = X.search_vectors(show_progress=show_progress)
        if len(X) > exact_limit:
            return ivf_knn(V, k, show_progress=show_progress)
        X = V
    index = "flat" if len(X) <= exact_limit else f"IVF{int(4 * np.sqrt(len(X)))},Flat"
    D, idx = knn_graph(X, min(k, len(X)), "cosine", index, show_progress=show_progress)
    return np.where(idx >= 0, 1.0 - D, -np.inf).astype(np.float32), idx


def group_contents(X: np.ndarray | StoredRows, sims: np.ndarray, nbrs: np.ndarray, threshold: float,
                   centre_margin: float, *, offset: np.ndarray | None = None,
                   min_pair_share: float = MIN_PAIR_SHARE, max_bridge: float = MAX_BRIDGE) -> np.ndarray:
    """Group label of each content row of the k-NN lists (sims, nbrs) (see :func:`group_graph`)."""
    return group_graph(X, KnnLists(sims, nbrs), threshold, centre_margin, offset=offset,
                       min_pair_share=min_pair_share, max_bridge=max_bridge)


def group_graph(X: np.ndarray | StoredRows, graph: KnnGraph, threshold: float, centre_margin: float, *,
                offset: np.ndarray | None = None, min_pair_share: float = MIN_PAIR_SHARE,
                max_bridge: float = MAX_BRIDGE) -> np.ndarray:
    """Group label of each content row (components of the threshold graph, split by the star guard and the
    pair-share and bridge rules of :func:`~neardup.dedup.grouping.guarded_groups`).

    Streamed rows were searched in a projection: their edges within
    :data:`~neardup.dedup.large.RESCORE_MARGIN` of the threshold are scored again on the full rows, and the
    centre checks read the full rows of each group, one component at a time
    (:func:`~neardup.dedup.large.guarded_by_component`), so groups are decided on the same similarities as in
    memory.

    Args:
        sims: the k-NN scores, normalised when ``offset`` is given (then every pair's score is
            ``x_i . x_j - offset[i] - offset[j]``: :mod:`neardup.dedup.normalization`).
    """
    from neardup.dedup.grouping import dot_sim, gram, guarded_groups
    from neardup.dedup.large import RESCORE_MARGIN, edge_similarities, guarded_by_component

    if isinstance(X, StoredRows):
        if offset is None:
            r, c, full = graph.scored_edges(X, threshold - RESCORE_MARGIN)
        else:  # normalised lists: rescored on the full rows, then normalised the same way
            r, c, _ = graph.edges(threshold - RESCORE_MARGIN)
            full = edge_similarities(X, r, c) - offset[r] - offset[c]
        return guarded_by_component(len(X), r, c, full, threshold, X.take, threshold - centre_margin,
                                    offset=offset, min_pair_share=min_pair_share, max_bridge=max_bridge)
    r, c, s = graph.edges(threshold)
    return guarded_groups(len(X), r, c, s, threshold, dot_sim(X, offset), centre_threshold=threshold - centre_margin,
                          dense=gram(X, offset), min_pair_share=min_pair_share, max_bridge=max_bridge)


def calibrate(X: np.ndarray | StoredRows, paths: list[str], shas: list[str], graph: KnnGraph,
              extractor: Callable[[], Any], cfg: DedupConfig, out: Path, show_progress: bool = False,
              background: Background | None = None, bias: np.ndarray | None = None) -> Calibration:
    """The threshold reaching ``cfg.precision`` on the collection's own positives and hard negatives.

    ``extractor()`` gives the model (called only when the cached scores cannot be reused). With a ``background``
    (and the contents' ``bias``), ``sims`` are the normalised k-NN scores and every calibration score is
    normalised too, each attacked copy and decoy with its own bias.
    """
    from neardup.dedup import scores
    from neardup.dedup.calibrate import choose_threshold

    rows = scores.sample_rows(shas, cfg.calibration_images, cfg.seed)
    # the draw holds raw scores and biases: beta is applied after, so it is not part of the key
    norm = {} if background is None else {"normalization": {k: v for k, v in background.to_dict().items()
                                                            if k != "beta"}}
    key = scores.cache_key(model=cfg.model, weights=cfg.weights, attacks=cfg.calibration_attacks, seed=cfg.seed,
                           copies=cfg.copies_per_image, rows=[shas[r] for r in rows.tolist()], **norm)
    draw = scores.load_cached(out, key)
    if draw is None:
        draw = scores.score_sample(X, paths, rows, extractor(), cfg.calibration_attacks, cfg.copies_per_image,
                                   cfg.seed, cfg.batch_size, show_progress,
                                   bias=None if background is None else background.bias)
    pos, dec = draw.scores(bias if background is not None else None,
                           background.config.beta if background is not None else 1.0)
    if not len(pos) or not len(dec):
        raise UsageError("calibration needs at least 2 readable images; give --threshold")
    cut = choose_threshold(pos, dec, cfg.precision).threshold
    sample = scores.ScoreSample(pos, dec, scores.neighbour_negatives(rows, graph, cut))
    scores.save(out, key, sample, draw)
    cal = choose_threshold(sample.pos, sample.neg, cfg.precision)
    cal.n_decoys, cal.n_neighbours = len(sample.decoys), len(sample.neighbours)
    return cal


def _keeper(members: list[int], files: list[FileInfo], sizes: dict[int, tuple[int, int]], rule: str) -> int:
    if rule == "largest":
        return min(members, key=lambda i: (-sizes[i][0] * sizes[i][1], -files[i].bytes, i))
    if rule == "smallest-file":
        return min(members, key=lambda i: (files[i].bytes, i))
    if rule == "oldest":
        return min(members, key=lambda i: (files[i].mtime_ns, i))
    if rule == "newest":
        return min(members, key=lambda i: (-files[i].mtime_ns, i))
    return min(members)


def for_extractor(cfg: DedupConfig, extractor: Any) -> DedupConfig:
    """``cfg`` with the model of a given, already loaded ``extractor`` (unchanged without one)."""
    name = getattr(getattr(extractor, "cfg", None), "name", None)
    return cfg if extractor is None or not name or name == cfg.model else replace(cfg, model=name)


# ---------------------------------------------------------------------------------------------------- the call
def find_duplicates(paths: list[str], out: str | os.PathLike, config: DedupConfig | None = None, *,
                    against: list[str] | None = None, extractor: Any = None,
                    show_progress: bool = False, ray: RayConfig | None = None) -> DedupResult:
    """Exact and near duplicates among the images of ``paths`` (or, with ``against``, copies of those images).

    Args:
        paths: folders, list files or feature folders of images (all their images form the collection).
        out: the scan folder: caches live here, so a re-run (or one with more images) reuses them. The caller owns
            it (the CLI claims it with :func:`neardup.outdir.claim_out_dir`); nothing is written outside it.
        config: options (default: bundled model, calibrated threshold at precision 0.995).
        against: reference folders: then only groups holding an image of ``paths`` and a reference are kept, with a
            reference as the keeper. The groups are those of a scan of both, restricted.
        extractor: a loaded extractor to reuse (tests, notebooks); the scan records its model, whatever
            ``config.model`` says (:func:`for_extractor`), so its features are never filed under another name.
        ray: a :class:`neardup.scaleout.engine.RayConfig`: the features are extracted and the k-NN graph is
            searched on Ray (:mod:`neardup.scaleout`); the groups are those of a run without it.

    Raises:
        UsageError: bad options or inputs.
    """
    cfg = for_extractor((config or DedupConfig()).validate(), extractor)
    if ray is None:
        return _find(paths, Path(out), cfg, against, extractor, show_progress, None)
    if extractor is not None:
        raise ValueError("with ray, the encode actors build their own extractor: pass config, not extractor")
    if cfg.normalization() is not None:
        raise UsageError("--normalize-scores does not run with --ray yet: give one of them")
    from neardup.scaleout.engine import ray_session

    with ray_session(ray.validate()) as cluster:
        return _find(paths, Path(out), cfg, against, None, show_progress, (ray, cluster))


def _find(paths: list[str], out: Path, cfg: DedupConfig, against: list[str] | None, extractor: Any,
          show_progress: bool, on_ray: Any) -> DedupResult:
    from contextlib import ExitStack

    from neardup.dedup.features import FeatureCache
    from neardup.dedup.inventory import image_size, pixel_digest

    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    stores: list[Path] = []
    own = collect_paths(paths, stores)
    refs = collect_paths(against, stores) if against else []
    both = sorted(set(own) & set(refs))
    if both:
        raise UsageError(f"{len(both)} file(s) are both in PATH and in --against, e.g. {both[0]}")
    all_paths = sorted(set(own) | set(refs))
    norm = cfg.normalization()
    if norm is not None:
        from neardup.dedup.normalization import check_apart

        check_apart(norm.background, [*paths, *(against or [])], all_paths)  # before any long work
    ref_set = set(refs)
    files = _scan(all_paths, out, show_progress, on_ray)
    reference = np.array([f.path in ref_set for f in files], dtype=bool)
    timings["hash"] = time.perf_counter() - t

    t = time.perf_counter()
    cache = FeatureCache(out / "features", cfg.model, cfg.weights,
                         {"batch_size": cfg.batch_size, "workers": cfg.workers, "device": cfg.device,
                          "engine": cfg.engine})
    if extractor is not None:
        cache.use_extractor(extractor)
    cache.ray = on_ray[0] if on_ray else None
    cache.adopt(stores)
    vec = cache.vectors(files, show_progress, stream_above=cfg.exact_limit)
    X, row = vec.X, vec.row
    first_file = {int(r): i for i, r in reversed(list(enumerate(row.tolist()))) if r >= 0}
    content_paths = [files[first_file[r]].path for r in range(len(X))]
    timings["features"] = time.perf_counter() - t

    background = bias = offset = None
    if norm is not None:
        from neardup.dedup.normalization import load_background
        from neardup.extract.space import FeatureSpace

        t = time.perf_counter()
        ext = cache.extractor()
        background = load_background(norm, out, [*paths, *(against or [])], all_paths,
                                     FeatureSpace.of_extractor(ext), ext.metric,
                                     lambda src, dest: cache.extract_into(src, dest, show_progress))
        bias = background.bias(X)
        offset = background.offsets(bias)
        timings["background"] = time.perf_counter() - t

    with ExitStack() as held:
        t = time.perf_counter()
        graph = _graph(X, cfg, on_ray, out, vec.sha, vec.model, held, show_progress)
        if background is not None and bias is not None and isinstance(graph, KnnLists):
            # the raw search's k candidates, then their scores normalised
            from neardup.dedup.normalization import normalise_knn

            graph = KnnLists(normalise_knn(graph.sims, graph.nbrs, bias, background.config.beta), graph.nbrs)
        timings["knn"] = time.perf_counter() - t

        t = time.perf_counter()
        searched = getattr(graph, "seconds", 0.0)  # a Ray graph searches when first asked: that time is k-NN's
        calibration = None
        threshold = cfg.threshold
        if threshold is None:
            calibration = calibrate(X, content_paths, vec.sha, graph, cache.extractor, cfg, out, show_progress,
                                    background, bias)
            threshold = calibration.threshold
        moved = getattr(graph, "seconds", 0.0) - searched
        timings["calibrate"] = time.perf_counter() - t - moved
        timings["knn"] += moved

        t = time.perf_counter()
        content_group = (group_graph(X, graph, threshold, cfg.centre_margin, offset=offset,
                                     min_pair_share=cfg.min_pair_share, max_bridge=cfg.max_bridge)
                         if len(X) else np.zeros(0, int))
        pair_edges = graph.edges(threshold)
    label = np.where(row >= 0, content_group[np.maximum(row, 0)] if len(X) else -1, -1)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(label.tolist()):
        if g >= 0:
            members.setdefault(g, []).append(i)
    members = {g: m for g, m in members.items() if len(m) > 1}
    if against:
        members = {g: m for g, m in members.items() if reference[m].any() and (~reference[m]).any()}
    sizes = {i: image_size(files[i].path) for m in members.values() for i in m}
    scores_ = np.ones(len(files), dtype=np.float32)
    kinds = ["unreadable" if row[i] < 0 else "unique" for i in range(len(files))]
    group = np.full(len(files), -1, dtype=np.int64)
    keepers: dict[int, int] = {}
    pixels: dict[int, str | None] = {}

    def digest(i: int) -> str | None:
        if i not in pixels:
            pixels[i] = pixel_digest(files[i].path)
        return pixels[i]

    for new, (_, m) in enumerate(sorted(members.items(), key=lambda gm: min(gm[1]))):
        pool = [i for i in m if reference[i]] if against else m
        k = _keeper(pool, files, sizes, cfg.keep)
        keepers[new] = k
        kinds[k] = "keeper"
        group[m] = new
        shift = (lambda a, b: 0.0) if offset is None else (lambda a, b: float(offset[row[a]] + offset[row[b]]))
        scores_[k] = 1.0 - shift(k, k)
        for i in m:
            if i == k:
                continue
            s = float(X[row[i]] @ X[row[k]])  # raw: the pixel check is about identical images
            same = row[i] == row[k] or (s >= PIXEL_CHECK and digest(i) is not None and digest(i) == digest(k))
            scores_[i] = (1.0 if same else s) - shift(i, k)
            kinds[i] = "exact" if same else "near"
    pairs = _pairs(group, row, pair_edges, files, offset)
    timings["group"] = time.perf_counter() - t
    return DedupResult(files, group, keepers, scores_, kinds, reference, pairs, float(threshold), calibration,
                       vec.reasons, vec.model, {k: round(v, 3) for k, v in timings.items()}, bool(against),
                       None if background is None else background.to_dict())


def _pairs(group: np.ndarray, row: np.ndarray, threshold_edges: tuple[np.ndarray, np.ndarray, np.ndarray],
           files: list[FileInfo], offset: np.ndarray | None = None) -> list[tuple[int, int, float]]:
    """Every kept edge inside a group (file indices, score): k-NN edges at the threshold between files of
    the same group, and each exact copy to the first file of its content (1, less the offsets when normalised)."""
    files_of_row: dict[int, list[int]] = {}
    for i, r in enumerate(row.tolist()):
        if r >= 0 and group[i] >= 0:
            files_of_row.setdefault(r, []).append(i)
    out: list[tuple[int, int, float]] = []
    for r, fs in files_of_row.items():
        same = 1.0 if offset is None else float(1.0 - 2 * offset[r])
        out.extend((fs[0], j, same) for j in fs[1:] if group[j] == group[fs[0]])
    seen: set[tuple[int, int]] = set()
    r_, c_, s_ = threshold_edges
    for a_row, b_row, s in zip(r_.tolist(), c_.tolist(), s_.tolist(), strict=True):
        for a in files_of_row.get(a_row, [])[:1]:
            for b in files_of_row.get(b_row, [])[:1]:
                key = (min(a, b), max(a, b))
                if group[a] == group[b] and key not in seen:
                    seen.add(key)
                    out.append((key[0], key[1], float(s)))
    return sorted(out)


def _graph(X: np.ndarray | StoredRows, cfg: DedupConfig, on_ray: Any, out: Path, shas: list[str], model: str,
           held: Any, show_progress: bool) -> KnnGraph:
    """The k-NN graph: :func:`knn`'s lists in this process, or edge shards under ``out/graph`` on Ray."""
    if on_ray is None or not len(X):
        return KnnLists(*knn(X, cfg.k, cfg.exact_limit, show_progress))
    import hashlib

    from neardup.scaleout.knn import CALIBRATION_HEADROOM, dedup_graph

    ray_cfg, cluster = on_ray
    identity = {"model": model, "contents_sha256": hashlib.sha256("\n".join(shas).encode()).hexdigest(),
                "exact_limit": cfg.exact_limit}
    headroom = CALIBRATION_HEADROOM if cfg.threshold is None else 0.0
    graph: KnnGraph = held.enter_context(dedup_graph(X, cfg.k, cfg.exact_limit, cluster, cluster.shards(ray_cfg.actors),
                                                     out / "graph", identity, show_progress, headroom=headroom))
    if cfg.threshold is not None:  # search now, at the floor the grouping needs (timed as k-NN)
        graph.edges(cfg.threshold)
    return graph


def config_dict(cfg: DedupConfig) -> dict[str, Any]:
    return asdict(cfg)
