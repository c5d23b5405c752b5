"""The clustering method registry drives the CLI and these tests: one entry, and a method is offered and tested.

``check_method`` is the registry loop's body: ``test_every_registered_method`` runs it on every entry, and the
toy method below (registered only for the tests that ask for it) shows that a new entry is covered the moment it
is registered, by the loop, by ``run_clustering`` and by ``neardup cluster``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.utils import check_array

from neardup.cli import main
from neardup.cli.cluster import MethodOption, method_params, sweep_name
from neardup.clustering.methods import METHODS, MethodSpec, cluster_sweep, register_method, unregister_method
from neardup.clustering.run import ClusteringOutput, run_clustering
from neardup.errors import UsageError
from tests.helpers import expect_error, invoke

from .conftest import make_store, planted


class EverythingTogether(ClusterMixin, BaseEstimator):
    """A toy method: every image in one cluster, whatever the threshold."""

    def __init__(self, threshold: float = 0.1, metric: str = "cosine") -> None:
        self.threshold = threshold
        self.metric = metric

    def fit(self, X: np.ndarray, y: object = None) -> EverythingTogether:
        X = check_array(X)
        self.n_features_in_ = X.shape[1]
        self.labels_ = np.zeros(len(X), dtype=np.int64)
        return self


def everything_together(X: np.ndarray, threshold: float = 0.1, metric: str = "cosine") -> np.ndarray:
    return EverythingTogether(threshold, metric).fit(X).labels_


TOY = MethodSpec("together", EverythingTogether, everything_together, "threshold", "every image in one cluster",
                 options={"threshold": "threshold"}, radius="threshold", default_radius={"cosine": 0.5},
                 nonnegative=("threshold",))


@pytest.fixture
def toy() -> Iterator[MethodSpec]:
    """The toy method, registered for one test and removed afterwards (so no other test sees it)."""
    register_method(TOY)
    try:
        yield TOY
    finally:
        unregister_method(TOY.name)


def registered() -> list[str]:
    return sorted(METHODS)


def check_method(spec: MethodSpec) -> None:
    """What every registered method must do, read from its entry alone (no per-method knowledge here)."""
    X, _ = planted(n_groups=4, dim=16)
    assert METHODS[spec.name] is spec
    est = spec.estimator()
    assert clone(est).get_params() == est.get_params()  # __init__ only stores
    params = {spec.radius: spec.default_radius["cosine"]} if spec.radius and "cosine" in spec.default_radius else {}
    assert est.set_params(metric="cosine", **params).fit(X) is est
    assert est.labels_.shape == (len(X),) and np.issubdtype(est.labels_.dtype, np.integer)
    np.testing.assert_array_equal(spec.function(X, metric="cosine", **params), est.labels_)  # the function twin
    np.testing.assert_array_equal(clone(est).fit_predict(X), est.labels_)
    # a sweep (fast or generic) gives what one fit per value gives
    values: list[float] = [2, 3] if spec.sweep_param in spec.int_params else [0.05, 0.1]
    base = {k: v for k, v in params.items() if k not in (spec.sweep_param, *spec.cuts)}
    out = cluster_sweep(X, spec.name, {"metric": "cosine", **base}, None, values)
    for v, labels in zip(values, out.labels, strict=True):
        np.testing.assert_array_equal(labels, spec.function(X, metric="cosine", **base, **{spec.sweep_param: v}))
    # the library run reports the method's default sweep parameter
    res = run_clustering(X, spec.name, params, "cosine", attributes=0)
    assert isinstance(res, ClusteringOutput) and res.result.method == spec.name
    assert res.result.sweep_param == spec.sweep_param and len(res.labels) == 1
    assert res.result.to_dict()["schema"] == "neardup.cluster/1"


@pytest.mark.parametrize("name", registered())
def test_every_registered_method(name: str) -> None:
    check_method(METHODS[name])


@pytest.mark.parametrize("name", registered())
def test_every_method_option_is_a_cli_option(name: str) -> None:
    spec = METHODS[name]
    cli = {p.name: p for p in main.commands["cluster"].params}
    for option in spec.options:
        assert isinstance(cli.get(option), MethodOption), f"{name}: no cluster option {option!r}"
    if spec.radius:
        assert spec.option_for(spec.radius), f"{name}: its radius {spec.radius!r} has no option"


def test_every_method_option_belongs_to_a_method() -> None:
    used = {o for spec in METHODS.values() for o in spec.options}
    declared = {p.name for p in main.commands["cluster"].params if isinstance(p, MethodOption)}
    assert declared == used


def test_builtin_mapping_and_defaults_come_from_the_registry() -> None:
    assert method_params("hierarchical", "cosine", {"threshold": None, "linkage": "single"}, False) == \
        {"linkage": "single", "distance_threshold": 0.1}
    assert method_params("hierarchical", "euclidean", {"n_clusters": 3}, False) == {"n_clusters": 3}
    assert method_params("dbscan", "hamming", {}, False) == {"eps": 10.0}
    assert method_params("graph", "euclidean", {}, True) == {}  # a sweep needs no default
    assert method_params("hdbscan", "euclidean", {"selection_epsilon": 0.2}, False) == \
        {"cluster_selection_epsilon": 0.2}
    with pytest.raises(UsageError, match="needs --eps"):
        method_params("dbscan", "euclidean", {}, False)
    with pytest.raises(UsageError, match=r"^-k do\(es\) not apply to --method dbscan; its options: --eps, --min-sam"):
        method_params("dbscan", "cosine", {"k": 5}, False)
    assert sweep_name("hdbscan", "selection-epsilon") == "cluster_selection_epsilon"
    assert sweep_name("hierarchical", "n-clusters") == "n_clusters"
    assert sweep_name("graph", None) is None


def test_help_lists_the_registered_methods(toy: MethodSpec) -> None:
    out = invoke("cluster", "--help").output
    assert "[hierarchical|dbscan|hdbscan|graph|kmeans|together]" in out
    assert "hierarchical/graph/together: distance cut" in " ".join(out.split())  # option help names its methods
    assert "[cosine 0.1, hamming 10] [cosine 0.5]" in " ".join(out.split())


def test_toy_method_is_covered_by_the_registry_loop(toy: MethodSpec) -> None:
    assert "together" in registered()
    check_method(toy)


def test_toy_method_runs_through_run_clustering(toy: MethodSpec) -> None:
    X, _ = planted(n_groups=3, dim=8)
    res = run_clustering(X, "together", {}, "cosine", values=[0.2, 0.4])
    assert res.result.sweep_param == "threshold" and [s.value for s in res.result.settings] == [0.2, 0.4]
    assert [s.n_clusters for s in res.result.settings] == [1, 1] and res.linkage is None
    with pytest.raises(ValueError, match="must be >= 0"):
        run_clustering(X, "together", {}, "cosine", values=[-1.0])


def test_toy_method_runs_through_the_cli(toy: MethodSpec, attacked_folders, tmp_path: Path) -> None:
    folders, _ = attacked_folders
    feats = [str(f) for f in folders]
    out = tmp_path / "o"
    invoke("cluster", *feats, "--method", "together", "--out", out, "--no-plots", "--quiet")
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "together" and m["sweep_param"] == "threshold"
    assert m["settings"][0]["value"] == 0.5 and m["settings"][0]["n_clusters"] == 1  # its own default radius
    invoke("cluster", *feats, "--method", "together", "--sweep", "0.1,0.2", "--out", out, "--no-plots", "--quiet")
    assert [s["value"] for s in json.loads((out / "metrics.json").read_text())["settings"]] == [0.1, 0.2]
    expect_error("cluster", *feats, "--method", "together", "--eps", "0.1", "--out", tmp_path / "e",
                 message="--eps do(es) not apply to --method together; its options: --threshold")
    expect_error("cluster", *feats, "--method", "together", "--metric", "euclidean", "--out", tmp_path / "e",
                 message="together with the l2 metric needs --threshold (or --sweep)")


def test_a_removed_method_is_no_longer_offered(tmp_path: Path) -> None:
    register_method(TOY)
    unregister_method(TOY.name)
    assert "together" not in METHODS
    X, _ = planted(n_groups=2, dim=8)
    feats = make_store(tmp_path / "f", X, [str(tmp_path / f"i{i}.jpg") for i in range(len(X))], tmp_path)
    expect_error("cluster", feats, "--method", "together", "--out", tmp_path / "o", message="'--method'")
    assert "together" not in invoke("cluster", "--help").output


@pytest.mark.parametrize("change, message", [
    ({"name": "graph"}, "already registered"),
    ({"options": {"threshold": "radius"}}, r"options names \['radius'\]"),
    ({"sweep_param": "eps"}, r"sweep_param names \['eps'\]"),
    ({"radius": None}, "default_radius without a radius"),
])
def test_register_refuses_bad_entries(change: dict, message: str) -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match=message):
        register_method(replace(TOY, **change))
    assert "together" not in METHODS and METHODS["graph"].estimator.__name__ == "GraphClustering"


def test_cli_import_does_not_load_the_clustering_stack() -> None:
    """`neardup --help` stays fast: the registry (and sklearn, faiss) load only when cluster needs them."""
    code = ("import sys, neardup.cli; bad = [m for m in ('neardup.clustering.methods', 'sklearn', 'faiss') "
            "if m in sys.modules]; print(bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_method_choice_is_a_click_choice() -> None:
    option = next(p for p in main.commands["cluster"].params if p.name == "method")
    assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == tuple(METHODS)
