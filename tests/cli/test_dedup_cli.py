"""`neardup dedup` as a user runs it: scan, dry run, apply, undo; bad input is one Error line."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.helpers import expect_error, invoke


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_scan_apply_undo_round_trip(tmp_path: Path, collection) -> None:
    folder, made = collection
    out = tmp_path / "scan"
    res = invoke("dedup", str(folder), "--out", str(out), "--threshold", "0.8", "--engine", "torch")
    assert "17 files: 5 groups, 5 duplicates (2 exact, 3 near), 0 unreadable" in res.output
    assert "threshold 0.8000 (given)" in res.output
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()
    assert "report: open file://" in res.output and (out / "report.html").is_file()
    assert len(list((out / "report_files" / "thumbs").glob("*.jpg"))) == 10
    before = snapshot(folder)

    dry = invoke("dedup", "apply", str(out), "--move-to", str(tmp_path / "dups"))
    assert "dry run: 5 file(s) would be changed" in dry.output and snapshot(folder) == before
    assert not (tmp_path / "dups").exists()

    done = invoke("dedup", "apply", str(out), "--move-to", str(tmp_path / "dups"), "--yes")
    assert "5 file(s) changed" in done.output
    left = set(snapshot(folder))
    assert len(left) == len(before) - 5
    keepers = [line.split(",")[1] for line in (out / "groups.csv").read_text().splitlines()[1:]
               if line.split(",")[2] == "1"]
    assert all(os.path.isfile(k) for k in keepers)  # a keeper is never moved

    undone = invoke("dedup", "undo", str(out))
    assert "5 file(s) restored" in undone.output
    assert snapshot(folder) == before  # byte for byte
    expect_error("dedup", "undo", str(out), message="nothing to undo")

    # a file changed since the scan refuses the whole run
    victim = folder / "copy_q40.jpg"
    victim.write_bytes(victim.read_bytes() + b"\0")
    expect_error("dedup", "apply", str(out), "--move-to", str(tmp_path / "dups"), "--yes",
                 message="changed since the scan")
    assert snapshot(folder)["copy_q40.jpg"] != before["copy_q40.jpg"] and len(snapshot(folder)) == len(before)


def test_bad_input_is_one_error_line(tmp_path: Path, collection) -> None:
    folder, _ = collection
    expect_error("dedup", str(folder), "--out", str(tmp_path / "o"), "--threshold", "2", message="--threshold")
    expect_error("dedup", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), message="not found")
    expect_error("dedup", str(folder), "--out", str(tmp_path / "o"), "--add", message="--add needs an earlier scan")
    expect_error("dedup", "apply", str(tmp_path / "o"), "--move-to", "x", "--delete", message="exactly one of")
    expect_error("dedup", "apply", str(tmp_path / "nowhere"), "--delete", message="no finished dedup scan")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    expect_error("dedup", str(folder), "--out", str(tmp_path / "theirs"), "--threshold", "0.6")
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"


def test_help_names_the_subcommands() -> None:
    res = invoke("dedup", "--help")
    assert "apply" in res.output and "undo" in res.output and "scan" in res.output
    assert "--against" in invoke("dedup", "scan", "--help").output


def test_overwrite_after_a_scan_with_an_unreadable_file(tmp_path: Path, collection) -> None:
    """The report's placeholder for unreadable files is dedup's own: --overwrite replaces it."""
    folder, _ = collection
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "scan"
    first = invoke("dedup", str(folder), "--out", str(out), "--threshold", "0.8", "--engine", "torch")
    assert "1 unreadable" in first.output and (out / "report_files" / "unreadable.jpg").is_file()
    again = invoke("dedup", str(folder), "--out", str(out), "--threshold", "0.8", "--engine", "torch", "--overwrite")
    assert "1 unreadable" in again.output and (out / "report.html").is_file()
