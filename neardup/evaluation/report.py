"""Writing an ``evaluate-retrieval`` result: JSON (validated), per-class and per-query CSVs, confusion matrices
and their plots, and the class split's files for ``neardup train``.

The caller owns the folder first (``neardup.outdir.claim_out_dir(out, "evaluate-retrieval", owned=OWNED)``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from neardup.data.labels import Labels
from neardup.errors import UsageError
from neardup.evaluation.retrieval import SCORE_NAMES, ClassSplit, RetrievalData, RetrievalOutput
from neardup.evaluation.schema import check_retrieval
from neardup.io_utils import atomic_write_json, atomic_write_text

#: Everything ``evaluate-retrieval`` writes in its --out: replaced whole by a re-run.
OWNED = ("retrieval.json", "per_class.csv", "queries.csv", "confusion_top1.csv", "confusion_vote.csv",
         "confusion_top1.png", "confusion_vote.png", "train_classes.txt", "eval_classes.txt", "train_labels.csv",
         "config.yaml")


def _csv(header: list[str], rows: Iterable[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _cell(v: object) -> object:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6f}" if isinstance(v, float) else v


def per_class_csv(output: RetrievalOutput) -> str:
    cols = ["class", "n_queries", "n_database", "n_scored", *SCORE_NAMES, "confused_with", "n_confused"]
    return _csv(cols, ([_cell(r[c]) for c in cols] for r in output.result.per_class))


def queries_csv(output: RetrievalOutput, data: RetrievalData) -> str:
    o, names = output.outcomes, data.names
    cols = ["path", "class", "top1", "vote", "nearest", "positives", "precision_at_1", "r_precision", "map_at_r",
            "mAP"]
    rows = ([data.q_paths[i], names[o.classes[i]], names[o.top1[i]], names[o.vote[i]], data.db_paths[o.nearest[i]],
             int(o.positives[i]), *(_cell(float(o.figures[f][i])) if f in o.figures else "" for f in cols[6:])]
            for i in range(len(o.classes)))
    return _csv(cols, rows)


def confusion_csv(cells: tuple[np.ndarray, np.ndarray, np.ndarray], names: list[str]) -> str:
    """The confusion matrix in long form, non-zero cells only (``true,predicted,count``; pivot it for a grid)."""
    return _csv(["true", "predicted", "count"],
                ([names[t], names[p], int(c)] for t, p, c in zip(*cells, strict=True)))


def _class_list(names: list[str], what: str) -> str:
    bad = next((n for n in names if "\n" in n or "\r" in n), None)
    if bad is not None:
        raise UsageError(f"class {bad!r} has a line break in its name, so it cannot be listed in {what}; "
                         "rename it")
    return "".join(f"{n}\n" for n in names)


def split_files(split: ClassSplit, labels: Labels) -> dict[str, str]:
    """The split as text: ``train_classes.txt`` / ``eval_classes.txt`` (one class a line) and ``train_labels.csv``
    (``path,label`` of every labelled image of the training classes: ``--labels`` for ``neardup train``)."""
    train = set(split.train)
    rows: list[list[object]] = [[p, c] for p, c in zip(labels.paths, labels.classes, strict=True) if c in train]
    return {"train_classes.txt": _class_list(split.train, "train_classes.txt"),
            "eval_classes.txt": _class_list(split.eval, "eval_classes.txt"),
            "train_labels.csv": _csv(["path", "label"], rows)}


def write_retrieval(out: str | Path, output: RetrievalOutput, data: RetrievalData, split: ClassSplit | None = None,
                    labels: Labels | None = None, plots: bool = True, max_classes: int = 30) -> list[Path]:
    """Write every output file into ``out``; the JSON is checked against its schema first. Returns the files.

    Raises:
        UsageError: a class name that cannot be listed one per line (split files).
    """
    from neardup.evaluation.plots import plot_confusion

    out = Path(out)
    doc = check_retrieval(output.result.to_dict(), "the result about to be written")  # a bug, never a bad file
    texts = {"per_class.csv": per_class_csv(output), "queries.csv": queries_csv(output, data)}
    mats = {by: output.outcomes.confusion(by) for by in ("top1", "vote")}
    for by, m in mats.items():
        texts[f"confusion_{by}.csv"] = confusion_csv(m, data.names)
    if split is not None:
        if labels is None:
            raise ValueError("the split files need the labels")
        texts.update(split_files(split, labels))
    written = []
    for name, text in texts.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    if plots:
        k = output.result.vote_k
        for by, m in mats.items():
            what = "nearest neighbour (top-1)" if by == "top1" else f"majority vote of the {k} nearest"
            acc = output.result.overall["top1_accuracy" if by == "top1" else "vote_accuracy"]
            written.append(plot_confusion(*m, data.names, out / f"confusion_{by}.png",
                                          f"{what}: accuracy {acc:.3f}", max_classes=max_classes))
    atomic_write_json(out / "retrieval.json", doc)  # last: the result is complete once it exists
    written.append(out / "retrieval.json")
    return written
