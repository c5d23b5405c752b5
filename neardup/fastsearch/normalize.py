"""Score normalisation against a background set: subtract from a query's scores its similarity to images
known to be unrelated, so scores of different queries become comparable.

Why: a query that resembles many images (a texture, a sky, a page of text) scores high against everything,
its true copy and its false matches alike; another query's true copy may score lower than that query's
false matches. One global threshold (dedup, ``query`` cut-offs) and µAP, which ranks every (query,
candidate) pair together, suffer. Subtracting ``beta`` times the query's similarity to its nearest
neighbours in a *background* set (images of the same kind that are copies of nothing searched) calibrates
each query. A query's own ranking is unchanged: one amount is subtracted from all its scores (SSCD's
README: score normalisation "has no effect on ranking metrics"), so recall@k and mAP stay as they were.

    normalised(q, x) = s(q, x) - beta * bias(q)
    bias(q) = mean of s(q, b_1..b_k)   (``reduction="mean"``: SSCD)
            = s(q, b_k)                (``reduction="kth"``: the ISC 2021 baseline's ``min``)

with ``b_i`` the i-th nearest background vector. References: Pizzi et al., "A Self-Supervised Descriptor for
Image Copy Detection" (SSCD), CVPR 2022, and its ``sscd/disc_eval.py`` (``apply_score_norm``; default
``--score_norm 1.0[0,2]``: beta 1, the mean over neighbours 1-3); Douze et al., "The 2021 Image Similarity
Dataset and Challenge", and the isc2021 repository's ``scripts/score_normalization.py`` (``--factor`` beta,
default 1.0; ``--n`` k with ``--reduction min``, the k-th score; its docs use ``--factor 2.0 --n 10``).

Scores are neardup's similarities (higher = more similar): the cosine for ``cosine``, the negated squared
distance for ``l2`` (and the negated bit count for ``hamming``). For l2 the bias is then minus the squared
distance to the background neighbours, and ``normalised = beta * d2(q, b) - d2(q, x)``; for unit vectors
``-d2 = 2 cos - 2``, so l2 normalisation ranks every pair exactly as cosine normalisation does.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.vectors import canonical_metric, prepare_vectors

if TYPE_CHECKING:
    from neardup.extract.space import FeatureSpace

#: how the k background similarities become one bias: SSCD's mean of 1..k, or ISC 2021's k-th
REDUCTIONS = ("mean", "kth")
#: background rows searched at a time, and queries per search: memory stays O(block x k)
BLOCK = 65536
#: metrics whose scores can be normalised (those the exact search returns as similarities)
NORM_METRICS = ("cosine", "l2", "hamming")


@dataclass
class ScoreNormalization:
    """``--normalize-scores BACKGROUND --norm-k K --norm-beta BETA --norm-reduction mean|kth``.

    Attributes:
        background: a feature folder (``neardup extract``) in the queries' feature space, or images (a folder
            or list file) to be extracted like them.
        k: background neighbours per query (SSCD: 3). beta: weight of the bias (SSCD, ISC: 1.0).
        reduction: ``mean`` of the k similarities (SSCD) or the ``kth`` one (ISC 2021).
    """

    background: str
    k: int = 3
    beta: float = 1.0
    reduction: str = "mean"

    def validate(self) -> ScoreNormalization:
        """Returns ``self``.

        Raises:
            UsageError: the first bad value, named by its flag.
        """
        if not isinstance(self.background, (str, os.PathLike)) or not os.fspath(self.background):
            raise UsageError(f"--normalize-scores must be a path, got {self.background!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 10_000:
            raise UsageError(f"--norm-k must be an integer from 1 to 10000, got {self.k!r}")
        if (isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta)
                or not 0 <= self.beta <= 10):
            raise UsageError(f"--norm-beta must be a number from 0 to 10, got {self.beta!r}")
        if self.reduction not in REDUCTIONS:
            raise UsageError(f"unknown --norm-reduction {self.reduction!r}; use {' or '.join(REDUCTIONS)}")
        return self

    @classmethod
    def from_options(cls, background: str | None, k: int | None = None, beta: float | None = None,
                     reduction: str | None = None) -> ScoreNormalization | None:
        """The validated config of the CLI's options (None without ``--normalize-scores``).

        Raises:
            UsageError: ``--norm-*`` without ``--normalize-scores``, or a bad value.
        """
        given: dict[str, Any] = {"k": k, "beta": beta, "reduction": reduction}
        if background is None:
            orphans = [f"--norm-{name}" for name, v in given.items() if v is not None]
            if orphans:
                verb = "applies" if len(orphans) == 1 else "apply"
                raise UsageError(f"{', '.join(orphans)} {verb} only with --normalize-scores BACKGROUND")
            return None
        return cls(background, **{name: v for name, v in given.items() if v is not None}).validate()

    def to_dict(self) -> dict[str, Any]:
        return {"background": os.fspath(self.background), "k": self.k, "beta": float(self.beta),
                "reduction": self.reduction}


# --------------------------------------------------------------------------- pure functions
def _blocks(x: np.ndarray, size: int) -> Iterator[tuple[int, np.ndarray]]:
    for off in range(0, len(x), size):
        yield off, x[off:off + size]


def background_bias(queries: np.ndarray, background: np.ndarray, k: int = 3, metric: str = "cosine",
                    reduction: str = "mean", block: int = BLOCK) -> np.ndarray:
    """Each query's similarity to its ``k`` nearest background vectors, reduced to one number: (Q,) float32.

    Exact search through faiss (the package's one exact k-NN), streaming the background in blocks of
    ``block`` rows and the queries in batches of ``block``, so a background of millions fits in memory.

    Args:
        queries, background: raw vectors of one feature space (prepared for ``metric`` here).
        metric: cosine, l2 or hamming; similarities are cosines, negated squared distances, negated bit counts.
        reduction: ``mean`` of the k similarities (SSCD) or the ``kth`` (ISC 2021).

    Raises:
        UsageError: an empty background, ``k`` larger than it, another metric or reduction.
    """
    from neardup.fastsearch.groundtruth import exact_knn

    metric = canonical_metric(metric, NORM_METRICS)
    if reduction not in REDUCTIONS:
        raise UsageError(f"unknown --norm-reduction {reduction!r}; use {' or '.join(REDUCTIONS)}")
    if not len(background):
        raise UsageError("the score-normalisation background holds no vectors")
    if k > len(background):
        raise UsageError(f"--norm-k {k} exceeds the {len(background)} vectors of the background")
    bias = np.empty(len(queries), dtype=np.float32)
    for off, q in _blocks(queries, block):
        sims, _ = exact_knn(_blocks(background, block), prepare_vectors(q, metric), k, metric)
        bias[off:off + len(q)] = sims.mean(axis=1) if reduction == "mean" else sims[:, k - 1]
    return bias


def normalize_scores(scores: np.ndarray, bias: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """``scores - beta * bias``: ``bias`` per row (Q,) or per entry (same shape); -inf padding stays -inf."""
    bias = np.asarray(bias, dtype=np.float32)
    if bias.ndim == 1:
        bias = bias[:, None]
    out = np.asarray(scores, dtype=np.float32) - np.float32(beta) * bias
    return np.where(np.isneginf(scores), -np.inf, out).astype(np.float32)


def rerank(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by score, best first (ties keep their order; -1 padding last): after per-entry biases."""
    order = np.argsort(-np.where(ids < 0, -np.inf, scores), axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def normalize_edges(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, bias: np.ndarray, beta: float = 1.0,
                    symmetric: bool = True) -> np.ndarray:
    """Normalised similarities of the edges of a k-NN graph over one collection (dedup's pairs).

    ``bias`` is each node's :func:`background_bias`. ``symmetric``: subtract the mean of both ends' biases,
    so (i, j) and (j, i) get one score (an undirected graph); else the source's (``rows``), as for queries.
    The background must be images that are copies of nothing in the collection: the collection itself
    would put each image's own duplicates into its bias.
    """
    bias = np.asarray(bias, dtype=np.float32)
    b = (bias[rows] + bias[cols]) / 2 if symmetric else bias[rows]
    return (np.asarray(sims, dtype=np.float32) - np.float32(beta) * b).astype(np.float32)


# --------------------------------------------------------------------------- the background
@dataclass
class BackgroundNormalizer:
    """A loaded background and its config: ``apply`` normalises a search's (scores, ids)."""

    config: ScoreNormalization
    background: np.ndarray
    metric: str
    source: str  # "features" | "images"

    def apply(self, queries: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (scores, ids) of the raw ``queries``' search results, rows re-sorted by the new scores."""
        bias = background_bias(queries, self.background, self.config.k, self.metric, self.config.reduction)
        return rerank(normalize_scores(scores, bias, self.config.beta), ids)

    def to_dict(self) -> dict[str, Any]:
        """What a result records so that runs are comparable."""
        return {**self.config.to_dict(), "metric": self.metric, "n_background": int(len(self.background)),
                "background_kind": self.source}

    @classmethod
    def load(cls, config: ScoreNormalization, space: FeatureSpace, metric: str, *,
             cache: str | os.PathLike | None = None, transform_from: str | os.PathLike | None = None,
             workers: int | None = None, show_progress: bool = False,
             reference: str = "the database") -> BackgroundNormalizer:
        """The background of ``config`` in ``space``: a feature folder as it is, or images extracted like it.

        Images are extracted with ``neardup extract``'s pipeline (model, crop and int8 quantisation of
        ``space``; its stored transform from ``transform_from``) into ``cache``/<key> (resumed and reused by
        later runs; key: the background path and the space), or into a temporary folder without ``cache``.
        ``reference`` names the searched side in messages (``the database``, ``the index``).

        Raises:
            UsageError: a missing background, one in another feature space (one line naming the difference),
                images for features of a fine-tuned encoder or with a stored transform and no ``transform_from``.
        """
        from neardup.extract.space import require_same_space
        from neardup.extract.store import FeatureStore

        config.validate()
        path = Path(config.background)
        if canonical_metric(metric) not in NORM_METRICS:
            raise UsageError(f"--normalize-scores applies to {', '.join(NORM_METRICS)} scores, not to {metric}")
        metric = canonical_metric(metric)
        if (path / "meta.json").is_file():
            store = FeatureStore.open(path)
            require_same_space([space, store.space], [reference, f"background {path}"])
            return cls(config, np.asarray(store.features()), metric, "features")
        if not path.exists():
            raise UsageError(f"--normalize-scores {path}: not found (give a feature folder or images)")
        if cache is not None:
            key = hashlib.sha256(repr((os.path.abspath(path), sorted(space.to_dict().items()))).encode())
            return cls(config, _extract_like(path, space, Path(cache) / key.hexdigest()[:12], transform_from,
                                             workers, show_progress, reference), metric, "images")
        with tempfile.TemporaryDirectory(prefix="neardup-background-") as tmp:
            feats = _extract_like(path, space, Path(tmp) / "features", transform_from, workers, show_progress,
                                  reference)
        return cls(config, feats, metric, "images")


def _extract_like(images: Path, space: FeatureSpace, out: Path, transform_from: str | os.PathLike | None,
                  workers: int | None, show_progress: bool, reference: str) -> np.ndarray:
    """Features of ``images`` in ``space``, written to the feature folder ``out`` (resumed if it is there)."""
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features
    from neardup.extract.registry import builder_name
    from neardup.extract.space import require_same_space
    from neardup.extract.store import FeatureStore

    how = f"extract BACKGROUND with `neardup extract` like {reference} and pass that feature folder"
    if builder_name(space.model) != space.model:
        raise UsageError(f"--normalize-scores {images} holds images, but {reference} holds features of a "
                         f"fine-tuned encoder ({space.model}): {how}")
    if space.transform is not None and transform_from is None:
        raise UsageError(f"--normalize-scores {images} holds images, but {reference} holds features with a "
                         f"stored transform (L2/whitening): {how} (with --transform-from)")
    pre = space.preprocessing or {}
    cfg = ExtractConfig(model=space.model, input_size=pre.get("input_size") or None, workers=workers,
                        engine="onnx-int8" if space.quantization else "auto",
                        transform_from=os.fspath(transform_from) if space.transform is not None and transform_from
                        else None)
    extract_features(images, out, cfg, show_progress=show_progress)
    store = FeatureStore.open(out)
    require_same_space([space, store.space], [reference, f"background {images} (extracted)"])
    return np.asarray(store.features())
