"""apply/undo: dry run by default, keepers untouched, changed files refused, byte-for-byte round trips."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from neardup.dedup.actions import apply, undo
from neardup.errors import UsageError


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture
def scan(tmp_path: Path) -> tuple[Path, Path]:
    photos, out = tmp_path / "photos", tmp_path / "scan"
    (photos / "sub").mkdir(parents=True)
    out.mkdir()
    files = {"a.jpg": b"A" * 100, "a_copy.jpg": b"A" * 99, "sub/a_small.jpg": b"a" * 10, "b.png": b"B" * 50,
             "b2.png": b"B" * 49, "lone.gif": b"L"}
    for name, data in files.items():
        (photos / name).write_bytes(data)
    groups = [(0, "a.jpg", 1), (0, "a_copy.jpg", 0), (0, "sub/a_small.jpg", 0), (1, "b.png", 1), (1, "b2.png", 0),
              (2, "lone.gif", 1)]
    with open(out / "groups.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "path", "is_keeper", "score", "kind", "width", "height", "bytes", "mtime_ns"])
        for g, name, keeper in groups:
            p = photos / name
            w.writerow([g, str(p), keeper, 1.0, "near", 1, 1, p.stat().st_size, p.stat().st_mtime_ns])
    write_summary(out)
    return photos, out


def write_summary(out: Path) -> None:
    """The scan's commit point, as the pipeline writes it (actions refuse a scan without one)."""
    doc = {"schema": "neardup.dedup/1", "files": 6, "unreadable": 0, "groups": 3, "duplicates": 3,
           "exact_duplicates": 0, "near_duplicates": 3, "largest_group": 3, "largest_group_share": 0.5, "pairs": 3,
           "threshold": 0.8, "threshold_source": "given", "calibration": None, "model": "m", "against": False,
           "timings_s": {}, "inputs": [], "against_inputs": [], "config": {}, "created": "now"}
    (out / "summary.json").write_text(json.dumps(doc))


def test_unfinished_scan_refused(scan) -> None:
    _, out = scan
    (out / "summary.json").unlink()
    with pytest.raises(UsageError, match="no finished dedup scan"):
        apply(out, "move", move_to=out.parent / "dups")


def test_references_never_touched(scan) -> None:
    photos, out = scan
    text = (out / "groups.csv").read_text().splitlines()
    rows = [text[0] + ",reference"] + [ln + (",1" if "a_copy" in ln else ",0") for ln in text[1:]]
    (out / "groups.csv").write_text("\n".join(rows) + "\n")
    rep = apply(out, "move", move_to=out.parent / "dups", yes=True)
    assert {Path(t.path).name for t in rep.planned} == {"a_small.jpg", "b2.png"}
    assert (photos / "a_copy.jpg").is_file()


def test_dry_run_changes_nothing(scan) -> None:
    photos, out = scan
    before = snapshot(photos)
    rep = apply(out, "move", move_to=out.parent / "dups")
    assert rep.dry_run and rep.done == 0 and len(rep.planned) == 3
    assert {Path(t.path).name for t in rep.planned} == {"a_copy.jpg", "a_small.jpg", "b2.png"}  # keepers never
    assert snapshot(photos) == before and not (out.parent / "dups").exists()


@pytest.mark.parametrize("mode", ["move", "symlink", "hardlink"])
def test_apply_then_undo_round_trips(scan, mode) -> None:
    photos, out = scan
    before = snapshot(photos)
    move_to = out.parent / "dups" if mode == "move" else None
    rep = apply(out, mode, move_to=move_to, yes=True)
    assert rep.done == 3 and rep.journal and Path(rep.journal).is_file()
    dup = photos / "a_copy.jpg"
    if mode == "move":
        assert not dup.exists() and (move_to / str(dup.resolve()).lstrip("/")).read_bytes() == b"A" * 99
    elif mode == "symlink":
        assert dup.is_symlink() and dup.read_bytes() == (photos / "a.jpg").read_bytes()
    else:
        assert dup.stat().st_ino == (photos / "a.jpg").stat().st_ino
    assert (photos / "a.jpg").read_bytes() == b"A" * 100  # keeper untouched
    restored, notes = undo(out)
    assert restored == 3 and notes == []
    assert snapshot(photos) == before  # byte for byte, mtimes too
    assert not any(p.is_symlink() for p in photos.rglob("*"))
    with pytest.raises(UsageError, match="nothing to undo"):
        undo(out)


def test_a_changed_file_refuses_the_whole_run(scan) -> None:
    photos, out = scan
    (photos / "b2.png").write_bytes(b"changed!")
    before = snapshot(photos)
    with pytest.raises(UsageError, match=r"changed since the scan.*b2.png"):
        apply(out, "move", move_to=out.parent / "dups", yes=True)
    assert snapshot(photos) == before  # nothing moved, not even the unchanged duplicates
    os.unlink(photos / "a.jpg")  # a keeper gone is refused too
    with pytest.raises(UsageError, match="missing"):
        apply(out, "delete", yes=True)


def test_delete_is_journaled_and_cannot_be_undone(scan) -> None:
    photos, out = scan
    rep = apply(out, "delete", yes=True)
    assert rep.done == 3 and any("cannot be restored" in n for n in rep.notes)
    assert sorted(p.name for p in photos.rglob("*") if p.is_file()) == ["a.jpg", "b.png", "lone.gif"]
    restored, notes = undo(out)
    assert restored == 0 and len(notes) == 3


def test_undo_after_a_crash_mid_run(scan, monkeypatch) -> None:
    import neardup.dedup.actions as actions

    photos, out = scan
    before = snapshot(photos)
    real, calls = actions._do, []

    def crash_on_second(t):
        calls.append(t)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(t)

    monkeypatch.setattr(actions, "_do", crash_on_second)
    with pytest.raises(OSError):
        apply(out, "move", move_to=out.parent / "dups", yes=True)
    monkeypatch.setattr(actions, "_do", real)
    restored, _ = undo(out)
    assert restored == 1 and snapshot(photos) == before


def test_move_target_must_not_exist_and_mode_is_checked(scan) -> None:
    photos, out = scan
    target = out.parent / "dups" / str((photos / "b2.png").resolve()).lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's")
    with pytest.raises(UsageError, match="already exists"):
        apply(out, "move", move_to=out.parent / "dups", yes=True)
    assert target.read_bytes() == b"someone else's"
    with pytest.raises(UsageError, match="--move-to"):
        apply(out, "symlink", move_to=out.parent / "dups")
    with pytest.raises(UsageError, match="unknown action"):
        apply(out, "shred")


def test_a_keeper_listed_again_as_a_copy_is_never_touched(scan) -> None:
    photos, out = scan
    text = (out / "groups.csv").read_text().splitlines()
    fields = next(ln for ln in text if "b.png" in ln and ",1," in ln).split(",")
    fields[0], fields[2] = "0", "0"  # b.png, the keeper of group 1, listed again as a copy in group 0
    text.append(",".join(fields))
    (out / "groups.csv").write_text("\n".join(text) + "\n")
    before = snapshot(photos)
    with pytest.raises(UsageError, match="is a keeper .* also listed as a copy"):
        apply(out, "delete", yes=True)
    assert snapshot(photos) == before
