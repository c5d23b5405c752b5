"""Indexes record their feature space; index add, query and search check it with the one function."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.extract.postprocess import FILE, FeatureTransform
from neardup.extract.space import FeatureSpace
from neardup.fastsearch.dataset import load_retrieval_set
from neardup.fastsearch.persist import IndexDir, add_features, build_index_dir

from .conftest import clustered, make_store


def stores(tmp_path: Path) -> dict[str, Path]:
    db, _, _ = clustered(120, 16, 5)
    out = {name: make_store(tmp_path / name, db[i * 40:(i + 1) * 40], [f"{name}{j}.jpg" for j in range(40)])
           for i, name in enumerate(("a", "b", "c"))}
    FeatureTransform(l2=True).save(out["b"] / FILE)
    (out["c"] / "job.json").write_text(json.dumps({"model": "toy", "weights_sha256": "c" * 64}))
    (out["a"] / "job.json").write_text(json.dumps({"model": "toy", "weights_sha256": "a" * 64}))
    return out


def test_index_records_its_space_and_add_checks_it(tmp_path):
    s = stores(tmp_path)
    build_index_dir(s["a"], "Flat", tmp_path / "idx", metric="euclidean")
    idx = IndexDir.open(tmp_path / "idx")
    assert idx.meta.metric == "l2"  # the one library name
    assert FeatureSpace.of_index(idx.meta) == FeatureSpace("toy", 16, "cosine", {"input_size": 8}, None, "a" * 64)
    with pytest.raises(UsageError, match="feature folder .*b and the index use different stored transforms"):
        add_features(tmp_path / "idx", s["b"])
    with pytest.raises(UsageError, match="other weights .* than the index"):
        add_features(tmp_path / "idx", s["c"])
    assert IndexDir.open(tmp_path / "idx").meta.ntotal == 40  # nothing was added


def test_an_index_without_a_recorded_space_is_still_checked(tmp_path):
    """Index folders written before ``space`` existed: the space comes from their model/dim/... fields."""
    s = stores(tmp_path)
    build_index_dir(s["a"], "Flat", tmp_path / "idx")
    gen = IndexDir.open(tmp_path / "idx").folder
    meta = json.loads((gen / "meta.json").read_text())
    del meta["space"]
    (gen / "meta.json").write_text(json.dumps(meta))
    assert add_features(tmp_path / "idx", s["c"]) == 40  # the old record knows no weights: not held against c
    with pytest.raises(UsageError, match="stored transform"):
        add_features(tmp_path / "idx", s["b"])
    gen = IndexDir.open(tmp_path / "idx").folder
    meta = json.loads((gen / "meta.json").read_text())
    meta["space"] = {"model": "toy"}
    (gen / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="is damaged: its feature space .* lacks model, dim or metric"):
        IndexDir.open(tmp_path / "idx")


def test_search_refuses_queries_from_another_space(tmp_path):
    s = stores(tmp_path)
    with pytest.raises(UsageError, match=f"feature spaces disagree: queries {s['b']} and database {s['a']} use "
                                         f"different stored transforms"):
        load_retrieval_set(s["a"], s["b"])
    with pytest.raises(UsageError, match=f"distractors {s['c']} was extracted with other weights"):
        load_retrieval_set(s["a"], s["a"], [s["c"]])
    with pytest.raises(UsageError, match="not binary hashes: use metric cosine or l2, not hamming"):
        load_retrieval_set(s["a"], s["a"], metric="hamming")
    with pytest.raises(UsageError, match="unknown metric 'l1'"):
        load_retrieval_set(s["a"], s["a"], metric="l1")


def test_exact_search_streams_the_database_in_blocks(tmp_path, monkeypatch):
    """search exact uses the streamed exact k-NN: blocks smaller than the database give the same result."""
    import neardup.fastsearch.exact as exact
    from neardup.fastsearch.dataset import RetrievalSet

    db, q, gt = clustered(300, 16, 30)
    rs = RetrievalSet(db, [str(i) for i in range(300)], q, [str(i) for i in range(30)], gt, np.array(["f"] * 30),
                      np.array(["a"] * 30), "cosine")
    whole = exact.evaluate(rs, k=5)
    monkeypatch.setattr(exact, "BLOCK", 7)
    blocked = exact.evaluate(rs, k=5)
    assert blocked.overall == whole.overall and whole.overall.recall["1"] > 0.9
    assert exact.evaluate(rs, k=1000).k == 300  # k capped at the database size
