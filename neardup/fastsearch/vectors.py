"""The vector layer: metric names, L2 normalisation, the vectors faiss sees, and PCA.

Why one module: search, indexes, ground truth, clustering, feature transforms and the
fine-tuning diagnostics all normalise vectors, name metrics and project features. Written
once here, a cosine score means the same thing everywhere.

Metrics (:data:`METRICS`): ``l2`` (squared Euclidean distance in faiss; ``euclidean`` is
accepted as its alias, see :func:`canonical_metric`), ``cosine`` (inner product of
L2-normalised vectors), ``l1``, ``js`` (Jensen-Shannon of vectors normalised to sum 1) and
``hamming`` (packed bits).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from neardup.errors import UsageError


@dataclass(frozen=True)
class Metric:
    """How one metric maps onto faiss and how vectors are prepared for it."""

    name: str
    faiss_metric: str  # attribute of the faiss module
    distance: bool  # faiss returns distances (lower = better); scores are their negation
    binary: bool = False
    doc: str = ""


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("l2", "METRIC_L2", True, doc="squared Euclidean distance (alias: euclidean)"),
    Metric("cosine", "METRIC_INNER_PRODUCT", False, doc="inner product of L2-normalised vectors"),
    Metric("l1", "METRIC_L1", True, doc="Manhattan distance (flat storage only)"),
    Metric("js", "METRIC_JensenShannon", True,
           doc="Jensen-Shannon divergence of non-negative vectors normalised to sum 1 (flat storage only)"),
    Metric("hamming", "METRIC_L2", True, binary=True, doc="Hamming distance of packed bits (binary indexes)"),
)}
#: Other spellings users type, and the metric they mean.
METRIC_ALIASES: dict[str, str] = {"euclidean": "l2"}


def canonical_metric(name: str, allowed: Iterable[str] | None = None) -> str:
    """The one library name of a metric (``euclidean`` -> ``l2``).

    Args:
        allowed: the metrics the caller supports [default: all of :data:`METRICS`].

    Raises:
        UsageError: an unknown metric, or one outside ``allowed`` (listing those that are).
    """
    allowed = tuple(allowed) if allowed is not None else tuple(METRICS)
    canon = METRIC_ALIASES.get(name, name) if isinstance(name, str) else name
    if canon not in allowed:
        names = [f"{m} (or {', '.join(a for a, c in METRIC_ALIASES.items() if c == m)})"
                 if m in METRIC_ALIASES.values() else m for m in allowed]
        raise UsageError(f"unknown metric {name!r}; use one of {', '.join(names)}")
    return canon


def get_metric(name: str) -> Metric:
    """The :class:`Metric` called ``name`` (aliases accepted); UsageError for an unknown one."""
    return METRICS[canonical_metric(name)]


def l2_normalize(x: np.ndarray, dtype: Any = np.float32, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new C-contiguous ``dtype`` array (None: ``x``'s own dtype).

    Rows with a norm below ``eps`` are divided by ``eps`` (all-zero rows stay zero);
    callers that must refuse zero rows check first and pass ``eps=0``.
    """
    x = np.ascontiguousarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / (np.maximum(norms, eps) if eps else norms)


def prepare_vectors(x: np.ndarray, metric: str) -> np.ndarray:
    """The vectors faiss should see for ``metric``: contiguous float32 (uint8 bits for hamming).

    cosine: L2-normalised rows; js: rows scaled to sum 1 (negative entries are
    an error: JS is defined for distributions). Returns a new array unless no
    conversion is needed (then possibly ``x`` itself).

    Raises:
        UsageError: float features with hamming, bits with a float metric, negative values with js.
    """
    m = get_metric(metric)
    if m.binary:
        if x.dtype != np.uint8:
            raise UsageError(f"hamming needs packed-bit (uint8) features, got {x.dtype}")
        return np.ascontiguousarray(x)
    if x.dtype == np.uint8:
        raise UsageError(f"these features are binary hashes: use metric hamming, not {metric}")
    if m.name == "cosine":
        return l2_normalize(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if m.name == "js":
        if x.size and x.min() < 0:
            raise UsageError("metric js needs non-negative features (probability-like vectors); "
                             "these have negative entries: use cosine, l2 or l1")
        return x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
    return x


class PCA:
    """PCA to ``d_out`` dimensions (faiss ``PCAMatrix``), fitted once and applied block by block.

    Why faiss' and not sklearn's: it is float32 throughout and is the same transform a
    ``PCA64,...`` factory string would train, so projected features and indexes agree.

    Args:
        d_out: output dimensions (1 to the input dimension).
        normalize: L2-normalise the projected rows (cosine stays cosine, now in the reduced space).
        name: how the caller's user spells the option, for error messages (``--pca``, ``pca``).

    Attributes:
        matrix_: the trained ``faiss.PCAMatrix``.
    """

    def __init__(self, d_out: int, normalize: bool = False, name: str = "pca") -> None:
        self.d_out = d_out
        self.normalize = normalize
        self.name = name

    def fit(self, x: np.ndarray, source: str = "vectors") -> PCA:
        """Fit on ``x`` (n, d), float32.

        Args:
            source: what ``x`` is, for the message when there are too few rows.

        Raises:
            UsageError: ``d_out`` outside 1..d, or fewer rows than ``d_out`` (faiss would abort: a PCA
                fitted on n vectors has at most n components).
        """
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        d_out = int(self.d_out)
        if not 0 < d_out <= d:
            raise UsageError(f"{self.name} {d_out} must be between 1 and the feature dimension {d}")
        if n < d_out:
            raise UsageError(f"{self.name} {d_out} needs at least {d_out} {source} to fit the projection, but "
                             f"there are only {n}: use {self.name} <= {n}, or no {self.name}")
        self.matrix_ = faiss.PCAMatrix(d, d_out)
        self.matrix_.train(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, d_out) float32, C-contiguous."""
        y = self.matrix_.apply(np.ascontiguousarray(x, dtype=np.float32))
        return l2_normalize(y) if self.normalize else np.ascontiguousarray(y)
