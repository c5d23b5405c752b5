"""The CLI end to end (small generated images) and its one-line errors."""

import json

import pytest
from click.testing import CliRunner

from neardup.cli import main


def run(*args, ok=True):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def test_attack_extract_search_report(image_dir, tmp_path):
    q, f = tmp_path / "queries", tmp_path / "feat"
    cfg = tmp_path / "att.yaml"
    cfg.write_text("attacks:\n  - {attack: jpeg, params: {quality: [10, 50]}}\n  - {attack: hflip}\n")
    out = run("attack", image_dir, q, "--attacks", cfg, "--workers", "1").output
    assert "18 queries from 6 images x 3 attacks" in out
    extract_cfg = tmp_path / "extract.yaml"
    extract_cfg.write_text("model: dhash\nworkers: 0\n")
    # --config supplies options; an explicit flag overrides it
    run("extract", image_dir, "--out", f / "db", "--config", extract_cfg, "--model", "phash")
    run("extract", q, "--out", f / "q", "--config", extract_cfg, "--model", "phash")
    assert json.loads((f / "db" / "meta.json").read_text())["model"] == "phash"
    assert "model: phash" in (f / "db" / "config.yaml").read_text()
    res = run("search", "exact", "--database", f / "db", "--queries", f / "q", "--out", tmp_path / "r.json")
    assert "jpeg" in res.output and "hflip" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == "neardup.search.exact/1"
    assert data["n_queries"] == 18 and data["metric"] == "hamming"
    assert data["per_family"]["jpeg"]["recall"]["1"] == 1.0  # pHash survives JPEG on these images
    assert set(data["per_attack"]) == {"jpeg_10", "jpeg_50", "hflip"}
    assert "phash" in run("report", tmp_path / "r.json", "--metric", "muAP").output


@pytest.mark.parametrize("args, message", [
    (["attack", "/no/such/dir", "/tmp/x"], "folder not found"),
    (["extract", "/no/such/dir", "--out", "/tmp/x"], "input not found"),
    (["extract", ".", "--model", "nope", "--out", "/tmp/x"], "unknown model 'nope'"),
    (["attack", "--attacks", "nonexistent", "--list"], "unknown attack config"),
    (["search", "exact", "--database", "/no/db", "--queries", "/no/q"], "not a neardup feature folder"),
])
def test_errors_are_one_line_without_traceback(args, message):
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    assert message in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("Error")]) == 1


def test_bad_yaml_and_empty_folder(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("model: [unclosed")
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "o")
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "empty"), "--out", out, "--config", str(bad)])
    assert res.exit_code != 0 and "bad YAML" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "no images" in res.output
    unknown = tmp_path / "u.yaml"
    unknown.write_text("modle: phash\n")
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "empty"), "--out", out, "--config", str(unknown)])
    assert res.exit_code != 0 and "unknown keys ['modle']" in res.output


def test_models_and_attack_list():
    out = run("models").output
    assert "efficientnet_lite0" in out and "phash" in out and "resnet50" in out
    assert "58 attacks" in run("attack", "--list").output


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "neardup", "--version"], capture_output=True, text=True, check=True)
    assert "neardup" in res.stdout


def test_saved_config_feeds_back_with_config(image_dir, tmp_path):
    """Any run can be repeated from the config.yaml it wrote (option names, not only parameter names)."""
    q = tmp_path / "q"
    run("attack", image_dir, q, "--attacks", "default", "--format", "png", "--workers", "1")
    # repeat it from its own config.yaml, into a new folder
    res = run("attack", image_dir, tmp_path / "q2", "--config", q / "config.yaml")
    assert "x 58 attacks" in res.output
    assert sorted(p.name for p in (tmp_path / "q2").glob("*.png")) == sorted(p.name for p in q.glob("*.png"))
    run("extract", image_dir, "--out", tmp_path / "f", "--model", "phash", "--workers", "0", "--glob", "*.png")
    run("extract", image_dir, "--out", tmp_path / "f2", "--config", tmp_path / "f" / "config.yaml")
    assert json.loads((tmp_path / "f2" / "meta.json").read_text())["model"] == "phash"


def test_relative_folders_as_the_demo_gives_them(image_dir, tmp_path, monkeypatch):
    """Folders given relative to the cwd (as `make demo` does): queries still match their manifest rows."""
    import shutil

    shutil.copytree(image_dir, tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "att.yaml"
    cfg.write_text("attacks:\n  - {attack: hflip}\n  - {attack: jpeg, params: {quality: 50}}\n")
    run("attack", "photos", "out/queries", "--attacks", cfg, "--workers", "1")
    run("extract", "photos", "--out", "out/f/db", "--model", "phash", "--workers", "0")
    run("extract", "out/queries", "--out", "out/f/q", "--model", "phash", "--workers", "0")
    run("search", "exact", "--database", "out/f/db", "--queries", "./out/f/q", "--out", "out/r.json", "--quiet")
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    assert data["n_queries"] == 12 and data["per_family"]["jpeg"]["recall"]["1"] == 1.0
