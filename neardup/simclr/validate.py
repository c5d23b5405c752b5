"""Validation that measures the goal: recall@1 and µAP of the current encoder on an attacked set."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from neardup.data.images import list_images
from neardup.data.manifest import image_ids, load_ground_truth
from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor
from neardup.extract.pipeline import encode_paths
from neardup.extract.registry import ModelCfg
from neardup.fastsearch.dataset import RetrievalSet
from neardup.fastsearch.exact import evaluate


@dataclass(frozen=True)
class ValidationScores:
    """Retrieval scores of an encoder on the validation set (exact cosine search).

    ``per_family``: {attack family: {"recall@1": r, "recall@10": r10, "muAP": m}}.
    """

    recall_at_1: float
    recall_at_10: float
    mAP: float
    muAP: float
    n_queries: int
    per_family: dict[str, dict[str, float]]
    #: how the engine ranks epochs for best.pt (see :class:`neardup.simclr.task.Scores`)
    rank_keys: ClassVar[tuple[str, ...]] = ("recall@1", "muAP")

    def to_dict(self) -> dict[str, Any]:
        """The keys of the log, the history and best.pt: recall@1, recall@10, mAP, muAP, n_queries, per_family."""
        d = asdict(self)
        return {"recall@1": d.pop("recall_at_1"), "recall@10": d.pop("recall_at_10"), **d}

    def prefixed(self, prefix: str = "val_") -> dict[str, Any]:
        """The log record's entries: every key of :meth:`to_dict` with ``prefix``."""
        return {f"{prefix}{k}": v for k, v in self.to_dict().items()}


class Validator:
    """Holds the (fixed) validation images; ``evaluate(encoder)`` extracts and scores them."""

    def __init__(self, queries: str, database: str, distractors: list[str] | tuple[str, ...] = (),
                 max_queries: int = 0, seed: int = 0, engine: str = "auto"):
        q_root = Path(queries)
        rows = load_ground_truth(q_root)
        if max_queries and len(rows) > max_queries:
            pick = np.random.default_rng(seed).choice(len(rows), size=max_queries, replace=False)
            rows = [rows[i] for i in sorted(pick)]
        self.rows = rows
        self.query_paths = [str(q_root / r.query) for r in rows]
        self.db_paths = [str(p) for p in list_images(database)]
        self.db_ids = image_ids(self.db_paths, database)
        self.distractor_paths = [str(p) for d in distractors for p in list_images(d)]
        missing = {r.source for r in rows} - set(self.db_ids)
        if len(missing) == len({r.source for r in rows}):
            raise UsageError(f"no validation query's source image is in {database}")
        self.engine = engine

    def features(self, encoder: torch.nn.Module, cfg: ModelCfg) -> dict[str, Any]:
        device = next(encoder.parameters()).device
        ext = TorchExtractor(cfg, encoder, device=str(device), amp="off", channels_last=False, engine=self.engine)
        out = {}
        empty = (np.zeros((0, cfg.num_features), np.float32), np.zeros(0, int))
        for name, paths in (("db", self.db_paths), ("distractors", self.distractor_paths),
                            ("queries", self.query_paths)):
            feats, idx = encode_paths(ext, paths) if paths else empty
            out[name] = (feats, idx)
        return out

    def evaluate(self, encoder: torch.nn.Module, cfg: ModelCfg) -> ValidationScores:
        """Overall recall@1/5/10, mAP, µAP and per-family recall@1 / µAP (exact cosine search)."""
        was_training = encoder.training
        try:
            f = self.features(encoder, cfg)
        finally:
            encoder.train(was_training)
        return score(f, self.db_ids, self.rows, len(self.distractor_paths))


def score(f: dict[str, Any], db_ids: list[str], rows: list[Any], n_distractors: int) -> ValidationScores:
    """Score extracted features: ``f`` holds (features, row indices) of "db", "distractors" and "queries"."""
    db_f, db_idx = f["db"]
    d_f, _ = f["distractors"]
    q_f, q_idx = f["queries"]
    ids = [db_ids[i] for i in db_idx]
    index_of = {k: i for i, k in enumerate(ids)}
    keep = [k for k, qi in enumerate(q_idx) if rows[qi].source in index_of]
    rs = RetrievalSet(database=np.concatenate([db_f, d_f]), db_ids=ids + [f"d{i}" for i in range(len(d_f))],
                      queries=q_f[keep], query_ids=[rows[q_idx[k]].query for k in keep],
                      gt=np.asarray([index_of[rows[q_idx[k]].source] for k in keep], dtype=np.int64),
                      families=np.asarray([rows[q_idx[k]].family for k in keep]),
                      attacks=np.asarray([rows[q_idx[k]].attack for k in keep]), metric="cosine",
                      n_distractors=n_distractors)
    res = evaluate(rs, k=10)
    o = res.overall
    return ValidationScores(
        recall_at_1=o.recall["1"], recall_at_10=o.recall.get("10", float("nan")), mAP=o.mAP, muAP=o.muAP,
        n_queries=o.n_queries,
        per_family={fam: {"recall@1": s.recall["1"], "recall@10": s.recall.get("10", float("nan")), "muAP": s.muAP}
                    for fam, s in res.per_family.items()})
