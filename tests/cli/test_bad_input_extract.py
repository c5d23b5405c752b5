"""Malformed `extract` / `convert` invocations and damaged feature folders: one `Error:` line each, never a
traceback, never an internal error, and nothing of the user's removed."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest

from neardup.extract.store import FeatureStore
from tests.extract.tiny import CORRUPTIONS, tiny_store
from tests.helpers import assert_one_error, expect_error, invoke

PHASH = ("--model", "phash", "--workers", "0")


@pytest.mark.parametrize("args, message", [
    (("--model", "phash", "--input-size", "64"), "--input-size does not apply to phash"),
    (("--model", "dhash", "--amp", "fp16"), "--amp does not apply to dhash"),
    (("--model", "ahash", "--compile"), "--compile does not apply to ahash"),
    (("--model", "whash", "--layer", "head0"), "--layer does not apply to whash"),
    (("--model", "phash", "--dtype", "float16"), "--dtype float16 applies to float features"),
    (("--model", "phash", "--engine", "onnx"), "--engine onnx applies to networks"),
    (("--model", "phash", "--normalize"), "apply to float features, not to hashes"),
    (("--model", "vit_b_16", "--input-size", "64"), "only runs at 224 pixels"),
    (("--model", "inception_v3", "--input-size", "64"), "needs at least 75 pixels"),
    (("--model", "efficientnet_lite0", "--input-size", "8"), "Invalid value for '--input-size'"),
    (("--model", "efficientnet_lite0", "--input-size", "100000"), "Invalid value for '--input-size'"),
    (("--model", "phash", "--workers", "-1"), "Invalid value for '--workers'"),
    (("--model", "phash", "--max-pixels", "0"), "Invalid value for '--max-pixels'"),
    (("--model", "finetuned",), "needs --weights"),
], ids=lambda x: "-".join(x) if isinstance(x, tuple) else None)
def test_options_a_model_cannot_honour(image_dir, tmp_path, args, message):
    expect_error("extract", image_dir, "--out", tmp_path / "o", *args, message=message)
    assert not (tmp_path / "o").exists()


def test_bad_list_files(image_dir, tmp_path):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"{image_dir / 'img0.png'}\nimages/img1.png\n")
    expect_error("extract", mixed, "--out", tmp_path / "o", *PHASH, message="mixes absolute paths (line 1")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9.png\n")
    expect_error("extract", latin, "--out", tmp_path / "o", *PHASH, message="latin.txt is not UTF-8 text")
    expect_error("extract", image_dir / "img3.png", "--out", tmp_path / "o", *PHASH, message="is an image")
    assert not (tmp_path / "o").exists()


def test_overwrite_into_a_folder_that_is_not_an_extraction(image_dir, tmp_path):
    out = tmp_path / "theirs"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "data.bin").write_bytes(b"x")
    (out / "job.json").write_text('{"their": "job"}')
    expect_error("extract", image_dir, "--out", out, *PHASH, message="not empty and was not written")
    expect_error("extract", image_dir, "--out", out, *PHASH, "--overwrite", message="was not written by neardup")
    assert (out / "shards" / "data.bin").read_bytes() == b"x" and (out / "job.json").read_text() == '{"their": "job"}'


def test_resume_with_a_changed_option_is_one_error(image_dir, tmp_path):
    out = tmp_path / "f"
    invoke("extract", image_dir, "--out", out, *PHASH, "--shard-size", "2")
    line = expect_error("extract", image_dir, "--out", out, *PHASH, "--shard-size", "2", "--max-pixels", "6200",
                        message="different max_pixels (--max-pixels: 178956970 -> 6200)")
    assert "new --out" in line and "--overwrite" in line
    res = invoke("extract", image_dir, "--out", out, *PHASH, "--shard-size", "2", "--max-pixels", "6200",
                 "--overwrite")
    assert "6 images" in res.output


def test_disk_full_mid_run_then_the_rerun_resumes_identically(image_dir, tmp_path, monkeypatch):
    import neardup.extract.pipeline as pipeline

    args = ("--shard-size", "2", *PHASH)
    invoke("extract", image_dir, "--out", tmp_path / "clean", *args)
    real = pipeline.write_shard
    calls = []

    def fills_up(out, index, *a, **k):
        calls.append(index)
        if len(calls) == 2:  # the disk fills while the second shard is written (no file name on the error)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out, index, *a, **k)

    monkeypatch.setattr(pipeline, "write_shard", fills_up)
    out = tmp_path / "f"
    line = assert_one_error(invoke("extract", image_dir, "--out", out, *args, ok=False), "disk full writing")
    assert f"{out}/shards/00001.npy" in line and "re-run" in line
    assert not (out / "meta.json").exists()
    monkeypatch.setattr(pipeline, "write_shard", real)
    res = invoke("extract", image_dir, "--out", out, *args)
    assert "resumed after 1 shard(s)" in res.output
    a, b = FeatureStore.open(out), FeatureStore.open(tmp_path / "clean")
    assert a.paths == b.paths
    np.testing.assert_array_equal(a.features(), b.features())


@pytest.fixture
def stores(image_dir, tmp_path):
    return tiny_store(image_dir, tmp_path / "good"), tmp_path


@pytest.mark.parametrize("command", ["search", "cluster"])
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_damaged_feature_folders_through_search_and_cluster(stores, name, command):
    good, tmp_path = stores
    damage, words = CORRUPTIONS[name]
    bad = tmp_path / name
    shutil.copytree(good, bad)
    damage(bad)
    if command == "search":
        line = expect_error("search", "exact", "--database", bad, "--queries", good, "--quiet", message=words)
    else:
        line = expect_error("cluster", bad, "--out", tmp_path / "c", message=words)
    assert str(bad) in line


def test_the_good_tiny_store_passes_both(stores):
    good, tmp_path = stores
    invoke("cluster", good, "--out", tmp_path / "c")


def test_convert_byol_deeply_nested_pickle(tmp_path):
    src = tmp_path / "deep.pkl"
    src.write_bytes(b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".")
    line = expect_error("convert", "byol", src, tmp_path / "out.pth", message="nested deeper than 64 levels")
    assert str(src) in line and not (tmp_path / "out.pth").exists()
