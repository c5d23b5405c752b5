"""JSON schemas of ``neardup.search.bench/1`` and ``neardup.search.exact/1`` results, and a small validator.

The schemas are standard JSON Schema documents (``BENCH_SCHEMA``, ``EXACT_SCHEMA``), so other
tools can validate with ``jsonschema``; :func:`errors` implements the subset they use (type,
required, properties, items, const, additionalProperties) with no extra dependency. ``report``
and ``plot`` validate their input with it, so a file of the wrong shape gives one clear line.
"""

from __future__ import annotations

from typing import Any

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

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value: Any, t: str) -> bool:
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[t])


def errors(obj: Any, schema: dict[str, Any] = BENCH_SCHEMA, path: str = "$") -> list[str]:
    """Every violation of ``schema`` in ``obj`` as ``"path: message"`` (empty when valid)."""
    out: list[str] = []
    if "const" in schema and obj != schema["const"]:
        out.append(f"{path}: expected {schema['const']!r}, got {obj!r}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(obj, t) for t in types):
            return out + [f"{path}: expected {'/'.join(types)}, got {type(obj).__name__}"]
    if isinstance(obj, dict):
        props = schema.get("properties", {})
        out += [f"{path}: missing {k!r}" for k in schema.get("required", []) if k not in obj]
        for k, v in obj.items():
            if k in props:
                out += errors(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected key {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += errors(v, schema["additionalProperties"], f"{path}.{k}")
    if isinstance(obj, list) and "items" in schema:
        for i, v in enumerate(obj):
            out += errors(v, schema["items"], f"{path}[{i}]")
    return out


def validate(obj: Any, schema: dict[str, Any] = BENCH_SCHEMA) -> None:
    """Raise ValueError listing the first violations when ``obj`` does not follow ``schema``."""
    errs = errors(obj, schema)
    if errs:
        raise ValueError("invalid bench result: " + summary(errs))


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
