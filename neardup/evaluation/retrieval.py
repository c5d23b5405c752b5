"""Class-level retrieval evaluation: do a query's nearest neighbours share its class?

:func:`evaluate_retrieval` ranks the whole database for every query (exact faiss search, see
:mod:`neardup.evaluation.ranking`) and scores it with :mod:`neardup.evaluation.metrics`:

- retrieval figures (pytorch-metric-learning's ``AccuracyCalculator`` definitions): precision@1/5/10,
  R-precision, MAP@R and mAP, averaged over the queries that have at least one positive (a query whose
  class has no other image in the database cannot be scored, and is counted apart);
- classification figures over *every* query: top-1 accuracy (MedSim's figure: the nearest neighbour's
  class is the query's) and the accuracy of a majority vote of the ``vote_k`` nearest (a tie goes to the
  class of the nearest tied neighbour). Without queries lacking a positive, top-1 accuracy equals
  precision@1.

Both are reported over queries (micro: ``overall``) and as the mean of the per-class means (``macro``).
The function has no side effects; :mod:`neardup.evaluation.report` writes and prints results.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from neardup import __version__
from neardup.errors import UsageError
from neardup.evaluation.metrics import average_precision, majority_vote, precision_at_k, r_precision
from neardup.evaluation.ranking import rank_database
from neardup.fastsearch.vectors import canonical_metric

SCHEMA = "neardup.retrieval/1"
#: precision@k reported
KS = (1, 5, 10)
#: the figures of every score record, in the order tables print them
SCORE_NAMES = ("precision_at_1", "precision_at_5", "precision_at_10", "r_precision", "map_at_r", "mAP",
               "top1_accuracy", "vote_accuracy")
#: how tables head them
SHORT = {"precision_at_1": "P@1", "precision_at_5": "P@5", "precision_at_10": "P@10", "r_precision": "R-prec",
         "map_at_r": "MAP@R", "mAP": "mAP", "top1_accuracy": "top1", "vote_accuracy": "vote"}
PROTOCOLS = ("loo", "queries")
METRICS = ("cosine", "l2", "hamming")
MAX_VOTE_K = 1000


@dataclass
class RetrievalConfig:
    """What to evaluate and how (every CLI option that changes a figure).

    Args:
        protocol: ``loo`` (each image queries all the others of one set) or ``queries`` (a query set against a
            database set); None: ``queries`` when there are queries, else ``loo``.
        vote_k: neighbours in the majority vote.
        metric: cosine, l2 or hamming [default: the features' own: cosine, or hamming for hashes].
        split_seed: evaluate on one half of the classes, chosen by a shuffle with this seed (the other half
            is for training); None: all classes.
    """

    protocol: str | None = None
    vote_k: int = 5
    metric: str | None = None
    split_seed: int | None = None

    def validate(self, has_queries: bool | None = None) -> RetrievalConfig:
        """Check every option in one place; returns self with the protocol resolved when ``has_queries`` is known.

        Raises:
            UsageError: a bad value, or a protocol that does not match the inputs.
        """
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise UsageError(f"unknown protocol {self.protocol!r}; use one of {', '.join(PROTOCOLS)}")
        if isinstance(self.vote_k, bool) or not isinstance(self.vote_k, int) or not 1 <= self.vote_k <= MAX_VOTE_K:
            raise UsageError(f"--vote-k must be a whole number from 1 to {MAX_VOTE_K}, got {self.vote_k!r}")
        if self.metric is not None:
            self.metric = canonical_metric(self.metric, METRICS)
        if self.split_seed is not None and (isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int)
                                            or not 0 <= self.split_seed < 2 ** 32):
            raise UsageError(f"--split-classes needs a seed from 0 to {2 ** 32 - 1}, got {self.split_seed!r}")
        if has_queries is not None:
            if self.protocol == "queries" and not has_queries:
                raise UsageError("--protocol queries needs --queries FEATURES (the query set)")
            if self.protocol == "loo" and has_queries:
                raise UsageError("--protocol loo evaluates one set against itself; drop --queries, or use "
                                 "--protocol queries")
            self.protocol = self.protocol or ("queries" if has_queries else "loo")
        return self


@dataclass
class RetrievalData:
    """Labelled vectors to evaluate: a database, and queries (the database itself under leave-one-out).

    ``*_classes`` are codes into ``names``; ``self_index[i]`` is the database row of query i itself
    (leave-one-out: i; a query set: the row with the same image path, or -1), left out of its ranking.
    """

    database: np.ndarray
    db_classes: np.ndarray
    db_paths: list[str]
    queries: np.ndarray
    q_classes: np.ndarray
    q_paths: list[str]
    names: list[str]
    self_index: np.ndarray
    metric: str = "cosine"  # the features' own
    model: str = ""

    def check(self) -> None:
        """Shapes that agree, and enough rows to rank; UsageError otherwise."""
        n, nq = len(self.database), len(self.queries)
        if len(self.db_classes) != n or len(self.db_paths) != n:
            raise ValueError("database features, classes and paths differ in length")
        if len(self.q_classes) != nq or len(self.q_paths) != nq or self.self_index.shape != (nq,):
            raise ValueError("query features, classes, paths and self indices differ in length")
        if nq == 0:
            raise UsageError("no query to evaluate")
        if n - int((self.self_index >= 0).any()) < 1:
            raise UsageError(f"the database has {n} image(s): leave-one-out needs at least 2")


@dataclass
class ClassSplit:
    """The classes trained on and those evaluated ("generalise" protocol): disjoint halves of all classes."""

    seed: int
    train: list[str]
    eval: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "train_classes": self.train, "eval_classes": self.eval}


def split_classes(names: list[str], seed: int) -> ClassSplit:
    """Shuffle ``names`` with ``seed`` (numpy PCG64) and split them in half: the first half to train on, the rest
    (one more when odd) to evaluate. Both come back sorted; they never share a class.

    Raises:
        UsageError: fewer than 2 classes.
    """
    names = sorted(set(names))
    if len(names) < 2:
        raise UsageError(f"--split-classes needs at least 2 classes, got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    half = len(names) // 2
    return ClassSplit(seed, sorted(names[i] for i in order[:half]), sorted(names[i] for i in order[half:]))


@dataclass
class QueryOutcomes:
    """Per-query results (arrays, not in the JSON): figures are NaN for queries without a positive."""

    classes: np.ndarray  # true class codes
    top1: np.ndarray  # class of the nearest neighbour
    vote: np.ndarray  # class voted by the vote_k nearest
    nearest: np.ndarray  # database row of the nearest neighbour
    positives: np.ndarray  # R: database images of the query's class (the query itself not counted)
    figures: dict[str, np.ndarray]  # precision_at_k, r_precision, map_at_r, mAP per query

    def confusion(self, by: str = "top1") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-zero cells of the confusion matrix of the ``top1`` or ``vote`` predictions: (true class,
        predicted class, count), sorted. Sparse: with many classes a dense matrix would not fit."""
        pred = self.top1 if by == "top1" else self.vote
        n = int(max(self.classes.max(), pred.max())) + 1 if len(pred) else 1
        keys, counts = np.unique(self.classes * n + pred, return_counts=True)
        return keys // n, keys % n, counts.astype(np.int64)


@dataclass
class RetrievalResult:
    """Result of ``neardup evaluate-retrieval`` (schema ``neardup.retrieval/1``, see :mod:`.schema`)."""

    protocol: str
    model: str
    metric: str
    vote_k: int
    n_database: int
    n_queries: int
    n_scored: int
    n_classes: int
    overall: dict[str, float | None]
    macro: dict[str, float | None]
    per_class: list[dict[str, Any]]
    classes_without_positive: list[str]
    split: dict[str, Any] | None
    search_seconds: float
    inputs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "neardup_version": __version__, "protocol": self.protocol, "model": self.model,
                "metric": self.metric, "vote_k": self.vote_k, "ks": list(KS), "n_database": self.n_database,
                "n_queries": self.n_queries, "n_scored": self.n_scored,
                "n_without_positive": self.n_queries - self.n_scored, "n_classes": self.n_classes,
                "overall": self.overall, "macro": self.macro, "per_class": self.per_class,
                "classes_without_positive": self.classes_without_positive, "split": self.split,
                "search_seconds": round(self.search_seconds, 4), "inputs": self.inputs, "config": self.config,
                "environment": self.environment}


class RetrievalOutput(NamedTuple):
    result: RetrievalResult
    outcomes: QueryOutcomes


def _mean(x: np.ndarray) -> float | None:
    """The mean of the finite values (None when there are none: JSON has no NaN)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def _scores(fig: dict[str, np.ndarray], correct1: np.ndarray, correct_vote: np.ndarray) -> dict[str, float | None]:
    out = {name: _mean(fig[name]) if name in fig else None for name in SCORE_NAMES[:6]}
    out["top1_accuracy"] = _mean(correct1)
    out["vote_accuracy"] = _mean(correct_vote)
    return out


def evaluate_retrieval(data: RetrievalData, config: RetrievalConfig, show_progress: bool = False,
                       inputs: dict[str, Any] | None = None, split: ClassSplit | None = None) -> RetrievalOutput:
    """Rank the database for every query and score the rankings, overall, per class and macro-averaged.

    Raises:
        UsageError: bad options, too few images, or no query with a positive in the database.
    """
    config.validate()
    data.check()
    protocol = config.protocol or ("loo" if data.queries is data.database else "queries")
    metric = config.metric or data.metric
    n, nq = len(data.database), len(data.queries)
    n_ranked = n - int((data.self_index >= 0).any())  # shortest ranking a query gets
    ks = [k for k in KS if k <= n_ranked]
    vote_k = min(config.vote_k, n_ranked)
    figures = {name: np.full(nq, np.nan) for name in
               [f"precision_at_{k}" for k in ks] + ["r_precision", "map_at_r", "mAP"]}
    top1, vote = np.empty(nq, np.int64), np.empty(nq, np.int64)
    nearest, pos = np.empty(nq, np.int64), np.empty(nq, np.int64)
    t0 = time.perf_counter()
    for b in rank_database(data.database, data.queries, metric, data.self_index, show_progress=show_progress):
        sl = slice(b.start, b.stop)
        ranked = data.db_classes[b.ids]  # (block, N) classes, best first
        valid = np.arange(n)[None, :] < b.n_valid[:, None]  # the query's own row, last, is not a neighbour
        rel = (ranked == data.q_classes[sl, None]) & valid
        for k in ks:
            figures[f"precision_at_{k}"][sl] = precision_at_k(rel, k)
        figures["r_precision"][sl] = r_precision(rel)
        figures["map_at_r"][sl] = average_precision(rel, at_r=True)
        figures["mAP"][sl] = average_precision(rel)
        top1[sl], nearest[sl] = ranked[:, 0], b.ids[:, 0]
        vote[sl] = majority_vote(ranked[:, :vote_k])
        pos[sl] = rel.sum(axis=1)
    seconds = time.perf_counter() - t0
    scored = pos > 0
    if not scored.any():
        raise UsageError("no query has a positive (another image of its class) in the database, so nothing can be "
                         "scored: every class needs at least 2 images under leave-one-out, or database images "
                         "of the query classes")
    outcomes = QueryOutcomes(data.q_classes, top1, vote, nearest, pos, figures)
    ok1 = (top1 == data.q_classes).astype(np.float64)
    okv = (vote == data.q_classes).astype(np.float64)
    db_counts = np.bincount(data.db_classes, minlength=len(data.names))
    per_class, class_means = [], []
    for c in np.unique(data.q_classes):
        rows = data.q_classes == c
        s = _scores({k: v[rows] for k, v in figures.items()}, ok1[rows], okv[rows])
        class_means.append(s)
        confused = np.bincount(top1[rows & (top1 != c)], minlength=len(data.names))
        worst = int(np.argmax(confused))
        per_class.append({"class": data.names[c], "n_queries": int(rows.sum()), "n_database": int(db_counts[c]),
                          "n_scored": int((rows & scored).sum()), **s,
                          "confused_with": data.names[worst] if confused[worst] else None,
                          "n_confused": int(confused[worst])})
    macro = {name: _mean(np.array([np.nan if m[name] is None else m[name] for m in class_means]))
             for name in SCORE_NAMES}
    lone = sorted({data.names[c] for c in data.q_classes[~scored]})
    result = RetrievalResult(
        protocol=protocol, model=data.model, metric=metric, vote_k=vote_k, n_database=n,
        n_queries=nq, n_scored=int(scored.sum()), n_classes=len(np.unique(data.q_classes)),
        overall=_scores(figures, ok1, okv), macro=macro, per_class=per_class, classes_without_positive=lone,
        split=split.to_dict() if split else None, search_seconds=seconds, inputs=inputs or {},
        config={"protocol": protocol, "vote_k": config.vote_k, "metric": metric,
                "split_seed": config.split_seed},
        environment=_environment())
    return RetrievalOutput(result, outcomes)


def _environment() -> dict[str, Any]:
    from neardup.fastsearch.exact import environment

    return environment()


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def format_table(result: RetrievalResult, max_classes: int = 30) -> str:
    """The printed summary: overall and macro figures, then one row per class (the weakest when many)."""
    names = list(SCORE_NAMES)
    w = max([len("class")] + [len(str(r["class"])) for r in result.per_class[:1000]] + [len("overall")])
    w = min(w, 28)
    head = f"{'':{w}} {'queries':>7} " + " ".join(f"{SHORT[m]:>7}" for m in names)
    lines = [f"{result.protocol}: {result.n_queries} queries ({result.n_scored} with a positive) against "
             f"{result.n_database} images, {result.n_classes} classes, {result.model or 'features'} "
             f"({result.metric}); vote of {result.vote_k}", head]
    for label, s, count in (("overall", result.overall, result.n_queries),
                            ("macro", result.macro, result.n_classes)):
        lines.append(f"{label:{w}} {count:>7} " + " ".join(f"{_fmt(s[m]):>7}" for m in names))
    rows = result.per_class
    if len(rows) > max_classes:
        rows = sorted(rows, key=lambda r: (r["top1_accuracy"] if r["top1_accuracy"] is not None else -1,
                                           str(r["class"])))[:max_classes]
        lines.append(f"the {max_classes} classes with the lowest top-1 accuracy (all {len(result.per_class)} in "
                     f"per_class.csv):")
    lines.append(f"{'class':{w}} {'queries':>7} " + " ".join(f"{SHORT[m]:>7}" for m in names) + "  confused with")
    for r in rows:
        conf = f"  {r['confused_with']} ({r['n_confused']})" if r["confused_with"] is not None else ""
        lines.append(f"{str(r['class'])[:w]:{w}} {r['n_queries']:>7} "
                     + " ".join(f"{_fmt(r[m]):>7}" for m in names) + conf)
    if result.classes_without_positive:
        lone = result.classes_without_positive
        lines.append(f"{result.n_queries - result.n_scored} query(ies) of {len(lone)} class(es) have no positive in "
                     f"the database (e.g. {lone[0]!r}): left out of the retrieval figures, counted wrong in top1/vote")
    return "\n".join(lines)
