"""Adding an index family is one registry entry: a toy family shows up in --help, works end to end
through `search bench` and `index build`/`query`, and passes the registry loop's checks."""

from __future__ import annotations

import json

import pytest

from neardup.errors import UsageError
from neardup.fastsearch.indexes import FAMILIES, IndexFamily, family_of, register_family, unregister_family
from tests.helpers import invoke

from .test_indexes import check_spec

TOY = IndexFamily("toy_hnsw_sq", r"HNSW\d+,SQ8", ("l2", "cosine"), ("efSearch",), "HNSW16,SQ8",
                  "HNSW graph over 8-bit scalar-quantised vectors (a test family)")


@pytest.fixture
def toy_family():
    with pytest.raises(UsageError, match="unsupported index spec"):
        family_of("HNSW16,SQ8")  # not supported before it is registered
    register_family(TOY)
    yield TOY
    unregister_family(TOY.name)
    assert TOY.name not in FAMILIES


def test_toy_family_is_listed_in_help(toy_family) -> None:
    for cmd in (["search", "bench", "--help"], ["index", "build", "--help"]):
        out = " ".join(invoke(*cmd).output.split())
        assert "toy_hnsw_sq (HNSW16,SQ8)" in out


def test_toy_family_passes_the_registry_loop(toy_family, tmp_path) -> None:
    check_spec(toy_family.example, tmp_path)


def test_toy_family_end_to_end(toy_family, retrieval_folders, tmp_path) -> None:
    f = retrieval_folders
    out = tmp_path / "bench"
    invoke("search", "bench", "--database", f["database"], "--queries", f["queries"], "--index", "Flat",
           "--index", "HNSW16,SQ8", "--ef-search", "64", "--latency-queries", "5", "--out", out, "--quiet")
    records = {r["factory"]: r for r in json.loads((out / "results.json").read_text())["records"]}
    assert set(records) == {"Flat", "HNSW16,SQ8"}
    toy = records["HNSW16,SQ8"]
    assert toy["family"] == "toy_hnsw_sq" and toy["params"] == {"efSearch": 64}
    assert toy["recall_at_1"] >= records["Flat"]["recall_at_1"] - 0.05
    invoke("index", "build", f["database"], "--factory", "HNSW16,SQ8", "--out", tmp_path / "idx")
    meta = json.loads(next((tmp_path / "idx").glob("gen-*/meta.json")).read_text())
    assert meta["factory"] == "HNSW16,SQ8" and meta["ntotal"] == 300
