"""The contract every command keeps: --help works, and bad input ends in one Error: line.

Area-specific malformed invocations live beside this file (test_bad_input_*.py).
"""

from __future__ import annotations

import os
import stat

import pytest

from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text, load_yaml, parse_yaml
from neardup.outdir import MARKER, claim_out_dir, owner
from tests.helpers import all_commands, expect_error, invoke

COMMANDS = all_commands()


def test_registry_of_commands_is_complete() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {"attack", "extract", "models", "search exact", "search bench", "index build", "index add", "query",
            "cluster", "finetune", "report", "plot", "convert byol"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help(path: tuple[str, ...]) -> None:
    res = invoke(*path, "--help")
    assert "Usage: " in res.output and "Error" not in res.output


@pytest.mark.parametrize("path", [c for c in COMMANDS if c[0] not in ("models", "convert", "search", "index")],
                         ids=" ".join)
def test_unknown_option_is_one_error(path: tuple[str, ...]) -> None:
    expect_error(*path, "--no-such-option", message="No such option")


BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1, 2, 3, 4, 5, 6, 7, 8, 9'}]\n"
               for i in range(9))


@pytest.mark.parametrize("content, message", [
    (BOMB.encode(), "YAML aliases"),
    (b"model: \xff\xfe phash\n", "not UTF-8"),
    (b"x: " + b"a" * (1 << 20) + b"\n", "limit"),
    (b"model: [unclosed", "bad YAML"),
    (b"- a\n- b\n", "mapping"),
], ids=["alias-bomb", "not-utf8", "too-large", "bad-yaml", "not-a-mapping"])
def test_bad_config_files(tmp_path, image_dir, content, message) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    expect_error("extract", image_dir, "--out", tmp_path / "o", "--config", cfg, message=message)
    assert not (tmp_path / "o").exists()


def test_yaml_limits_in_the_library(tmp_path) -> None:
    assert len(BOMB) < 500  # a few hundred bytes that would expand to 9**9 items
    with pytest.raises(UsageError, match="aliases"):
        parse_yaml(BOMB)
    assert parse_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}  # a few aliases are fine
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    assert load_yaml(tmp_path / "ok.yaml") == {"a": 1}
    with pytest.raises(UsageError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")


def test_atomic_write_respects_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
        assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_out_dir_rule(tmp_path) -> None:
    out = tmp_path / "out"
    with claim_out_dir(out, "attack", owned=["*.png", "manifest.csv"]) as own:
        assert own is False
        (out / "manifest.csv").write_text("x")
    assert owner(out) == "attack" and (out / MARKER).is_file()
    with claim_out_dir(out, "attack", owned=["*.png", "manifest.csv"]) as own:
        assert own is True  # its own output: reused
    with pytest.raises(UsageError, match="holds the output of `neardup attack`"), \
            claim_out_dir(out, "cluster", overwrite=True, owned=["metrics.json"]):
        pass
    # overwrite on its own output removes only its own files
    (out / "notes.txt").write_text("mine")
    with claim_out_dir(out, "attack", overwrite=True, owned=["*.png", "manifest.csv"]):
        assert not (out / "manifest.csv").exists() and (out / "notes.txt").read_text() == "mine"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.jpg").write_bytes(b"1")
    with pytest.raises(UsageError, match="not empty"), claim_out_dir(foreign, "cluster", owned=["metrics.json"]):
        pass
    with claim_out_dir(foreign, "cluster", overwrite=True, owned=["metrics.json"]):
        pass  # writes beside the user's file
    assert (foreign / "precious.jpg").read_bytes() == b"1"
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "metrics.json").write_text("theirs")
    with pytest.raises(UsageError, match="metrics.json exists and was not written by neardup"), \
            claim_out_dir(clash, "cluster", overwrite=True, owned=["metrics.json"]):
        pass
    assert (clash / "metrics.json").read_text() == "theirs"
    with pytest.raises(UsageError, match="is a file"), claim_out_dir(clash / "metrics.json", "cluster"):
        pass


def test_two_writers_exclude_each_other(tmp_path) -> None:
    out = tmp_path / "out"
    with claim_out_dir(out, "index build"), pytest.raises(UsageError, match="another neardup process"), \
            claim_out_dir(out, "index build"):
        pass
    with claim_out_dir(out, "index build"):  # released afterwards
        pass


def test_internal_errors_are_one_line_exit_3(monkeypatch, tmp_path) -> None:
    """A bug still ends in one line (exit 3, 'internal error'), so the tests above can tell it from bad input."""
    import neardup.extract.pipeline as pipeline

    def boom(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(pipeline, "extract_features", boom)
    res = invoke("extract", tmp_path, "--out", tmp_path / "o", ok=False)
    assert res.exit_code == 3 and "internal error (ZeroDivisionError" in res.output and "Traceback" not in res.output


def test_disk_full_is_one_line(monkeypatch, tmp_path) -> None:
    import errno

    import neardup.extract.pipeline as pipeline

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / "shards" / "00000.npy"))

    monkeypatch.setattr(pipeline, "extract_features", full)
    line = expect_error("extract", tmp_path, "--out", tmp_path / "o", message="disk full writing")
    assert "00000.npy" in line and "re-run" in line
