"""The registry of clustering methods and the sweep that reuses each method's expensive step.

A sweep never recomputes what does not depend on the swept value: the
hierarchical tree is built once and cut per threshold, DBSCAN's range graph is
built once at the largest eps, the graph method's k-NN search runs once.
Adding a method means one :func:`register_method` call (and, optionally, a
faster sweep function).
"""

from __future__ import annotations

import time
from collections.abc import Callable
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

SweepFn = Callable[[np.ndarray, dict[str, Any], str, list[float]], "SweepOutput"]


@dataclass
class SweepOutput:
    labels: list[np.ndarray]
    seconds: list[float]  # per setting; the shared step is charged to the first
    linkage: np.ndarray | None = None  # hierarchical only: for the dendrogram


@dataclass(frozen=True)
class Method:
    name: str
    estimator: type
    function: Callable[..., np.ndarray]
    sweep_param: str  # what --sweep varies by default
    int_params: tuple[str, ...]
    doc: str
    fast_sweep: SweepFn | None = field(default=None, compare=False)

    def params(self) -> list[str]:
        return list(self.estimator().get_params())


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown clustering method {name!r}; use one of {', '.join(METHODS)}")
    return METHODS[name]


def _cast(method: Method, name: str, value: float) -> Any:
    return int(value) if name in method.int_params else float(value)


def _generic_sweep(method: Method) -> SweepFn:
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
    first = {name: int(values[0]) if name == "n_clusters" else float(values[0])}
    est = HierarchicalClustering(**base, **first).fit(X)
    labels, secs = [est.labels_], [time.perf_counter() - t0]
    for v in values[1:]:
        t0 = time.perf_counter()
        labels.append(cut_linkage(est.linkage_matrix_, len(X), **{name: int(v) if name == "n_clusters" else float(v)}))
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


register_method(Method("hierarchical", HierarchicalClustering, hierarchical_clustering, "distance_threshold",
                       ("n_clusters", "max_memory"), "scipy agglomerative clustering (dense: up to ~20-50K images)",
                       _hierarchical_sweep))
register_method(Method("dbscan", DBSCANClustering, dbscan_clustering, "eps", ("min_samples",),
                       "DBSCAN on an exact faiss range-search graph", _dbscan_sweep))
register_method(Method("hdbscan", HDBSCANClustering, hdbscan_clustering, "cluster_selection_epsilon",
                       ("min_cluster_size", "min_samples"), "HDBSCAN (hdbscan package): varying density"))
register_method(Method("graph", GraphClustering, graph_clustering, "threshold", ("k", "pca", "ef_search", "seed"),
                       "connected components of a thresholded faiss k-NN graph (millions of images)", _graph_sweep))


#: Distance parameters and their smallest value (eps must be > 0, the others >= 0).
RADIUS_PARAMS = {"distance_threshold": 0.0, "threshold": 0.0, "cluster_selection_epsilon": 0.0, "eps": None}


def check_sweep_values(method: Method, name: str, values: list[float]) -> None:
    """Refuse a sweep that is too long or has values its parameter cannot take (nan, inf, negative, fractional).

    Why here: a fast sweep passes only its first value through the estimator's own checks.
    """
    if len(values) > MAX_SETTINGS:
        raise ValueError(f"a sweep of {len(values)} settings; at most {MAX_SETTINGS} are allowed "
                         f"(use a larger step)")
    for v in values:
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool) or not np.isfinite(v):
            raise ValueError(f"sweep value {v!r} of {name} is not a finite number")
        if name in RADIUS_PARAMS and (v < 0 or (RADIUS_PARAMS[name] is None and v == 0)):
            raise ValueError(f"sweep value {v:g} of {name} must be {'>= 0' if RADIUS_PARAMS[name] == 0 else '> 0'}")
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
        if method == "hierarchical":
            est = HierarchicalClustering(**params).fit(X)
            return SweepOutput([est.labels_], [time.perf_counter() - t0], est.linkage_matrix_)
        return SweepOutput([m.function(X, **params)], [time.perf_counter() - t0])
    if not values:
        raise ValueError("empty sweep")
    check_sweep_values(m, name, values)
    if name == "n_clusters" or name == "distance_threshold":
        params = {k: v for k, v in params.items() if k not in ("n_clusters", "distance_threshold")}
    return (m.fast_sweep or _generic_sweep(m))(X, params, name, [float(v) for v in values])
