"""JSON schema of ``neardup.retrieval/1`` (``evaluate-retrieval``'s ``retrieval.json``), checked with jsonschema.

Figures are numbers in [0, 1], or null where they cannot be computed (precision@10 of a database of fewer
than 11 images; retrieval figures of a class none of whose queries has a positive).
"""

from __future__ import annotations

import os
from typing import Any

from neardup.evaluation.retrieval import METRICS, PROTOCOLS, SCHEMA, SCORE_NAMES
from neardup.fastsearch.schema import check_result
from neardup.io_utils import read_json

INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
FIGURE = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
FIGURES = SCORE_NAMES
SCORES = {"type": "object", "additionalProperties": False, "required": list(FIGURES),
          "properties": {name: FIGURE for name in FIGURES}}
CLASS_ROW = {
    "type": "object", "additionalProperties": False,
    "required": ["class", "n_queries", "n_database", "n_scored", *FIGURES, "confused_with", "n_confused"],
    "properties": {"class": STR, "n_queries": INT, "n_database": INT, "n_scored": INT,
                   **{name: FIGURE for name in FIGURES}, "confused_with": {"type": ["string", "null"]},
                   "n_confused": INT},
}

RETRIEVAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA,
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "neardup_version", "protocol", "model", "metric", "vote_k", "ks", "n_database",
                 "n_queries", "n_scored", "n_without_positive", "n_classes", "overall", "macro", "per_class",
                 "classes_without_positive", "split", "search_seconds", "inputs", "config", "environment"],
    "properties": {
        "schema": {"const": SCHEMA},
        "neardup_version": STR,
        "protocol": {"enum": list(PROTOCOLS)},
        "model": STR,
        "metric": {"enum": list(METRICS)},
        "vote_k": {"type": "integer", "minimum": 1},
        "ks": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "n_database": INT, "n_queries": INT, "n_scored": INT, "n_without_positive": INT, "n_classes": INT,
        "overall": SCORES,
        "macro": SCORES,
        "per_class": {"type": "array", "items": CLASS_ROW},
        "classes_without_positive": {"type": "array", "items": STR},
        "split": {"oneOf": [
            {"type": "null"},
            {"type": "object", "additionalProperties": False, "required": ["seed", "train_classes", "eval_classes"],
             "properties": {"seed": INT, "train_classes": {"type": "array", "items": STR},
                            "eval_classes": {"type": "array", "items": STR}}},
        ]},
        "search_seconds": {"type": "number", "minimum": 0},
        "inputs": {"type": "object"},
        "config": {"type": "object"},
        "environment": {"type": "object"},
    },
}


def check_retrieval(obj: Any, source: str = "retrieval result") -> dict[str, Any]:
    """``obj`` when it is a valid ``neardup.retrieval/1`` document; else one UsageError naming ``source``."""
    return check_result(obj, RETRIEVAL_SCHEMA, source)


def load_retrieval(path: str | os.PathLike) -> dict[str, Any]:
    """A ``retrieval.json`` file, validated (UsageError naming the file for anything wrong)."""
    return check_retrieval(read_json(path, "retrieval result"), str(path))
