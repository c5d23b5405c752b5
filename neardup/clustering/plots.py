"""Plots of a clustering run (matplotlib Agg, PNG), kept apart from the computation.

Files under OUT/plots: ``sizes.png`` (cluster sizes against ground-truth group
sizes), ``sweep.png`` (scores against the swept value), ``dendrogram.png``
(hierarchical, truncated), ``diameters.png`` (violin of diameter and
dispersion) and ``mosaics/cluster_<id>.png`` (members closest to, then
farthest from, the centroid).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import numpy as np

from neardup.clustering.data import GroundTruth
from neardup.clustering.run import ClusterResult
from neardup.io_utils import atomic_write


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    def write(f: IO[bytes]) -> None:
        f.write(buf.getvalue())

    atomic_write(path, write)
    return path


def _figure(*args: Any, **kw: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kw)


def _size_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = np.asarray(labels)
    sizes = np.unique(lab[lab >= 0], return_counts=True)[1]
    sizes = np.concatenate([sizes, np.ones(int(np.sum(lab < 0)), dtype=sizes.dtype)])  # noise: singletons
    return np.unique(sizes, return_counts=True)


def plot_sizes(labels: np.ndarray, truth: GroundTruth | None, path: Path) -> Path:
    fig, ax = _figure(figsize=(7, 4))
    s, c = _size_counts(labels)
    ax.plot(s, c, "o-", label="predicted clusters")
    if truth is not None:
        ts, tc = _size_counts(truth.groups)
        ax.plot(ts, tc, "s--", label="ground-truth groups")
    ax.set(xscale="log", yscale="log", xlabel="cluster size (images)", ylabel="number of clusters",
           title="Cluster sizes (noise counted as singletons)")
    ax.legend()
    return _save(fig, path)


def plot_sweep(result: ClusterResult, path: Path) -> Path:
    fig, ax = _figure(figsize=(7, 4))
    xs = [s.value for s in result.settings]
    for name in ("ari", "ami", "v_measure", "pairwise_f1", "bcubed_f1"):
        ys = [getattr(s.full, name) if s.full else None for s in result.settings]
        if any(y is not None for y in ys):
            ax.plot(xs, [np.nan if y is None else y for y in ys], "o-", label=name)
    if result.best_by:
        ax.axvline(xs[result.best], color="grey", ls=":", label=f"best by {result.best_by}")
    ax.set(xlabel=result.sweep_param, ylabel="score", ylim=(0, 1.02),
           title=f"{result.method}: scores vs {result.sweep_param}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_dendrogram(linkage: np.ndarray, path: Path, p: int = 30) -> Path:
    from scipy.cluster.hierarchy import dendrogram

    fig, ax = _figure(figsize=(10, 4))
    dendrogram(linkage, truncate_mode="lastp", p=p, ax=ax, no_labels=False, show_contracted=True)
    ax.set(ylabel="merge distance", title=f"Dendrogram (last {p} merges; (n) = merged images)")
    return _save(fig, path)


def plot_diameters(result: ClusterResult, path: Path) -> Path | None:
    if not result.clusters:
        return None
    fig, ax = _figure(figsize=(5, 4))
    data = [[c.diameter for c in result.clusters], [c.dispersion for c in result.clusters]]
    ax.violinplot(data, showmedians=True)
    ax.set_xticks([1, 2], ["diameter", "dispersion"])
    ax.set(ylabel=f"{result.metric} distance", title=f"{len(result.clusters)} largest clusters")
    return _save(fig, path)


def plot_mosaic(paths: list[str], closest: list[int], farthest: list[int], title: str, path: Path,
                thumb: int = 128) -> Path | None:
    """Two rows of thumbnails: members nearest the centroid, then farthest; unreadable images are skipped."""
    from PIL import Image

    rows = [closest, [i for i in farthest if i not in closest] or farthest]
    cols = max(len(r) for r in rows)
    fig, axes = _figure(len(rows), cols, figsize=(1.6 * cols, 1.8 * len(rows)), squeeze=False)
    shown = 0
    for r, idx in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(idx):
                continue
            try:
                with Image.open(paths[idx[c]]) as im:
                    im.thumbnail((thumb, thumb))
                    ax.imshow(im.convert("RGB"))
                    shown += 1
            except OSError:
                continue
            ax.set_title(Path(paths[idx[c]]).stem[:18], fontsize=6)
    fig.suptitle(title, fontsize=9)
    if not shown:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return None
    return _save(fig, path)


def write_plots(out_dir: str | Path, result: ClusterResult, labels: list[np.ndarray], paths: list[str],
                truth: GroundTruth | None = None, linkage: np.ndarray | None = None, X: Any = None,
                mosaics: int = 12) -> list[Path]:
    """Every plot that applies to this run; returns the files written."""
    d = Path(out_dir) / "plots"
    best = labels[result.best]
    written = [plot_sizes(best, truth, d / "sizes.png")]
    if len(result.settings) > 1:
        written.append(plot_sweep(result, d / "sweep.png"))
    if linkage is not None and len(linkage):
        written.append(plot_dendrogram(linkage, d / "dendrogram.png"))
    p = plot_diameters(result, d / "diameters.png")
    if p:
        written.append(p)
    for c in result.clusters[:mosaics]:
        p = plot_mosaic(paths, c.closest, c.farthest, f"cluster {c.cluster}: {c.size} images, "
                        f"diameter {c.diameter:.3g} (top: closest to centroid; bottom: farthest)",
                        d / "mosaics" / f"cluster_{c.cluster:06d}.png")
        if p:
            written.append(p)
    return written
