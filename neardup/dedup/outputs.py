"""The files a scan writes: ``groups.csv``, ``pairs.csv`` and ``summary.json`` (schema ``neardup.dedup/1``).

``summary.json`` is written last: it is the commit point of a scan (actions and the report read a scan only
once it exists, and they check its groups file against it).
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from neardup.dedup.find import SCHEMA, DedupResult
from neardup.dedup.inventory import image_size
from neardup.errors import UsageError
from neardup.io_utils import atomic_write_json, atomic_write_text, read_json_object

GROUP_FIELDS = ("group", "path", "is_keeper", "score", "kind", "width", "height", "bytes", "mtime_ns", "reference")
PAIR_FIELDS = ("group", "a", "b", "score")
SUMMARY = "summary.json"
#: everything a scan writes into its folder (``--overwrite`` removes only these)
OWNED = ("groups.csv", "pairs.csv", SUMMARY, "inputs.json", "inventory.json", "calibration.npz", "config.yaml",
         "report.html", "report_files/thumbs/*.jpg", "report_files/*.png", "report_files/*.json", "report_files/thumbs",
         "report_files/unreadable.jpg",
         "report_files")

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
SUMMARY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "files", "unreadable", "groups", "duplicates", "exact_duplicates", "near_duplicates",
                 "largest_group", "largest_group_share", "pairs", "threshold", "threshold_source", "calibration",
                 "model", "against", "timings_s", "inputs", "against_inputs", "config", "created"],
    "properties": {
        "schema": {"const": SCHEMA},
        "files": _INT, "unreadable": _INT, "groups": _INT, "duplicates": _INT, "exact_duplicates": _INT,
        "near_duplicates": _INT, "largest_group": _INT, "largest_group_share": _NUM, "pairs": _INT,
        "threshold": _NUM, "threshold_source": {"enum": ["calibrated", "given"]},
        "calibration": {"oneOf": [{"type": "null"}, {
            "type": "object",
            "required": ["threshold", "target_precision", "precision", "recall", "n_positives", "n_negatives",
                         "reached", "n_decoys", "n_neighbours"],
            "properties": {"threshold": _NUM, "target_precision": _NUM, "precision": _NUM, "recall": _NUM,
                           "n_positives": _INT, "n_negatives": _INT, "reached": {"type": "boolean"},
                           "n_decoys": _INT, "n_neighbours": _INT}}]},
        "model": {"type": "string"}, "against": {"type": "boolean"},
        "timings_s": {"type": "object", "additionalProperties": _NUM},
        "inputs": {"type": "array", "items": {"type": "string"}},
        "against_inputs": {"type": "array", "items": {"type": "string"}},
        "config": {"type": "object"}, "created": {"type": "string"},
        # absent in summaries written before score normalisation existed (then: none)
        "normalization": {"oneOf": [{"type": "null"}, {
            "type": "object", "required": ["background", "k", "beta", "reduction", "n_background"],
            "properties": {"background": {"type": "string"}, "k": _INT, "beta": _NUM,
                           "reduction": {"enum": ["mean", "kth"]}, "n_background": _INT}}]},
    },
}


def group_rows(result: DedupResult) -> list[dict[str, Any]]:
    """One row per file of a group, keeper first, groups in order."""
    rows = []
    for g, members in result.groups().items():
        for i in members:
            f = result.files[i]
            w, h = image_size(f.path)
            rows.append({"group": g, "path": f.path, "is_keeper": int(i == result.keepers[g]),
                         "score": round(float(result.scores[i]), 6), "kind": result.kinds[i], "width": w,
                         "height": h, "bytes": f.bytes, "mtime_ns": f.mtime_ns,
                         "reference": int(result.reference[i])})
    return rows


def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def summary(result: DedupResult, inputs: list[str], against: list[str] | None, config: dict[str, Any]
            ) -> dict[str, Any]:
    return {**result.to_dict(), "inputs": [os.path.abspath(p) for p in inputs],
            "against_inputs": [os.path.abspath(p) for p in against or []], "config": config,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def check_summary(doc: Any, where: str) -> dict[str, Any]:
    """A ``neardup.dedup/1`` summary, or one UsageError line naming the first problem."""
    errors = sorted(Draft202012Validator(SUMMARY_SCHEMA).iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        at = "/".join(str(p) for p in e.path) or "(top level)"
        raise UsageError(f"{where} is not a {SCHEMA} summary: at {at}: {e.message}")
    return doc


def read_summary(scan: str | os.PathLike) -> dict[str, Any]:
    path = Path(scan) / SUMMARY
    if not path.is_file():
        raise UsageError(f"{scan} holds no finished dedup scan (no {SUMMARY}); run `neardup dedup PATH --out {scan}`")
    return check_summary(read_json_object(path, "dedup summary"), str(path))


def write_outputs(result: DedupResult, out: str | os.PathLike, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """groups.csv and pairs.csv, then summary.json (the commit point), each atomically."""
    out = Path(out)
    check_summary(doc, "the summary being written")
    rows = group_rows(result)
    atomic_write_text(out / "groups.csv", _csv(rows, GROUP_FIELDS))
    pairs = [{"group": int(result.group[a]), "a": result.files[a].path, "b": result.files[b].path,
              "score": round(s, 6)} for a, b, s in result.pairs]
    atomic_write_text(out / "pairs.csv", _csv(pairs, PAIR_FIELDS))
    atomic_write_json(out / SUMMARY, doc)
    return rows
