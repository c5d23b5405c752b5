"""Choosing a duplicate threshold from positive and negative similarity scores.

The scores come from the user's own images (:mod:`neardup.dedup.scores`): attacked copies scored against their
source are the positives; decoys and nearest non-duplicate neighbours are the negatives. The threshold is the lowest
one at which the precision on this sample reaches the target, positives and negatives weighted equally.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Calibration:
    """What the chosen threshold rests on (serialised into summary.json)."""

    threshold: float
    target_precision: float
    precision: float
    recall: float
    n_positives: int
    n_negatives: int
    reached: bool
    n_decoys: int = 0
    n_neighbours: int = 0
    curve: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def precision_recall(pos: np.ndarray, neg: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balanced precision and recall of the rule ``score >= t`` for every t in ``thresholds``."""
    pos, neg = np.sort(pos), np.sort(neg)
    tpr = 1.0 - np.searchsorted(pos, thresholds, side="left") / max(len(pos), 1)
    fpr = 1.0 - np.searchsorted(neg, thresholds, side="left") / max(len(neg), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tpr + fpr > 0, tpr / (tpr + fpr), 1.0)
    return precision, tpr


def choose_threshold(pos: np.ndarray, neg: np.ndarray, target_precision: float = 0.99) -> Calibration:
    """The lowest threshold whose balanced precision on (pos, neg) reaches ``target_precision``.

    The cut is placed midway between the lowest accepted positive and the highest score below it, so
    it keeps a margin on both sides. If no threshold reaches the target, the one just above every
    negative is taken and ``reached`` is False.

    Raises:
        ValueError: no positives or no negatives, non-finite scores, or a target outside (0, 1].
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if not 0 < target_precision <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    if not len(pos) or not len(neg):
        raise ValueError("calibration needs at least one positive and one negative score")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("calibration scores must be finite")
    # the counts only change at a positive's score: try each, then centre the cut in the gap below it
    candidates = np.unique(pos)
    precision, recall = precision_recall(pos, neg, candidates)
    ok = precision >= target_precision
    reached = bool(ok.any())
    if reached:
        i = int(np.argmax(ok))
        t = float(candidates[i])
        below = np.concatenate([pos[pos < t], neg[neg < t]])
        threshold = (t + float(below.max())) / 2 if len(below) else t
        prec, rec = float(precision[i]), float(recall[i])
    else:
        threshold = float(np.nextafter(neg.max(), np.inf))
        p, r = precision_recall(pos, neg, np.array([threshold]))
        prec, rec = float(p[0]), float(r[0])
    grid = np.linspace(min(pos.min(), neg.min()), max(pos.max(), neg.max()), 101)
    gp, gr = precision_recall(pos, neg, grid)
    return Calibration(threshold=threshold, target_precision=float(target_precision),
                       precision=prec, recall=rec, n_positives=len(pos),
                       n_negatives=len(neg), reached=reached,
                       curve={"threshold": grid.round(6).tolist(), "precision": gp.round(6).tolist(),
                              "recall": gr.round(6).tolist()})

