"""``neardup plot RESULTS.json``: figures from a ``neardup.search.bench/1`` result (matplotlib Agg, no LaTeX).

Three figures, each as PNG and PDF:

* ``frontier``: recall@1 against QPS for every point, the Pareto frontier drawn as a line;
* ``recall_time``: recall@1 against batch search time, Flat (exact) as the reference point;
* ``build_memory``: train + add time and bytes per vector, one bar per index.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from neardup.errors import UsageError
from neardup.fastsearch.bench import BenchPoint, BenchResult, pareto_front
from neardup.io_utils import atomic_write, read_json
from neardup.outdir import claim_out_dir

FIGURES = ("frontier", "recall_time", "build_memory")
FORMATS = ("png", "pdf")
#: The files ``plot`` writes in its folder (the output-folder rule's owned patterns).
OWNED = tuple(f"{name}.{fmt}" for name in FIGURES for fmt in FORMATS)


def load_result(path: str | os.PathLike) -> BenchResult:
    """A ``search bench`` results file, validated (one UsageError naming the file for anything wrong)."""
    return BenchResult.from_dict(read_json(path, "results file"), str(path))


def _save(fig: object, out: Path, name: str) -> list[Path]:
    written = []
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        atomic_write(path, partial(fig.savefig, format=fmt, dpi=150, bbox_inches="tight"))  # type: ignore[attr-defined]
        written.append(path)
    return written


def plot_results(result: BenchResult, out: str | os.PathLike, overwrite: bool = False) -> list[Path]:
    """Draw the three figures into ``out`` (claimed for ``plot``, see :mod:`neardup.outdir`); returns the files."""
    if not result.records:
        raise UsageError("the result has no records to plot")
    with claim_out_dir(out, "plot", overwrite=overwrite, owned=OWNED):
        return _draw(result, Path(out))


def _draw(result: BenchResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"text.usetex": False, "font.size": 8})
    written: list[Path] = []
    metrics = list(dict.fromkeys(r.metric for r in result.records))
    families = sorted({r.factory for r in result.records})
    cmap = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    color = {f: cmap(i % cmap.N) for i, f in enumerate(families)}
    title = f"N={result.dataset.get('n_database')}, Q={result.dataset.get('n_queries')}, d={result.dataset.get('dim')}"

    # recall vs QPS, Pareto frontier
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=False):
        pts = [r for r in result.records if r.metric == m]
        for f in families:
            sel = [r for r in pts if r.factory == f]
            if sel:
                ax.scatter([r.qps for r in sel], [r.recall_at_1 for r in sel], s=14, color=color[f], label=f)
        front = pareto_front(pts)
        ax.plot([r.qps for r in front], [r.recall_at_1 for r in front], "k--", lw=1, label="Pareto frontier")
        for r in front:
            ax.annotate(",".join(f"{v}" for v in r.params.values()), (r.qps, r.recall_at_1), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ex = result.exact.get(m, {}).get("recall_at_1")
        if ex is not None:
            ax.axhline(ex, color="0.5", lw=0.8, ls=":", label="exact recall@1")
        ax.set_xscale("log")
        ax.set_xlabel("queries per second (batch)")
        ax.set_ylabel("recall@1")
        ax.set_title(f"recall@1 vs QPS, {m}; {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower left")
    written += _save(fig, out, "frontier")
    plt.close(fig)

    # recall vs search time, Flat as reference
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=False):
        pts = [r for r in result.records if r.metric == m]
        for f in families:
            sel = [r for r in pts if r.factory == f]
            if sel:
                ax.scatter([r.search_seconds for r in sel], [r.recall_at_1 for r in sel], s=14, color=color[f],
                           label=f)
        flat = [r for r in pts if r.family in ("flat", "bflat")]
        for r in flat:
            ax.scatter([r.search_seconds], [r.recall_at_1], marker="*", s=160, color="k", zorder=5,
                       label=f"{r.factory} (exact reference)")
            ax.axvline(r.search_seconds, color="k", lw=0.6, ls=":")
            ax.axhline(r.recall_at_1, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(f"search time for all {pts[0].n_queries} queries (s)")
        ax.set_ylabel("recall@1")
        ax.set_title(f"recall@1 vs search time, {m}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    written += _save(fig, out, "recall_time")
    plt.close(fig)

    # build time and memory bars, one per (index, metric)
    seen: dict[tuple[str, str], BenchPoint] = {}
    for r in result.records:
        seen.setdefault((r.factory, r.metric), r)
    keys = list(seen)
    names = [f"{f}\n{m}" if len(metrics) > 1 else f for f, m in keys]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(keys) * 2), 4.5))
    x = range(len(keys))
    train = [seen[k].train_seconds for k in keys]
    add = [seen[k].add_seconds for k in keys]
    a1.bar(x, train, label="train", color="tab:orange")
    a1.bar(x, add, bottom=train, label="add", color="tab:blue")
    a1.set_ylabel("seconds")
    a1.set_title("build time")
    a1.legend()
    a2.bar(x, [seen[k].bytes_per_vector for k in keys], color="tab:green")
    a2.set_ylabel("bytes per vector (serialised index / N)")
    a2.set_title("memory")
    for ax in (a1, a2):
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=6)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    written += _save(fig, out, "build_memory")
    plt.close(fig)
    return written
