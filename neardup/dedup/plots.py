"""The calibration figure of a dedup scan (matplotlib Agg, PNG), kept apart from the computation.

Why a figure at all: the threshold decides what gets moved or deleted, so a reviewer should see what it
rests on, i.e. how far apart the attacked-copy scores and the hard-negative scores are, and what precision and
recall the sample predicts at every other threshold.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any

import numpy as np

from neardup.dedup.calibrate import Calibration, precision_recall
from neardup.io_utils import atomic_write


def _curve(pos: np.ndarray | None, neg: np.ndarray | None,
           calibration: Calibration | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(thresholds, precision, recall): the calibration's own curve, else computed from the scores."""
    if calibration is not None and calibration.curve.get("threshold"):
        c = calibration.curve
        return np.asarray(c["threshold"]), np.asarray(c["precision"]), np.asarray(c["recall"])
    if pos is not None and neg is not None and len(pos) and len(neg):
        grid = np.linspace(min(pos.min(), neg.min()), max(pos.max(), neg.max()), 101)
        p, r = precision_recall(pos, neg, grid)
        return grid, p, r
    return None


def calibration_figure(pos: np.ndarray | None, neg: np.ndarray | None, calibration: Calibration | None,
                       path: str | Path, *, threshold: float | None = None, normalised: bool = False) -> Path:
    """Write one PNG: score histograms of positives and hard negatives, and precision/recall against threshold.

    Args:
        pos: scores of attacked copies against their source (None when not saved).
        neg: scores of hard negatives (None when not saved).
        calibration: the threshold choice; its ``curve`` is drawn when present.
        path: the PNG to write (atomically, tagged with ``neardup.outdir.FIGURE_TAG``).
        threshold: the threshold the scan used, if it differs from ``calibration.threshold`` (a given one);
            both are marked then.
        normalised: the scores are normalised scores (``--normalize-scores``), not cosine similarities.

    Raises:
        ValueError: nothing to draw (no scores and no calibration curve).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from neardup.outdir import FIGURE_TAG

    pos = None if pos is None else np.asarray(pos, dtype=np.float64).ravel()
    neg = None if neg is None else np.asarray(neg, dtype=np.float64).ravel()
    has_scores = pos is not None and neg is not None and (len(pos) > 0 or len(neg) > 0)
    curve = _curve(pos, neg, calibration)
    if not has_scores and curve is None:
        raise ValueError("no calibration scores and no calibration curve to plot")
    used = threshold if threshold is not None else (calibration.threshold if calibration is not None else None)
    marks: list[tuple[float, str, str]] = []
    if used is not None:
        marks.append((float(used), "-", f"threshold {used:.3f}"))
    if calibration is not None and used is not None and abs(calibration.threshold - used) > 1e-6:  # summary: 6 places
        marks.append((calibration.threshold, "--", f"calibrated {calibration.threshold:.3f}"))

    panels = int(has_scores) + int(curve is not None)
    fig, grid_axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.4), squeeze=False)
    axes: list[Any] = list(grid_axes[0])
    if has_scores:
        ax = axes.pop(0)
        assert pos is not None and neg is not None
        both = np.concatenate([pos, neg])
        bins = np.linspace(float(both.min()), float(both.max()), 41) if both.max() > both.min() else 10
        if len(neg):
            ax.hist(neg, bins=bins, alpha=0.6, color="#d9534f", label=f"hard negatives (n={len(neg)})")
        if len(pos):
            ax.hist(pos, bins=bins, alpha=0.6, color="#2f7ed8", label=f"attacked copies (n={len(pos)})")
        for t, style, label in marks:
            ax.axvline(t, color="black", linestyle=style, linewidth=1.2, label=label)
        scale = "normalised score" if normalised else "cosine similarity"
        ax.set(xlabel=f"{scale} to the source / nearest other image", ylabel="pairs",
               title="Calibration scores")
        ax.legend(fontsize=7, loc="best")
    if curve is not None:
        ax = axes.pop(0)
        grid, prec, rec = curve
        ax.plot(grid, prec, color="#2a9d5c", label="precision (balanced)")
        ax.plot(grid, rec, color="#2f7ed8", label="recall")
        if calibration is not None:
            ax.axhline(calibration.target_precision, color="#2a9d5c", linestyle=":", linewidth=1,
                       label=f"target precision {calibration.target_precision:g}")
        for t, style, label in marks:
            ax.axvline(t, color="black", linestyle=style, linewidth=1.2, label=label)
        ax.set(xlabel="threshold (normalised score)" if normalised else "threshold",
               ylabel="estimated on the calibration sample", ylim=(-0.02, 1.02),
               title="Precision and recall against threshold")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": FIGURE_TAG})
    finally:
        plt.close(fig)

    def write(f: IO[bytes]) -> Any:
        return f.write(buf.getvalue())

    path = Path(path)
    atomic_write(path, write)
    return path
