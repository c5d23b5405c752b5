"""JSON schemas of ``neardup.search.bench/1`` and ``neardup.search.exact/1`` results, validated with ``jsonschema``.

The schemas are standard JSON Schema (draft 2020-12) documents (``BENCH_SCHEMA``, ``EXACT_SCHEMA``);
``report`` and ``plot`` validate their input with :func:`check_result`, so a file of the wrong shape
gives one clear line naming the file, the schema and the JSON path of each problem.

Recall is spelled by k in both (``recall_at_1`` fields in bench records, a ``recall`` object keyed
``"1"``, ``"5"``, ``"10"`` in exact results, whose k list varies with ``-k``); the text tables say
``recall@1``. The two JSON layouts are versioned, so they stay as they are.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from neardup.errors import UsageError

NUM = {"type": "number"}
INT = {"type": "integer"}
STR = {"type": "string"}
OPT_NUM = {"type": ["number", "null"]}

RECORD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["index", "factory", "family", "metric", "params", "k", "n_database", "n_queries", "dim",
                 "train_seconds", "add_seconds", "index_bytes", "bytes_per_vector", "search_seconds", "qps",
                 "latency_ms_p50", "latency_ms_p99", "latency_queries", "recall_at_1", "recall_at_10", "mAP", "muAP",
                 "ann_recall_1_at_1", "ann_recall_10_at_10", "exact_recall_at_1", "threads", "device", "note"],
    "properties": {
        "index": STR, "factory": STR, "family": STR, "metric": STR,
        "params": {"type": "object", "additionalProperties": INT},
        "k": INT, "n_database": INT, "n_queries": INT, "dim": INT,
        "train_seconds": NUM, "add_seconds": NUM, "index_bytes": INT, "bytes_per_vector": NUM,
        "search_seconds": NUM, "qps": NUM, "latency_ms_p50": OPT_NUM, "latency_ms_p99": OPT_NUM,
        "latency_queries": INT, "recall_at_1": NUM, "recall_at_10": OPT_NUM, "mAP": NUM, "muAP": NUM,
        "ann_recall_1_at_1": NUM, "ann_recall_10_at_10": OPT_NUM, "exact_recall_at_1": NUM,
        "threads": INT, "device": STR, "note": STR,
    },
}

BENCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "neardup.search.bench/1",
    "type": "object",
    "required": ["schema", "dataset", "exact", "records", "config", "environment", "created"],
    "properties": {
        "schema": {"const": "neardup.search.bench/1"},
        "dataset": {"type": "object", "required": ["n_database", "n_real", "n_synthetic", "n_queries", "dim"],
                    "properties": {"n_database": INT, "n_real": INT, "n_synthetic": INT, "n_queries": INT, "dim": INT}},
        "exact": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["recall_at_1", "recall_at_10", "mAP", "muAP", "seconds"],
            "properties": {"recall_at_1": NUM, "recall_at_10": OPT_NUM, "mAP": NUM, "muAP": NUM, "seconds": NUM}}},
        "records": {"type": "array", "items": RECORD},
        "config": {"type": "object"},
        "environment": {"type": "object"},
        "created": STR,
    },
}

SCORES = {
    "type": "object",
    "additionalProperties": False,
    "required": ["n_queries", "recall", "mAP", "muAP"],
    "properties": {"n_queries": INT, "recall": {"type": "object", "additionalProperties": NUM}, "mAP": NUM,
                   "muAP": NUM},
}

EXACT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "neardup.search.exact/1",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "model", "metric", "k", "n_database", "n_distractors", "n_queries", "n_unmatched_queries",
                 "overall", "per_family", "per_attack", "search_seconds"],
    "properties": {
        "schema": {"const": "neardup.search.exact/1"},
        "model": STR, "metric": STR, "k": INT, "n_database": INT, "n_distractors": INT, "n_queries": INT,
        "n_unmatched_queries": INT, "overall": SCORES,
        "per_family": {"type": "object", "additionalProperties": SCORES},
        "per_attack": {"type": "object", "additionalProperties": SCORES},
        "search_seconds": NUM, "config": {"type": "object"}, "environment": {"type": "object"},
    },
}

def _message(e: ValidationError) -> str:
    """One violation as ``"$.path: message"``, in the short words the CLI prints."""
    got = type(e.instance).__name__
    if e.validator == "type":
        types = e.validator_value if isinstance(e.validator_value, list) else [e.validator_value]
        msg = f"expected {'/'.join(types)}, got {got}"
    elif e.validator == "required":
        msg = f"missing {e.message.split(' is a required property')[0]}"
    elif e.validator == "additionalProperties" and e.validator_value is False and isinstance(e.instance, dict):
        known = e.schema.get("properties", {})
        msg = ", ".join(f"unexpected key {k!r}" for k in e.instance if k not in known)
    elif e.validator == "const":
        msg = f"expected {e.validator_value!r}, got {e.instance!r}"
    else:
        msg = e.message
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
    return f"{path}: {msg}"


def _order(e: ValidationError) -> list[tuple[int, Any]]:
    # outer problems first, then by position; list indices and keys never compared with each other
    return [(0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path]


def errors(obj: Any, schema: dict[str, Any] = BENCH_SCHEMA) -> list[str]:
    """Every violation of ``schema`` in ``obj`` as ``"$.json.path: message"`` (empty when valid)."""
    return [_message(e) for e in sorted(Draft202012Validator(schema).iter_errors(obj), key=_order)]


def validate(obj: Any, schema: dict[str, Any] = BENCH_SCHEMA) -> None:
    """Raise ValueError listing the first violations when ``obj`` does not follow ``schema``."""
    errs = errors(obj, schema)
    if errs:
        raise ValueError(f"not a valid {schema.get('$id', 'result')} result: {summary(errs)}")


def summary(errs: list[str], n: int = 3) -> str:
    """The first ``n`` violations on one line."""
    return "; ".join(errs[:n]) + (f" (and {len(errs) - n} more)" if len(errs) > n else "")


def check_result(obj: Any, schema: dict[str, Any], source: str) -> dict[str, Any]:
    """``obj`` when it follows ``schema``; else a UsageError naming ``source``, the schema and what is wrong."""
    sid = schema.get("$id", "result")
    if not isinstance(obj, dict):
        raise UsageError(f"{source}: not a {sid} result (a JSON {type(obj).__name__}, expected an object)")
    if obj.get("schema") != sid:
        raise UsageError(f"{source}: expected schema {sid}, got {obj.get('schema')!r}")
    errs = errors(obj, schema)
    if errs:
        raise UsageError(f"{source}: not a valid {sid} result: {summary(errs)}")
    return obj
