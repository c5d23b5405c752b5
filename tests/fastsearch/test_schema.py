"""Result schemas are validated with jsonschema; problems come back as one line naming file, schema and path."""

from __future__ import annotations

import jsonschema
import pytest

from neardup.errors import UsageError
from neardup.fastsearch.schema import BENCH_SCHEMA, EXACT_SCHEMA, check_result, errors, validate

SCORES = {"n_queries": 2, "recall": {"1": 0.5, "10": 1.0}, "mAP": 0.7, "muAP": 0.6}
EXACT = {"schema": "neardup.search.exact/1", "model": "toy", "metric": "cosine", "k": 10, "n_database": 5,
         "n_distractors": 0, "n_queries": 2, "n_unmatched_queries": 0, "overall": SCORES,
         "per_family": {"blur": SCORES}, "per_attack": {"blur": SCORES}, "search_seconds": 0.1}


def test_schemas_are_valid_draft_2020_12_documents():
    for schema in (BENCH_SCHEMA, EXACT_SCHEMA):
        jsonschema.Draft202012Validator.check_schema(schema)
    assert errors(EXACT, EXACT_SCHEMA) == []
    jsonschema.validate(EXACT, EXACT_SCHEMA)  # other tools validate our files the standard way


def test_violations_name_the_json_path_in_short_words():
    bad = {**EXACT, "overall": 3, "per_family": {"blur": {**SCORES, "recall": {"1": "high"}}}, "surprise": 1}
    del bad["k"]
    errs = errors(bad, EXACT_SCHEMA)
    assert set(errs[:2]) == {"$: missing 'k'", "$: unexpected key 'surprise'"}  # outer problems first
    assert errs[2:] == ["$.overall: expected object, got int", "$.per_family.blur.recall.1: expected number, got str"]
    assert errors([], EXACT_SCHEMA) == ["$: expected object, got list"]
    assert errors({**EXACT, "k": True}, EXACT_SCHEMA) == ["$.k: expected integer, got bool"]  # bool is not a number


def test_check_result_is_one_usage_error_line():
    bad = {**EXACT, "overall": [], "per_attack": {"x": 1}, "model": 3, "metric": None}
    with pytest.raises(UsageError) as err:
        check_result(bad, EXACT_SCHEMA, "r.json")
    msg = str(err.value)
    assert msg.startswith("r.json: not a valid neardup.search.exact/1 result: $.metric: expected string, got NoneType")
    assert msg.endswith("(and 1 more)") and "\n" not in msg
    with pytest.raises(UsageError, match="r.json: expected schema neardup.search.exact/1, got 'other/1'"):
        check_result({**EXACT, "schema": "other/1"}, EXACT_SCHEMA, "r.json")
    with pytest.raises(ValueError, match="not a valid neardup.search.bench/1 result: \\$: missing 'dataset'"):
        validate({"schema": "neardup.search.bench/1"})
