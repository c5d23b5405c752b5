"""The vector layer: metric names, L2 normalisation, the vectors faiss sees, PCA and k-means.

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

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (faiss' own serialisation of the fitted matrix), so Ray workers can apply it."""
        import faiss

        fx: Any = faiss  # the stubs know only the file-name overloads
        state = dict(self.__dict__)
        if "matrix_" in state:
            writer = fx.VectorIOWriter()
            fx.write_VectorTransform(self.matrix_, writer)
            state["matrix_"] = fx.vector_to_array(writer.data)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import faiss

        fx: Any = faiss
        self.__dict__.update(state)
        if "matrix_" in state:
            reader = fx.VectorIOReader()
            fx.copy_array_to_vector(np.asarray(state["matrix_"], dtype=np.uint8), reader.data)
            read = fx.read_VectorTransform(reader)
            read.thisown = False  # the downcast proxy owns (and frees) the matrix, not this temporary one
            matrix = fx.downcast_VectorTransform(read)
            matrix.thisown = True
            self.matrix_ = matrix


def kmeans_plusplus(x: np.ndarray, k: int, seed: int = 0, block: int = 65536) -> np.ndarray:
    """Indices of ``k`` initial centroids by greedy k-means++ seeding (Arthur & Vassilvitskii, k-means++: the
    advantages of careful seeding, SODA 2007; greedy as in scikit-learn): each step draws 2 + log(k) candidates
    with probability proportional to their squared distance from the nearest centroid chosen so far, and keeps
    the one that lowers the total the most. Seeded; O(n k d log k).

    Why: faiss starts from k random vectors, which on well-separated groups often puts two centroids in one group
    and none in another (a local minimum more iterations do not leave).
    """
    rng = np.random.default_rng(seed)
    n = len(x)
    trials = 2 + int(np.log(max(k, 1)))

    def sq_dist(i: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float64)
        for s in range(0, n, block):
            out[s:s + block] = ((x[s:s + block] - x[i]) ** 2).sum(axis=1)
        return out

    chosen = [int(rng.integers(n))]
    d2 = sq_dist(chosen[0])
    for _ in range(1, k):
        total = d2.sum()
        cands = rng.choice(n, size=trials, p=d2 / total) if total > 0 else rng.integers(n, size=trials)
        best, best_d2 = -1, d2
        for c in cands:
            new = np.minimum(d2, sq_dist(int(c)))
            if best < 0 or new.sum() < best_d2.sum():
                best, best_d2 = int(c), new
        chosen.append(best)
        d2 = best_d2
    return np.array(chosen, dtype=np.int64)


class KMeans:
    """k-means (faiss ``Kmeans``): k-means++ seeding, then Lloyd iterations; spherical (unit centroids) for cosine.

    Why faiss': float32 and multi-threaded, with results that do not depend on the thread count, and the
    same k-means an IVF index trains its coarse quantizer with.

    Args:
        k: clusters (1 to the number of vectors).
        niter: Lloyd iterations.
        seed: seed of the initial centroids (and of faiss' training sample beyond 256 vectors per centroid).
        spherical: L2-normalise the centroids after each iteration (k-means for unit vectors / cosine).
        init: ``k-means++`` (:func:`kmeans_plusplus`, on a seeded sample of at most ``INIT_SAMPLE`` vectors) or
            ``random`` (faiss' own: k random vectors).
        name: how the caller's user spells the k option, for error messages.

    Attributes:
        centroids_: (k, d) float32.
        objective_: the final sum of squared distances (spherical: of similarities) to the nearest centroid.
    """

    #: most vectors k-means++ seeding reads (a seeded sample beyond that): it costs O(sample x k x d)
    INIT_SAMPLE = 100_000

    def __init__(self, k: int, niter: int = 20, seed: int = 0, spherical: bool = False, init: str = "k-means++",
                 name: str = "k") -> None:
        self.k = k
        self.niter = niter
        self.seed = seed
        self.spherical = spherical
        self.init = init
        self.name = name

    def fit(self, x: np.ndarray) -> KMeans:
        """Fit on ``x`` (n, d).

        Raises:
            UsageError: k outside 1..n, niter < 1 or an unknown init (faiss would abort or fail obscurely).
        """
        import faiss

        x = np.ascontiguousarray(x, dtype=np.float32)
        n, d = x.shape
        k = int(self.k)
        if not 1 <= k <= n:
            raise UsageError(f"{self.name} {self.k} must be between 1 and the number of vectors {n}")
        if int(self.niter) < 1:
            raise UsageError(f"k-means needs at least 1 iteration, got {self.niter}")
        if self.init not in ("k-means++", "random"):
            raise UsageError(f"unknown k-means init {self.init!r}; use k-means++ or random")
        start = None
        if self.init == "k-means++":
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(n, self.INIT_SAMPLE, replace=False)) if n > self.INIT_SAMPLE else None
            xs = x if sample is None else x[sample]
            start = np.ascontiguousarray(xs[kmeans_plusplus(xs, k, int(self.seed))])
            if self.spherical:
                start = l2_normalize(start)
        # min_points_per_centroid=1: no warning for small sets (faiss asks for 39 per centroid)
        km = faiss.Kmeans(d, k, niter=int(self.niter), seed=int(self.seed), spherical=bool(self.spherical),
                          min_points_per_centroid=1, verbose=False)
        km.train(x, init_centroids=start)
        self.centroids_ = np.ascontiguousarray(km.centroids, dtype=np.float32)
        obj: Any = km.obj if km.obj is not None else []
        self.objective_ = float(obj[-1]) if len(obj) else 0.0
        self.index_ = km.index
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n,) int64 index of each row's nearest centroid (L2; for unit vectors and centroids, cosine)."""
        _, ids = self.index_.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        return ids[:, 0].astype(np.int64)
