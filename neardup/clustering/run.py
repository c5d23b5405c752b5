"""One clustering run: sweep a method, score every setting, pick the best, describe its clusters.

:func:`run_clustering` has no side effects; :func:`write_outputs` writes
``assignments.csv``, ``metrics.json`` (schema ``neardup.cluster/1``),
``centroids.npy`` and, on request, one assignments file per sweep setting;
plotting lives in ``plots``.
"""

from __future__ import annotations

import csv
import io
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from neardup import __version__
from neardup.clustering.attributes import ClusterAttributes, cluster_attributes
from neardup.clustering.data import GroundTruth
from neardup.clustering.methods import cluster_sweep, get_method
from neardup.clustering.metrics import SCORE_NAMES, PartitionScores, score_partition
from neardup.io_utils import atomic_write, atomic_write_json, atomic_write_text

SCHEMA = "neardup.cluster/1"
#: Everything ``neardup cluster`` writes in its --out (see :mod:`neardup.outdir`): replaced by a re-run.
OWNED = ("assignments.csv", "metrics.json", "centroids.npy", "config.yaml", "sweep/*=*.csv", "plots/sizes.png",
         "plots/sweep.png", "plots/dendrogram.png", "plots/diameters.png", "plots/mosaics/cluster_*.png",
         "sweep", "plots/mosaics", "plots")


@dataclass
class SettingResult:
    """One sweep setting: its parameter value, cluster counts, time and scores."""

    value: float | None
    n_clusters: int  # noise not counted
    n_noise: int
    n_singletons: int
    seconds: float
    full: PartitionScores | None = None
    clean: PartitionScores | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "n_clusters": self.n_clusters, "n_noise": self.n_noise,
                "n_singletons": self.n_singletons, "seconds": round(self.seconds, 4),
                "full": self.full.to_dict() if self.full else None,
                "clean": self.clean.to_dict() if self.clean else None}


@dataclass
class ClusterResult:
    """Result of ``neardup cluster`` (schema ``neardup.cluster/1``, see docs/cluster.md)."""

    method: str
    metric: str
    params: dict[str, Any]
    sweep_param: str
    settings: list[SettingResult]
    best: int  # index into settings
    best_by: str | None  # the score that chose it; None without ground truth
    n_items: int
    model: str = ""
    exclude: list[str] = field(default_factory=list)
    n_clean: int | None = None
    clusters: list[ClusterAttributes] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, paths: list[str] | None = None) -> dict[str, Any]:
        return {"schema": SCHEMA, "neardup_version": __version__, "python": platform.python_version(),
                "method": self.method, "metric": self.metric, "model": self.model, "params": self.params,
                "sweep_param": self.sweep_param, "best": self.best, "best_by": self.best_by,
                "n_items": self.n_items, "exclude": self.exclude, "n_clean": self.n_clean,
                "settings": [s.to_dict() for s in self.settings],
                "clusters": [c.to_dict(paths) for c in self.clusters], "config": self.config}


class ClusteringOutput(NamedTuple):
    """What :func:`run_clustering` returns; a tuple, so ``result, labels, linkage, cents = ...`` still reads."""

    result: ClusterResult
    labels: list[np.ndarray]  # one (n,) array per setting, noise = -1
    linkage: np.ndarray | None  # hierarchical: the tree, for the dendrogram
    centroids: np.ndarray  # of the described clusters, in ``result.clusters`` order


def _counts(labels: np.ndarray) -> tuple[int, int, int]:
    clustered = labels[labels >= 0]
    _, sizes = np.unique(clustered, return_counts=True)
    return len(sizes), int(np.sum(labels < 0)), int(np.sum(sizes == 1))


def run_clustering(X: np.ndarray, method: str, params: dict[str, Any], metric: str, *,
                   paths: list[str] | None = None, sweep_param: str | None = None,
                   values: list[float] | None = None, truth: GroundTruth | None = None,
                   exclude: list[str] | tuple = (), best_by: str = "ari", attributes: int | None = 100,
                   model: str = "", config: dict[str, Any] | None = None,
                   ) -> ClusteringOutput:
    """Cluster ``X`` at every sweep value and score each setting against ``truth``.

    Args:
        params: the method's parameters (``metric`` is passed separately).
        exclude: ground-truth tags (group names, attacks, families, ``distractor``...)
            left out of the ``clean`` partition.
        best_by: the score (on the full partition) that picks the best setting.
        attributes: describe this many of the largest clusters of the best setting (0: none).

    Returns:
        result, labels per setting, linkage matrix or None, centroids of the described clusters.

    Raises:
        ValueError: bad features, parameters or score name; paths not matching the features.
    """
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"no features to cluster (shape {X.shape})")
    if paths is not None and len(paths) != len(X):
        raise ValueError(f"{len(X)} feature rows but {len(paths)} paths: they must match one to one")
    if truth is not None and len(truth.groups) != len(X):
        raise ValueError(f"ground truth has {len(truth.groups)} items but there are {len(X)} feature rows")
    if best_by not in SCORE_NAMES:
        raise ValueError(f"unknown score {best_by!r} for --best-by; use one of {', '.join(SCORE_NAMES)}")
    m = get_method(method)
    params = {k: v for k, v in {**params, "metric": metric}.items() if v is not None}
    name = sweep_param or m.sweep_param
    if values is None and name not in params:
        # a single cut given another way (hierarchical: by count): report that parameter as the setting
        name = next((c for c in m.cuts if c in params), name)
    out = cluster_sweep(X, method, params, name, values)
    clean_mask = truth.mask_excluding(exclude) if truth is not None and exclude else None
    if clean_mask is not None and not clean_mask.any():
        raise ValueError(f"--exclude {list(exclude)} leaves no image in the clean partition")
    settings = []
    for i, labels in enumerate(out.labels):
        n_c, n_noise, n_single = _counts(labels)
        value = float(values[i]) if values is not None else params.get(name)
        s = SettingResult(value, n_c, n_noise, n_single, out.seconds[i])
        if truth is not None:
            s.full = score_partition(truth.groups, labels)
            if clean_mask is not None:
                s.clean = score_partition(truth.groups[clean_mask], labels[clean_mask])
        settings.append(s)
    best, chosen_by = 0, None
    if truth is not None:
        scores = [getattr(s.full, best_by) for s in settings]
        best = int(np.argmax([-np.inf if v is None else v for v in scores]))
        chosen_by = best_by
    attrs: list[ClusterAttributes] = []
    cents = np.zeros((0, 0), np.float32)
    if attributes:
        attrs, cents = cluster_attributes(X, out.labels[best], metric, max_clusters=attributes)
    result = ClusterResult(method, metric, {k: v for k, v in params.items() if k != "metric"}, name, settings,
                           best, chosen_by, len(X), model, list(exclude),
                           int(clean_mask.sum()) if clean_mask is not None else None, attrs, config or {})
    return ClusteringOutput(result, out.labels, out.linkage, cents)


def assignments_csv(paths: list[str], labels: np.ndarray) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "cluster"])
    w.writerows(zip(paths, np.asarray(labels).tolist(), strict=True))
    return buf.getvalue()


def write_outputs(out_dir: str | Path, result: ClusterResult, labels: list[np.ndarray], paths: list[str],
                  centroids: np.ndarray | None = None, per_setting: bool = False) -> list[Path]:
    """Write assignments.csv (best setting), metrics.json, centroids.npy and optional sweep/*.csv.

    The caller owns ``out_dir`` first: ``neardup.outdir.claim_out_dir(out_dir, "cluster", owned=OWNED)``, as the
    CLI does, so a folder of someone else's files is never written into.
    """
    out = Path(out_dir)
    written = [out / "assignments.csv", out / "metrics.json"]
    atomic_write_text(written[0], assignments_csv(paths, labels[result.best]))
    atomic_write_json(written[1], result.to_dict(paths))
    if centroids is not None and centroids.size:
        buf = io.BytesIO()
        np.save(buf, centroids, allow_pickle=False)

        def write(f: IO[bytes]) -> None:
            f.write(buf.getvalue())

        atomic_write(out / "centroids.npy", write)
        written.append(out / "centroids.npy")
    if per_setting and len(labels) > 1:
        for s, lab in zip(result.settings, labels, strict=True):
            p = out / "sweep" / f"{result.sweep_param}={s.value:g}.csv"
            atomic_write_text(p, assignments_csv(paths, lab))
            written.append(p)
    return written


def format_summary(result: ClusterResult) -> str:
    """A text table of the sweep (one row per setting, * marks the best)."""
    cols = ["ari", "ami", "v_measure", "pairwise_f1", "bcubed_f1"]
    head = (f"  {result.sweep_param:>18} {'clusters':>8} {'noise':>6} {'time_s':>7} "
            + " ".join(f"{c:>11}" for c in cols))
    lines = [f"{result.method} ({result.metric}) on {result.n_items} images", head]
    for i, s in enumerate(result.settings):
        vals = [getattr(s.full, c) if s.full else None for c in cols]
        txt = " ".join(f"{'-' if v is None else f'{v:.4f}':>11}" for v in vals)
        value = "-" if s.value is None else f"{s.value:g}"
        mark = "*" if i == result.best and result.best_by else " "
        lines.append(f"{mark} {value:>18} {s.n_clusters:>8} {s.n_noise:>6} {s.seconds:>7.2f} {txt}")
        if s.clean is not None:
            cv = [getattr(s.clean, c) for c in cols]
            lines.append(f"  {'  clean':>18} {s.clean.n_clusters:>8} {s.clean.n_noise:>6} {'':>7} "
                         + " ".join(f"{'-' if v is None else f'{v:.4f}':>11}" for v in cv))
    if result.best_by:
        lines.append(f"* best by {result.best_by}")
    return "\n".join(lines)
