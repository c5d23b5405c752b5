"""Files a user put into or beside neardup's outputs survive every re-run and --overwrite (hostile-test findings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import expect_error, invoke


@pytest.fixture
def store(image_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "feats"
    invoke("extract", image_dir, "--out", out, "--model", "phash", "--workers", "0")
    return out


def test_result_files_never_replace_a_users_file(store, image_dir, tmp_path) -> None:
    invoke("index", "build", store, "--out", tmp_path / "idx", "--factory", "BFlat")
    mine = tmp_path / "mine.png"
    mine.write_bytes((image_dir / "img1.png").read_bytes())
    before = mine.read_bytes()
    q = image_dir / "img0.png"
    expect_error("query", tmp_path / "idx", q, "--out", mine, message="was not written by neardup")
    expect_error("query", tmp_path / "idx", q, "--grid", mine, message="was not written by neardup")
    expect_error("search", "exact", "--database", store, "--queries", store, "--out", store / "meta.json",
                 message="was not written by neardup")
    assert mine.read_bytes() == before and json.loads((store / "meta.json").read_text())["model"] == "phash"
    # neardup's own results may be replaced by a re-run
    for _ in range(2):
        invoke("query", tmp_path / "idx", q, "--out", tmp_path / "r.json", "--grid", tmp_path / "g.png")
        invoke("query", tmp_path / "idx", q, "--grid", tmp_path / "g.pdf")
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "neardup.query/1"


def test_overwrite_and_reruns_keep_user_files_in_subfolders(store, image_dir, tmp_path) -> None:
    (store / "shards" / "notes.txt").write_text("mine")
    invoke("extract", image_dir, "--out", store, "--model", "phash", "--workers", "0", "--overwrite")
    assert (store / "shards" / "notes.txt").read_text() == "mine" and (store / "shards" / "00000.npy").is_file()

    idx = tmp_path / "idx"
    invoke("index", "build", store, "--out", idx, "--factory", "BFlat")
    gen = next(idx.glob("gen-*"))
    (gen / "notes.txt").write_text("mine")
    invoke("index", "build", store, "--out", idx, "--factory", "BFlat", "--overwrite")
    assert (gen / "notes.txt").read_text() == "mine"
    assert (idx / "CURRENT").read_text().strip() != gen.name  # the old generation's own files are gone
    assert not (gen / "index.faiss").exists()

    cl = tmp_path / "cl"
    invoke("cluster", store, "--out", cl, "--threshold", "10", "--quiet")
    (cl / "plots" / "mine.png").write_bytes(b"mine")
    invoke("cluster", store, "--out", cl, "--threshold", "12", "--quiet")
    assert (cl / "plots" / "mine.png").read_bytes() == b"mine" and (cl / "plots" / "sizes.png").is_file()


@pytest.mark.parametrize("yaml_text, message", [
    ("batch_size: [1, 2]\n", "key 'batch_size'"), ("batch_size: true\n", "key 'batch_size'"),
    ("batch_size: {a: 1}\n", "key 'batch_size'"), ("out: [a, b]\n", "key 'out'"),
    ("batch_size: 0\n", "key 'batch_size'"),
])
def test_config_values_of_the_wrong_type_are_one_error(image_dir, tmp_path, yaml_text, message) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    expect_error("extract", image_dir, "--out", tmp_path / "o", "--config", cfg, message=message)


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed"), (["--threads", "100000"], "--threads"),
    (["--synthetic", "1000000000000"], "--synthetic"),
])
def test_search_bench_bounds(store, tmp_path, args, message) -> None:
    expect_error("search", "bench", "--database", store, "--queries", store, "--out", tmp_path / "b", *args,
                 message=message)


def test_hnsw_without_links_is_refused_not_aborted(store, tmp_path) -> None:
    """faiss aborts the whole process on HNSW0 (SIGABRT): refused with one line instead."""
    expect_error("index", "build", store, "--out", tmp_path / "i", "--factory", "BHNSW0", message="at least 2 links")
    expect_error("cluster", store, "--out", tmp_path / "c", "--index", "BHNSW1", "--threshold", "5",
                 message="at least 2 links")


def test_query_with_no_readable_image_is_an_error(store, image_dir, tmp_path) -> None:
    invoke("index", "build", store, "--out", tmp_path / "idx", "--factory", "BFlat")
    expect_error("query", tmp_path / "idx", tmp_path / "missing.png", message="no query image could be read")
    res = invoke("query", tmp_path / "idx", image_dir / "img0.png", tmp_path / "missing.png")
    assert f"skipped {tmp_path / 'missing.png'}" in res.stderr
    assert len(json.loads(res.stdout)["results"]) == 1
