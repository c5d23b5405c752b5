"""The registry of clustering methods and the sweep that reuses each method's expensive step.

A method is one :class:`MethodSpec` passed to :func:`register_method`: its
estimator and function twin, the user-facing options it takes, its distance
("radius") parameter and that parameter's default per metric, and what
``--sweep`` varies. The CLI derives its ``--method`` choices, option mapping,
"does not apply" errors and defaults from it, so adding a method is one entry
(plus, optionally, a faster sweep function).

A sweep never recomputes what does not depend on the swept value: the
hierarchical tree is built once and cut per threshold, DBSCAN's range graph is
built once at the largest eps, the graph method's k-NN search runs once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neardup.clustering._common import MAX_SETTINGS
from neardup.clustering.density import (
    DBSCANClustering,
    HDBSCANClustering,
    dbscan_clustering,
    dbscan_from_graph,
    hdbscan_clustering,
)
from neardup.clustering.graph import GraphClustering, components_from_knn, graph_clustering
from neardup.clustering.hierarchical import HierarchicalClustering, cut_linkage, hierarchical_clustering
from neardup.clustering.kmeans import KMeansClustering, kmeans_clustering

SweepFn = Callable[[np.ndarray, dict[str, Any], str, list[float]], "SweepOutput"]


@dataclass
class SweepOutput:
    labels: list[np.ndarray]
    seconds: list[float]  # per setting; the shared step is charged to the first
    linkage: np.ndarray | None = None  # hierarchical only: for the dendrogram


@dataclass(frozen=True, eq=False)
class MethodSpec:
    """Everything neardup needs to know about one clustering method.

    Args:
        name: what users type (``--method NAME``).
        estimator: a scikit-learn style estimator class (``__init__`` stores keyword arguments with
            defaults, ``fit(X)`` sets ``labels_``; a ``linkage_matrix_`` attribute gives a dendrogram).
        function: its function twin, ``function(X, **params) -> labels``.
        sweep_param: the parameter ``--sweep`` varies by default.
        doc: one line for listings.
        options: user-facing option name (the CLI's ``--flag`` with ``_`` for ``-``) -> estimator parameter;
            the other methods' options are refused for this one.
        radius: the distance parameter that gets ``default_radius[metric]`` when neither it (nor one of
            ``cuts``) is given and nothing is swept; a metric without an entry makes it required.
        default_radius: metric -> default value of ``radius``.
        cuts: parameters of which one is given (hierarchical: a distance or a count): sweeping one drops
            the others, and a single run given only another reports that one as its setting.
        required: parameters with no sensible default (k-means' number of clusters): a run without them, and
            without a sweep, is refused.
        int_params: whole-number parameters (sweep values cast, checked >= 1).
        nonnegative, positive: distance parameters whose sweep values must be >= 0, or > 0.
        fast_sweep: a sweep that reuses the expensive step [default: one fit per value].

    Why one record: the CLI, the sweep checks and the tests all read it, so a new method is one entry.
    """

    name: str
    estimator: type
    function: Callable[..., np.ndarray]
    sweep_param: str
    doc: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    radius: str | None = None
    default_radius: Mapping[str, float] = field(default_factory=dict)
    cuts: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    int_params: tuple[str, ...] = ()
    nonnegative: tuple[str, ...] = ()
    positive: tuple[str, ...] = ()
    fast_sweep: SweepFn | None = None

    def params(self) -> list[str]:
        return list(self.estimator().get_params())

    def option_for(self, param: str) -> str | None:
        """The user-facing option that sets ``param`` (None: not exposed)."""
        return next((opt for opt, p in self.options.items() if p == param), None)

    def check(self) -> None:
        """Refuse an entry whose names do not match its estimator's parameters (a typo would surface late)."""
        params = set(self.params())
        named = {"sweep_param": [self.sweep_param], "options": list(self.options.values()),
                 "radius": [self.radius] if self.radius else [], "cuts": list(self.cuts),
                 "required": list(self.required),
                 "int_params": list(self.int_params), "nonnegative": list(self.nonnegative),
                 "positive": list(self.positive)}
        for what, names in named.items():
            unknown = sorted(set(names) - params)
            if unknown:
                raise ValueError(f"method {self.name!r}: {what} names {unknown}, not parameters of "
                                 f"{self.estimator.__name__} ({sorted(params)})")
        if self.default_radius and not self.radius:
            raise ValueError(f"method {self.name!r}: default_radius without a radius parameter")


#: name -> spec, in registration order (the order the CLI lists them).
METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a clustering method; its name must be new.

    Raises:
        ValueError: the name is taken or the spec does not match its estimator.
    """
    if spec.name in METHODS:
        raise ValueError(f"clustering method {spec.name!r} is already registered")
    spec.check()
    METHODS[spec.name] = spec
    return spec


def unregister_method(name: str) -> MethodSpec:
    """Remove a method (tests and plugins that registered one for a while)."""
    return METHODS.pop(name)


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown clustering method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def _cast(method: MethodSpec, name: str, value: float) -> Any:
    return int(value) if name in method.int_params else float(value)


def _generic_sweep(method: MethodSpec) -> SweepFn:
    def run(X: np.ndarray, params: dict[str, Any], name: str, values: list[float]) -> SweepOutput:
        labels, secs = [], []
        for v in values:
            t0 = time.perf_counter()
            labels.append(method.function(X, **{**params, name: _cast(method, name, v)}))
            secs.append(time.perf_counter() - t0)
        return SweepOutput(labels, secs)
    return run


def _hierarchical_sweep(X: np.ndarray, params: dict[str, Any], name: str, values: list[float]) -> SweepOutput:
    if name not in ("distance_threshold", "n_clusters"):
        return _generic_sweep(METHODS["hierarchical"])(X, params, name, values)
    t0 = time.perf_counter()
    base = {k: v for k, v in params.items() if k not in ("distance_threshold", "n_clusters")}
    first: dict[str, Any] = {name: int(values[0]) if name == "n_clusters" else float(values[0])}
    est = HierarchicalClustering(**base, **first).fit(X)
    labels, secs = [est.labels_], [time.perf_counter() - t0]
    for v in values[1:]:
        t0 = time.perf_counter()
        cut: dict[str, Any] = {name: int(v) if name == "n_clusters" else float(v)}
        labels.append(cut_linkage(est.linkage_matrix_, len(X), **cut))
        secs.append(time.perf_counter() - t0)
    return SweepOutput(labels, secs, est.linkage_matrix_)


def _dbscan_sweep(X: np.ndarray, params: dict[str, Any], name: str, values: list[float]) -> SweepOutput:
    if name != "eps":
        return _generic_sweep(METHODS["dbscan"])(X, params, name, values)
    t0 = time.perf_counter()
    est = DBSCANClustering(**{**params, "eps": float(max(values))}).fit(X)
    secs = [time.perf_counter() - t0]
    labels = []
    for i, v in enumerate(values):
        t0 = time.perf_counter()
        labels.append(dbscan_from_graph(est.graph_, float(v), int(est.min_samples)))
        if i:
            secs.append(time.perf_counter() - t0)
        else:
            secs[0] += time.perf_counter() - t0
    return SweepOutput(labels, secs)


def _graph_sweep(X: np.ndarray, params: dict[str, Any], name: str, values: list[float]) -> SweepOutput:
    if name != "threshold":
        return _generic_sweep(METHODS["graph"])(X, params, name, values)
    t0 = time.perf_counter()
    est = GraphClustering(**{**params, "threshold": float(values[0])}).fit(X)
    labels, secs = [est.labels_], [time.perf_counter() - t0]
    for v in values[1:]:
        t0 = time.perf_counter()
        labels.append(components_from_knn(est.knn_distances_, est.knn_indices_, float(v)))
        secs.append(time.perf_counter() - t0)
    return SweepOutput(labels, secs)


#: Default distance thresholds (hierarchical threshold, dbscan eps, graph threshold) per metric; euclidean has
#: no scale that fits every feature, so there the distance must be given.
DEFAULT_RADIUS = {"cosine": 0.1, "hamming": 10.0}

register_method(MethodSpec(
    "hierarchical", HierarchicalClustering, hierarchical_clustering, "distance_threshold",
    "scipy agglomerative clustering (dense: up to ~20-50K images)",
    options={"linkage": "linkage", "threshold": "distance_threshold", "n_clusters": "n_clusters",
             "max_memory": "max_memory"},
    radius="distance_threshold", default_radius=DEFAULT_RADIUS, cuts=("distance_threshold", "n_clusters"),
    int_params=("n_clusters", "max_memory"), nonnegative=("distance_threshold",), fast_sweep=_hierarchical_sweep))
register_method(MethodSpec(
    "dbscan", DBSCANClustering, dbscan_clustering, "eps", "DBSCAN on an exact faiss range-search graph",
    options={"eps": "eps", "min_samples": "min_samples"},
    radius="eps", default_radius=DEFAULT_RADIUS, int_params=("min_samples",), positive=("eps",),
    fast_sweep=_dbscan_sweep))
register_method(MethodSpec(
    "hdbscan", HDBSCANClustering, hdbscan_clustering, "cluster_selection_epsilon",
    "HDBSCAN (hdbscan package): varying density",
    options={"min_cluster_size": "min_cluster_size", "min_samples": "min_samples",
             "selection_epsilon": "cluster_selection_epsilon", "selection_method": "cluster_selection_method"},
    int_params=("min_cluster_size", "min_samples"), nonnegative=("cluster_selection_epsilon",)))
register_method(MethodSpec(
    "graph", GraphClustering, graph_clustering, "threshold",
    "connected components of a thresholded faiss k-NN graph (millions of images)",
    options={"threshold": "threshold", "k": "k", "index": "index", "pca": "pca", "ef_search": "ef_search",
             "seed": "seed"},
    radius="threshold", default_radius=DEFAULT_RADIUS, int_params=("k", "pca", "ef_search", "seed"),
    nonnegative=("threshold",), fast_sweep=_graph_sweep))
register_method(MethodSpec(
    "kmeans", KMeansClustering, kmeans_clustering, "n_clusters",
    "faiss k-means into a given number of clusters (class-level groups; no noise)",
    options={"n_clusters": "n_clusters", "niter": "niter", "seed": "seed"},
    required=("n_clusters",), int_params=("n_clusters", "niter", "seed")))


def check_sweep_values(method: MethodSpec, name: str, values: list[float]) -> None:
    """Refuse a sweep that is too long or has values its parameter cannot take (nan, inf, negative, fractional).

    Why here: a fast sweep passes only its first value through the estimator's own checks.
    """
    if len(values) > MAX_SETTINGS:
        raise ValueError(f"a sweep of {len(values)} settings; at most {MAX_SETTINGS} are allowed "
                         f"(use a larger step)")
    for v in values:
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not np.isfinite(v):
            raise ValueError(f"sweep value {v!r} of {name} is not a finite number")
        if name in method.positive and v <= 0:
            raise ValueError(f"sweep value {v:g} of {name} must be > 0")
        if name in method.nonnegative and v < 0:
            raise ValueError(f"sweep value {v:g} of {name} must be >= 0")
        if name in method.int_params and (v != int(v) or v < 1):
            raise ValueError(f"sweep value {v:g} of {name} must be a whole number >= 1")


def cluster_sweep(X: np.ndarray, method: str, params: dict[str, Any], sweep_param: str | None = None,
                  values: list[float] | None = None) -> SweepOutput:
    """Labels for each value of ``sweep_param`` (one setting when ``values`` is None).

    Args:
        params: the method's keyword arguments (None values dropped, so defaults apply).
        sweep_param: a parameter of the method [default: its usual sweep parameter].

    Raises:
        ValueError: unknown method or parameter, bad values (from the estimators).
    """
    m = get_method(method)
    params = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(params) - set(m.params()))
    if unknown:
        raise ValueError(f"{method} has no parameter(s) {unknown}; valid: {m.params()}")
    name = sweep_param or m.sweep_param
    if name not in m.params():
        raise ValueError(f"cannot sweep {name!r} of {method}; valid: {m.params()}")
    if values is None:
        t0 = time.perf_counter()
        est = m.estimator(**params).fit(X)  # the estimator, not the twin: a tree is kept for the dendrogram
        return SweepOutput([est.labels_], [time.perf_counter() - t0], getattr(est, "linkage_matrix_", None))
    if not values:
        raise ValueError("empty sweep")
    check_sweep_values(m, name, values)
    if name in m.cuts:
        params = {k: v for k, v in params.items() if k not in m.cuts}
    return (m.fast_sweep or _generic_sweep(m))(X, params, name, [float(v) for v in values])
