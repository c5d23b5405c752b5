"""Manifests and ids: malformed files give one clear error; ids stay unique; the manifest is authoritative."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neardup.data.manifest import (
    STATE_NAME,
    ManifestRow,
    image_ids,
    load_ground_truth,
    query_key,
    read_manifest,
    write_manifest,
)
from neardup.errors import UsageError

HEADER = "query,source,source_path,attack,family,params\n"


@pytest.mark.parametrize("content, message", [
    (HEADER.encode() + b"q\xff.jpg,cat,,jpeg_10,jpeg,{}\n", "is not UTF-8 text"),
    (b"query,source\ncat_x.jpg,cat\n", "manifest lacks columns ['attack']"),
    (b"", "manifest lacks columns ['query', 'source', 'attack']"),
    (HEADER.encode() + b"cat_x.jpg\n", "lacks a query, source or attack"),
    (HEADER.encode() + b",cat,,x,x,{}\n", "lacks a query, source or attack"),
    (HEADER.encode() + b"cat_x.jpg,cat,,x,x,{},surplus\n", "more fields than the header"),
    (HEADER.encode() + b"cat_x.jpg,cat,,x,x,{}\n./cat_x.jpg,dog,,x,x,{}\n", "is already listed on line 2"),
    (HEADER.encode(), "lists no queries"),
    (HEADER.encode() + b"cat_x.jpg,\"" + b"a" * 200_000 + b"\",,x,x,{}\n", "not a valid CSV file"),
], ids=["not-utf8", "missing-column", "empty-file", "short-row", "empty-query", "extra-field", "duplicate-query",
        "no-rows", "huge-field"])
def test_malformed_manifests(tmp_path, content, message):
    (tmp_path / "manifest.csv").write_bytes(content)
    with pytest.raises(UsageError) as exc:
        read_manifest(tmp_path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_manifest_round_trip_and_readable_paths(tmp_path):
    rows = [ManifestRow("cat_x.jpg", "cat", "/abs/photos/cat.jpg", "x", "invert", "{}"),
            ManifestRow("sub/dog, the_x.jpg", "sub__dog, the", "../photos/sub/dog, the.png", "x", "invert", "{}")]
    write_manifest(rows, tmp_path / "manifest.csv")
    assert read_manifest(tmp_path / "manifest.csv") == rows  # absolute and '..' source paths are fine to read
    (tmp_path / "bom").mkdir()
    (tmp_path / "bom" / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "manifest.csv").read_bytes())
    assert read_manifest(tmp_path / "bom") == rows  # a UTF-8 BOM (spreadsheet export) is accepted


def test_ids_keep_the_extension_only_when_stems_collide(tmp_path):
    paths = [tmp_path / n for n in ("cat.jpg", "cat.png", "dog.png", "sub/cat.jpg", "sub/bird.tif")]
    assert image_ids(paths, tmp_path) == ["cat.jpg", "cat.png", "dog", "sub__cat", "sub__bird"]
    assert image_ids([tmp_path / "x" / "a.jpg"], tmp_path / "y") == ["a"]  # outside root: the name, as before


def test_query_key_matches_relative_absolute_and_dotted_forms(tmp_path):
    assert query_key("cat_x.jpg") == query_key("./cat_x.jpg") == query_key(tmp_path / "cat_x.jpg", tmp_path)
    assert query_key("cat_x.jpg") != query_key("cat_x.png")
    assert query_key(tmp_path / "sub" / "a.jpg", tmp_path) == "sub/a.jpg"


def test_unfinished_attack_output_is_not_read_from_names(tmp_path, image_dir):
    q = tmp_path / "q"
    q.mkdir()
    (q / "img0_invert.jpg").write_bytes((image_dir / "img0.png").read_bytes())
    assert [r.source for r in load_ground_truth(q)] == ["img0"]  # a plain folder: names are parsed
    (q / STATE_NAME).write_text(json.dumps({"fingerprint": "x", "committed": False, "sources": {}, "plans": []}))
    with pytest.raises(UsageError, match="unfinished `neardup attack` output"):
        load_ground_truth(q)
    (q / STATE_NAME).write_text(json.dumps({"fingerprint": "x", "committed": True, "sources": {}, "plans": []}))
    assert [r.source for r in load_ground_truth(q)] == ["img0"]


def test_search_counts_only_queries_the_manifest_lists(tmp_path):
    """A stale query (same stem, other extension) in the query folder is not counted, not even as a duplicate."""
    from neardup.fastsearch.dataset import load_retrieval_set
    from tests.fastsearch.conftest import make_store

    rng = np.random.default_rng(0)
    db = rng.normal(size=(3, 8)).astype(np.float32)
    make_store(tmp_path / "dbf", db, ["a.jpg", "b.jpg", "c.jpg"])
    # the listed query is a copy of b; the stale .png (an earlier --format) is a copy of c
    qdir = make_store(tmp_path / "qf", np.stack([db[1], db[2]]), ["a_x.jpg", "a_x.png"])
    write_manifest([ManifestRow("a_x.jpg", "b", "", "x", "x", "{}")], qdir / "manifest.csv")
    rs = load_retrieval_set(tmp_path / "dbf", qdir)
    assert len(rs.gt) == 1 and rs.n_unmatched == 1 and rs.gt[0] == 1
    np.testing.assert_array_equal(rs.queries, db[1:2])


def test_feature_ids_match_attack_source_ids(tmp_path):
    """A feature folder of a source folder with cat.jpg and cat.png gets the ids the attack manifest uses."""
    from neardup.extract.store import FeatureStore
    from tests.fastsearch.conftest import make_store

    make_store(tmp_path / "f", np.zeros((3, 4), np.float32), ["cat.jpg", "cat.png", "dog.jpg"])
    assert FeatureStore.open(tmp_path / "f").ids() == ["cat.jpg", "cat.png", "dog"]
