"""Figures of the class-level evaluation (matplotlib Agg), kept apart from the computation.

Every figure carries neardup's tag in its metadata (:data:`neardup.outdir.FIGURE_TAG`) and is written
atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from neardup.io_utils import atomic_write


def figure(*args: Any, **kw: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kw)


def save(fig: Any, *paths: str | Path, dpi: int = 110) -> list[Path]:
    """Write ``fig`` to each of ``paths`` as PNG or PDF (from the suffix), tagged as neardup's, then close it.

    PDFs are written without a creation date, so a re-run gives the same bytes.
    """
    import matplotlib.pyplot as plt

    from neardup.outdir import FIGURE_TAG

    written = []
    try:
        for path in map(Path, paths):
            fmt = path.suffix.lstrip(".").lower()
            meta: dict[str, Any] = ({"Software": FIGURE_TAG} if fmt == "png"
                                    else {"Creator": FIGURE_TAG, "CreationDate": None})
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight", metadata=meta)
            data = buf.getvalue()
            atomic_write(path, lambda f, data=data: f.write(data))  # type: ignore[misc]
            written.append(path)
    finally:
        plt.close(fig)
    return written


def most_confused(true: np.ndarray, pred: np.ndarray, count: np.ndarray, n_classes: int, n: int) -> np.ndarray:
    """Indices of the ``n`` classes with the most errors (as the true class or as the wrong prediction), sorted.

    Why both: a class that absorbs many wrong predictions is as confused as one whose queries go astray.
    """
    off = true != pred
    errors = (np.bincount(true[off], weights=count[off], minlength=n_classes)
              + np.bincount(pred[off], weights=count[off], minlength=n_classes))
    order = np.lexsort((np.arange(n_classes), -errors))  # most errors first, then by class order
    return np.sort(order[:n])


def plot_confusion(true: np.ndarray, pred: np.ndarray, count: np.ndarray, names: list[str], path: str | Path,
                   title: str, max_classes: int = 30) -> Path:
    """Confusion matrix (rows: true class, columns: predicted) from its non-zero cells, coloured by the share of
    each true class's queries.

    Up to ``max_classes`` classes are drawn with their counts written in the cells; with more, the
    ``max_classes`` most confused ones (their errors among each other; the others are left out).
    """
    n = len(names)
    keep = np.arange(n) if n <= max_classes else most_confused(true, pred, count, n, max_classes)
    m = len(keep)
    pos = np.full(n, -1, dtype=np.int64)
    pos[keep] = np.arange(m)
    sub = np.zeros((m, m), dtype=np.int64)
    sel = (pos[true] >= 0) & (pos[pred] >= 0)
    np.add.at(sub, (pos[true[sel]], pos[pred[sel]]), count[sel])
    rows = np.bincount(true, weights=count, minlength=n)[keep][:, None]  # every query of a shown class
    share = np.divide(sub, rows, out=np.zeros(sub.shape, dtype=np.float64), where=rows > 0)
    size = max(4.5, 0.32 * m + 2.5)
    fig, ax = figure(figsize=(size + 1.0, size))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    labels = [str(names[i])[:20] for i in keep]
    ax.set_xticks(range(m), labels, rotation=90, fontsize=7 if m > 15 else 9)
    ax.set_yticks(range(m), labels, fontsize=7 if m > 15 else 9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if m <= 30:
        for i in range(m):
            for j in range(m):
                if sub[i, j]:
                    ax.text(j, i, str(int(sub[i, j])), ha="center", va="center", fontsize=6 if m > 15 else 8,
                            color="white" if share[i, j] > 0.5 else "black")
    note = "" if n <= max_classes else f"\n{m} most confused of {n} classes"
    ax.set_title(title + note, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's queries")
    return save(fig, path)[0]
