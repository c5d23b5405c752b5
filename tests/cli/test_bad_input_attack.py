"""``neardup attack``: every malformed invocation ends in one ``Error:`` line, and nothing outside DST is written."""

from __future__ import annotations

import errno

import pytest

import neardup.data.generate as gen
from tests.helpers import assert_one_error, expect_error, invoke

BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(9))


@pytest.mark.parametrize("content, message", [
    (b'attacks: [{attack: invert, name: "../../../../victim"}]\n', "attack name '../../../../victim' is not allowed"),
    (b'attacks: [{attack: invert, name: "/tmp/victim"}]\n', "is not allowed"),
    (b"attacks: [{attack: scale, params: {ratio: [1.0, ../../victim]}}]\n",
     "attack 'scale' parameter 'ratio' = '../../victim' is not a number"),
    (b"attacks: [{attack: scale, params: {ratio: 200}}]\n",
     "attack 'scale' parameter 'ratio' = 200 is outside its range [0.01, 2]"),
    (b"attacks: [{attack: median_blur, params: {kernel: 1001}}]\n", "'kernel' = 1001 is outside its range [1, 15]"),
    (b"attacks: [{attack: rotation, params: {angle: .nan}}]\n", "'angle' = nan is not a finite number"),
    (b"attacks: [{attack: scale, params: {ratoi: 2}}]\n", "attack 'scale' has no parameter 'ratoi'"),
    (b"attacks: [{attack: jpeg, params: {quality: high}}]\n", "'quality' = 'high' is not an integer in [1, 100]"),
    (b"attacks: [{attack: scale}]\n", "attack 'scale' needs parameter 'ratio'"),
    (b"attacks: []\n", "the 'attacks' list is empty"),
    (b"attacks: [{attack: invert}, {attack: hflip, name: invert}]\n", "duplicate attack names 'invert' and 'invert'"),
    (b"attacks: [{attack: nope}]\n", "unknown attack 'nope'"),
    (b"attacks: [{attack: invert, name: \"\xe9\"}]\n", "is not UTF-8 text"),
    (BOMB.encode() + b"attacks: [{attack: invert}]\n", "YAML aliases"),
    (b"attacks: [unclosed\n", "bad YAML"),
    (b"- {attack: invert}\n", "must be a mapping with an 'attacks' list"),
], ids=["name-escape", "name-absolute", "list-value-escape", "ratio-200", "kernel-1001", "nan", "unknown-param",
        "wrong-type", "missing-param", "empty-set", "names-collide", "unknown-attack", "not-utf8", "alias-bomb",
        "bad-yaml", "not-a-mapping"])
def test_bad_attack_sets(tmp_path, image_dir, content, message):
    victim = tmp_path / "victim_invert.jpg"
    victim.write_bytes(b"precious")
    cfg = tmp_path / "set.yaml"
    cfg.write_bytes(content)
    dst = tmp_path / "a" / "b" / "c" / "d" / "q"
    line = expect_error("attack", image_dir, dst, "--attacks", cfg, "--workers", "1", message=message)
    assert line.count("Error") == 1
    expect_error("attack", "--attacks", cfg, "--list", message=message)
    assert not (tmp_path / "a").exists()
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "Invalid value for '--seed'"),
    (["--quality", "0"], "Invalid value for '--quality'"),
    (["--workers", "0"], "Invalid value for '--workers'"),
    (["--workers", "100000"], "Invalid value for '--workers'"),
    (["--format", "bmp"], "Invalid value for '--format'"),
    (["--attacks", "default", "--attacks", "default"], "duplicate attack names"),
    (["--attacks", "nonexistent"], "unknown attack config 'nonexistent'"),
    (["--attacks", "missing.yaml"], "attack config not found"),
], ids=["seed", "quality", "workers-0", "workers-huge", "format", "same-set-twice", "unknown-set", "missing-file"])
def test_bad_options(tmp_path, image_dir, args, message):
    expect_error("attack", image_dir, tmp_path / "q", *args, message=message)
    assert not (tmp_path / "q").exists()


def test_dst_rules(tmp_path, image_dir):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "img0_invert.jpg").write_bytes(b"mine")
    expect_error("attack", image_dir, foreign, "--attacks", "biomedical", message="is not empty and was not written")
    expect_error("attack", image_dir, foreign, "--attacks", "biomedical", "--overwrite",
                 message="img0_invert.jpg exists and was not written by neardup")
    assert (foreign / "img0_invert.jpg").read_bytes() == b"mine" and len(list(foreign.iterdir())) == 1
    expect_error("attack", image_dir, image_dir / "q", message="must not be SRC or inside it")
    expect_error("attack", image_dir, message="attack needs SRC and DST")
    (tmp_path / "file").write_text("x")
    expect_error("attack", image_dir, tmp_path / "file", message="is a file")


def test_disk_full_is_one_line_and_a_rerun_resumes(tmp_path, image_dir, monkeypatch):
    real, n = gen.atomic_write, []

    def full(path, write):
        if len(n) >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        n.append(path)
        real(path, write)

    monkeypatch.setattr(gen, "atomic_write", full)
    q = tmp_path / "q"
    res = invoke("attack", image_dir, q, "--attacks", "biomedical", "--workers", "1", ok=False)
    line = assert_one_error(res, f"disk full writing {q / 'img0_'}")
    assert "re-run the same command" in line and res.exit_code == 1
    monkeypatch.undo()
    out = invoke("attack", image_dir, q, "--attacks", "biomedical", "--workers", "1").output
    assert "78 queries from 6 images x 13 attacks" in out
    out = invoke("attack", image_dir, q, "--attacks", "biomedical", "--workers", "1").output
    assert "6 images were already done and kept" in out


def test_rerun_with_another_format_leaves_only_the_new_queries(tmp_path, image_dir):
    q = tmp_path / "q"
    invoke("attack", image_dir, q, "--attacks", "biomedical", "--workers", "1")
    invoke("attack", image_dir, q, "--attacks", "biomedical", "--workers", "1", "--format", "png")
    assert not list(q.glob("*.jpg")) and len(list(q.glob("*.png"))) == 78


@pytest.mark.parametrize("content, message", [
    (b"query,source\nx.jpg,x\n", "manifest lacks columns ['attack']"),
    (b"query,source,attack\nx\xff.jpg,x,y\n", "is not UTF-8 text"),
    (b"query,source,attack\nx.jpg,,y\n", "lacks a query, source or attack"),
], ids=["missing-columns", "not-utf8", "empty-source"])
def test_malformed_manifest_is_one_error(tmp_path, content, message):
    m = tmp_path / "qs" / "manifest.csv"
    m.parent.mkdir()
    m.write_bytes(content)
    expect_error("extract", m, "--out", tmp_path / "o", "--model", "phash", "--workers", "0", message=message)
