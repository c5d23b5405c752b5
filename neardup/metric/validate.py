"""Class-level retrieval scores: leave-one-out precision@1, R-precision and MAP@R of a labelled image set.

Each image queries all the others (itself excluded); a neighbour is relevant when it has the query's class. The
metrics are pytorch-metric-learning's ``AccuracyCalculator`` (Musgrave et al., A Metric Learning Reality Check,
ECCV 2020), computed from one k-NN search with k = the largest class size ("max_bin_count"), on L2-normalised
features (so the ranking is cosine's). :class:`LabelledValidator` scores a network during ``neardup train``
(``--val-labels``); :func:`class_scores` scores any features (the digits benchmark).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from neardup.data.labels import Labels, load_labels
from neardup.errors import UsageError
from neardup.extract.registry import ModelCfg

METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


@dataclass(frozen=True)
class ClassScores:
    """Leave-one-out class retrieval: precision@1 (top-1 class accuracy), R-precision and MAP@R."""

    precision_at_1: float
    r_precision: float
    map_at_r: float
    n_queries: int
    n_classes: int
    rank_keys: ClassVar[tuple[str, ...]] = ("precision@1", "MAP@R")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"precision@1": d.pop("precision_at_1"), "R-precision": d.pop("r_precision"),
                "MAP@R": d.pop("map_at_r"), **d}

    def prefixed(self, prefix: str = "val_") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in self.to_dict().items()}


def class_scores(features: np.ndarray, codes: np.ndarray) -> ClassScores:
    """Score ``features`` (N, D) with class ``codes`` (N,): every image queries the others.

    Raises:
        UsageError: fewer than 2 images, or a length mismatch.
    """
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    feats = np.asarray(features, dtype=np.float32)
    codes = np.asarray(codes, dtype=np.int64)
    if len(feats) != len(codes) or len(feats) < 2:
        raise UsageError(f"class retrieval needs at least 2 labelled features ({len(feats)} features, "
                         f"{len(codes)} labels)")
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    calc = AccuracyCalculator(include=METRICS, k="max_bin_count", device=torch.device("cpu"))
    acc = calc.get_accuracy(feats, codes)  # reference omitted: the queries themselves, each one excluded
    return ClassScores(precision_at_1=float(acc["precision_at_1"]), r_precision=float(acc["r_precision"]),
                       map_at_r=float(acc["mean_average_precision_at_r"]), n_queries=len(feats),
                       n_classes=len(np.unique(codes)))


def read_labels(src: str) -> Labels:
    """``--val-labels``: a CSV file, an attack folder (with manifest.csv) or a folder of class folders.

    Raises:
        UsageError: what the labels reader refuses, prefixed with ``--val-labels``.
    """
    p = Path(src)
    try:
        if p.is_file():
            return load_labels(labels=src)
        if (p / "manifest.csv").is_file():
            return load_labels(manifest=src)
        if p.is_dir():
            return load_labels(class_folders=src)
    except UsageError as exc:
        raise UsageError(f"--val-labels: {exc}") from None
    raise UsageError(f"--val-labels {src}: not a labels CSV, an attack folder or a folder of class folders")


class LabelledValidator:
    """A fixed labelled validation set; ``evaluate(network, cfg)`` extracts it and scores class retrieval.

    Raises:
        UsageError: unusable labels, or a class with a single image (it has no other image to find).
    """

    def __init__(self, src: str, max_queries: int = 0, seed: int = 0):
        found = read_labels(src).check(2, why="leave-one-out validation (--val-labels) needs")
        if max_queries and len(found) > max_queries:  # a fixed random subset, whole classes kept possible
            pick = np.sort(np.random.default_rng(seed).choice(len(found), size=max_queries, replace=False))
            keep = np.zeros(len(found), bool)
            keep[pick] = True
            found = found.subset(keep)
        self.labels = found
        self.codes = found.codes()

    def evaluate(self, network: torch.nn.Module, cfg: ModelCfg) -> ClassScores:
        from neardup.extract.base import TorchExtractor
        from neardup.extract.pipeline import encode_paths

        was_training = network.training
        try:
            device = next(network.parameters()).device
            ext = TorchExtractor(cfg, network, device=str(device), amp="off", channels_last=False, engine="torch")
            feats, idx = encode_paths(ext, [os.fspath(p) for p in self.labels.paths])
        finally:
            network.train(was_training)
        return class_scores(feats, self.codes[idx])
