"""The retrieval evaluation of ``neardup search exact``: exact k-NN (streamed, faiss Flat), scored per attack."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup import __version__
from neardup.errors import UsageError
from neardup.fastsearch.dataset import RetrievalSet
from neardup.fastsearch.groundtruth import exact_knn
from neardup.fastsearch.metrics import mean_average_precision, micro_average_precision, recall_at_k
from neardup.fastsearch.schema import EXACT_SCHEMA, check_result
from neardup.fastsearch.synthetic import Database
from neardup.fastsearch.vectors import l2_normalize, prepare_vectors  # noqa: F401 - l2_normalize: for the cluster CLI
from neardup.io_utils import read_json

if TYPE_CHECKING:
    from neardup.fastsearch.normalize import BackgroundNormalizer

SCHEMA = "neardup.search.exact/1"
KS = (1, 5, 10)
#: Database rows searched at a time: memory stays O(block + queries x k).
BLOCK = 65536


@dataclass
class Scores:
    n_queries: int
    recall: dict[str, float]  # "1", "5", "10" -> recall@k
    mAP: float
    muAP: float

    @classmethod
    def compute(cls, ranked: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> Scores:
        return cls(len(gt), {str(k): v for k, v in recall_at_k(ranked, gt, KS).items()},
                   mean_average_precision(ranked, gt), micro_average_precision(ranked, scores, gt))


@dataclass
class RetrievalResult:
    """Result of ``neardup search exact`` (schema ``neardup.search.exact/1``, see README)."""

    model: str
    metric: str
    k: int
    n_database: int
    n_distractors: int
    n_queries: int
    n_unmatched_queries: int
    overall: Scores
    per_family: dict[str, Scores]
    per_attack: dict[str, Scores]
    search_seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "search exact result") -> RetrievalResult:
        """The result of a ``to_dict()`` JSON document, validated against ``EXACT_SCHEMA`` (UsageError)."""
        d = check_result(d, EXACT_SCHEMA, source)
        d = {k: v for k, v in d.items() if k != "schema"}
        d["overall"] = Scores(**d["overall"])
        d["per_family"] = {k: Scores(**v) for k, v in d["per_family"].items()}
        d["per_attack"] = {k: Scores(**v) for k, v in d["per_attack"].items()}
        return cls(**d)


def load_result(path: str | os.PathLike) -> RetrievalResult:
    """A ``search exact`` result file, validated (one UsageError naming the file for anything wrong)."""
    return RetrievalResult.from_dict(read_json(path, "results file"), str(path))


def metric_names(result: RetrievalResult) -> list[str]:
    """The metrics ``format_table`` can show for ``result``: recall@k for the k it holds, mAP, muAP."""
    ks = sorted({int(k) for k in result.overall.recall if k.isdigit()})
    return [f"recall@{k}" for k in ks] + ["mAP", "muAP"]


def check_metric_name(results: list[RetrievalResult], metric: str, names: list[str] | None = None) -> None:
    """Refuse a metric some result does not hold (it would print NaN), listing those all of them hold."""
    names = names or [r.model for r in results]
    common = [m for m in metric_names(results[0]) if all(m in metric_names(r) for r in results)]
    for r, name in zip(results, names, strict=True):
        if metric not in metric_names(r):
            raise UsageError(f"metric {metric!r} is not in {name} (k={r.k}); available: {', '.join(common)}")


def environment() -> dict[str, Any]:
    import faiss

    env = {"neardup": __version__, "python": platform.python_version(), "platform": platform.platform(),
           "numpy": np.__version__, "faiss": getattr(faiss, "__version__", "?"),
           "faiss_threads": faiss.omp_get_max_threads()}
    try:
        import torch

        env["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def _grouped(keys: np.ndarray, ranked: np.ndarray, scores: np.ndarray, gt: np.ndarray) -> dict[str, Scores]:
    return {str(g): Scores.compute(ranked[keys == g], scores[keys == g], gt[keys == g])
            for g in sorted(set(keys.tolist()))}


def evaluate(rs: RetrievalSet, k: int = 10, config: dict[str, Any] | None = None,
             normalizer: BackgroundNormalizer | None = None) -> RetrievalResult:
    """Exact search of every query, scored overall, per attack family and per attack.

    ``normalizer``: scores normalised against a background set (:mod:`neardup.fastsearch.normalize`) before
    scoring; its settings are recorded in ``config["score_normalization"]`` (None without).
    """
    t0 = time.perf_counter()
    k = min(k, len(rs.database))
    blocks = Database([rs.database]).chunks(BLOCK)
    scores, ranked = exact_knn(blocks, prepare_vectors(rs.queries, rs.metric), k, rs.metric)
    if normalizer is not None:
        scores, ranked = normalizer.apply(rs.queries, scores, ranked)
    config = {**(config or {}), "score_normalization": normalizer.to_dict() if normalizer is not None else None}
    elapsed = time.perf_counter() - t0
    return RetrievalResult(
        model=rs.model, metric=rs.metric, k=int(ranked.shape[1]), n_database=len(rs.database),
        n_distractors=rs.n_distractors, n_queries=len(rs.gt), n_unmatched_queries=rs.n_unmatched,
        overall=Scores.compute(ranked, scores, rs.gt), per_family=_grouped(rs.families, ranked, scores, rs.gt),
        per_attack=_grouped(rs.attacks, ranked, scores, rs.gt), search_seconds=elapsed,
        config=config, environment=environment())


def format_table(results: list[RetrievalResult], metric: str = "recall@1") -> str:
    """Rows = attack families, columns = one result each (e.g. one model), values = ``metric``."""

    def value(s: Scores) -> float:
        if metric.startswith("recall@"):
            return s.recall.get(metric.split("@")[1], float("nan"))
        return float(getattr(s, metric))

    families = sorted({f for r in results for f in r.per_family})
    names = [r.model for r in results]
    w = max([len("family")] + [len(f) for f in families] + [len("overall")])
    cols = [max(len(n), 7) for n in names]

    def row(label: str, cells: list[str]) -> str:
        return f"{label:<{w}}  " + "  ".join(f"{x:>{c}}" for x, c in zip(cells, cols, strict=True))

    lines = [f"{metric} per attack family", row("family", names)]
    lines.append("-" * len(lines[-1]))
    for f in families:
        lines.append(row(f, [f"{value(r.per_family[f]):.3f}" if f in r.per_family else "-" for r in results]))
    lines.append("-" * len(lines[1]))
    overall = ((f"overall {metric}", value), ("overall µAP", lambda s: s.muAP), ("overall mAP", lambda s: s.mAP))
    for label, fn in overall:
        lines.append(row(label, [f"{fn(r.overall):.3f}" for r in results]))
    lines.append(row("queries", [f"{r.n_queries:d}" for r in results]))
    lines.append(row("database", [f"{r.n_database:d}" for r in results]))
    return "\n".join(lines)
