"""Safe actions on the duplicates a scan found: move, symlink, hardlink or delete, and undo.

Safety rules, all enforced here:

- dry run unless ``yes``: the plan is returned and nothing is touched;
- a keeper is never touched, and every file must still have the size and mtime the scan saw
  (all files are checked before the first change; one changed file refuses the whole run);
- a journal line is written and fsynced *before* each change and a ``done`` line after it,
  so ``undo`` restores every moved file even after a crash mid-run;
- symlink/hardlink keep the replaced original under ``DIR/actions/trash`` until the user deletes it,
  so they can be undone byte for byte; ``delete`` cannot be undone and says so.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from neardup.errors import UsageError
from neardup.io_utils import read_text
from neardup.outdir import folder_lock

MODES = ("move", "symlink", "hardlink", "delete")
GROUPS = "groups.csv"


@dataclass
class Planned:
    """One change: ``path`` (a duplicate) is moved to ``dst``, replaced by a link to ``keeper``, or deleted."""

    op: str
    path: str
    keeper: str
    dst: str | None
    size: int
    mtime_ns: int


@dataclass
class ActionReport:
    mode: str
    planned: list[Planned]
    done: int = 0
    dry_run: bool = True
    journal: str | None = None
    notes: list[str] = field(default_factory=list)


def _rows(out: Path) -> list[dict[str, str]]:
    text = read_text(out / GROUPS, "dedup groups file")
    rows = list(csv.DictReader(text.splitlines()))
    need = {"group", "path", "is_keeper", "bytes", "mtime_ns"}
    if not rows or not need <= set(rows[0]):
        raise UsageError(f"{out / GROUPS} is not a dedup groups file (needs columns {sorted(need)})")
    return rows


def _inside(root: Path, rel: str) -> Path:
    """``root/rel`` for an absolute source path ``rel``, refusing anything that would leave ``root``."""
    target = (root / rel.lstrip("/")).resolve()
    if not target.is_relative_to(root.resolve()):
        raise UsageError(f"refusing to place {rel} outside {root}")
    return target


def plan(out: str | os.PathLike, mode: str, move_to: str | os.PathLike | None = None) -> list[Planned]:
    """What ``apply`` would do, after checking every file is as the scan left it."""
    out = Path(out)
    if mode not in MODES:
        raise UsageError(f"unknown action {mode!r}; use one of {', '.join(MODES)}")
    if (mode == "move") != (move_to is not None):
        raise UsageError("--move-to DIR is required for moving, and only for moving")
    from neardup.dedup.outputs import read_summary

    read_summary(out)  # a finished scan only: summary.json is its commit point
    rows = _rows(out)
    keepers = {r["group"]: r["path"] for r in rows if r["is_keeper"] == "1"}
    trash = out / "actions" / "trash"
    changed: list[str] = []
    todo: list[Planned] = []
    for r in rows:
        p = Path(r["path"])
        try:
            st = p.lstat()
        except FileNotFoundError:
            changed.append(f"{p} (missing)")
            continue
        if st.st_size != int(r["bytes"]) or st.st_mtime_ns != int(r["mtime_ns"]):
            changed.append(f"{p} (size or mtime changed)")
        if r["is_keeper"] == "1" or r.get("reference") == "1" or r["group"] not in keepers:
            continue  # keepers and --against references are never touched
        dst = None
        if mode == "move":
            dst = str(_inside(Path(move_to), str(p.resolve())))  # type: ignore[arg-type]
        elif mode in ("symlink", "hardlink"):
            dst = str(_inside(trash, str(p.resolve())))
        todo.append(Planned(mode, str(p), keepers[r["group"]], dst, int(r["bytes"]), int(r["mtime_ns"])))
    kept = {os.path.realpath(k) for k in keepers.values()}
    clash = next((t.path for t in todo if os.path.realpath(t.path) in kept), None)
    if clash:
        raise UsageError(f"{clash} is a keeper in {out / GROUPS} and also listed as a copy; the groups file is "
                         "damaged: re-run `neardup dedup` (nothing was changed)")
    if changed:
        raise UsageError(f"{len(changed)} file(s) changed since the scan, e.g. {changed[0]}; re-run `neardup dedup` "
                         "first (nothing was changed)")
    for t in todo:
        if t.dst and os.path.lexists(t.dst):
            raise UsageError(f"{t.dst} already exists; nothing was changed")
    return todo


def _log(journal: IO[str], entry: dict[str, Any]) -> None:
    journal.write(json.dumps(entry) + "\n")
    journal.flush()
    os.fsync(journal.fileno())


def _do(t: Planned) -> None:
    if t.op == "delete":
        os.unlink(t.path)
        return
    assert t.dst is not None
    Path(t.dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(t.path, t.dst)
    if t.op == "symlink":
        os.symlink(os.path.abspath(t.keeper), t.path)
    elif t.op == "hardlink":
        os.link(t.keeper, t.path)


def apply(out: str | os.PathLike, mode: str, move_to: str | os.PathLike | None = None,
          yes: bool = False) -> ActionReport:
    """Carry out (with ``yes``) or only plan the action on every duplicate of the scan in ``out``."""
    out = Path(out)
    with folder_lock(out / "actions", "changing files of"):
        todo = plan(out, mode, move_to)
        report = ActionReport(mode, todo, dry_run=not yes)
        if mode == "delete":
            report.notes.append("deleted files cannot be restored by `neardup dedup undo`")
        if not yes or not todo:
            return report
        journal_path = out / "actions" / f"journal-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
        report.journal = str(journal_path)
        with open(journal_path, "a", encoding="utf-8") as journal:
            _log(journal, {"mode": mode, "count": len(todo)})
            for k, t in enumerate(todo):
                _log(journal, {"step": k, **t.__dict__})
                _do(t)
                _log(journal, {"done": k})
                report.done += 1
        return report


def undo(out: str | os.PathLike) -> tuple[int, list[str]]:
    """Reverse the newest journal of ``out``: (files restored, notes). The journal is then marked undone."""
    out = Path(out)
    with folder_lock(out / "actions", "changing files of"):
        journals = sorted((out / "actions").glob("journal-*.jsonl"))
        if not journals:
            raise UsageError(f"nothing to undo in {out} (no journal under {out / 'actions'})")
        journal = journals[-1]
        steps: dict[int, dict[str, Any]] = {}
        for line in read_text(journal, "action journal").splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if "step" in e:
                steps[e["step"]] = e
        restored, notes = 0, []
        for k in sorted(steps, reverse=True):
            e = steps[k]
            path, dst = Path(e["path"]), e.get("dst")
            if e["op"] == "delete":
                if not path.exists():
                    notes.append(f"{path} was deleted and cannot be restored")
                continue
            if dst is None or not os.path.lexists(dst):
                continue  # the change never happened (crash before it)
            if os.path.lexists(path):
                if e["op"] in ("symlink", "hardlink") and (path.is_symlink() or path.stat().st_nlink > 1):
                    path.unlink()
                else:
                    notes.append(f"{path} exists again; its moved copy stays at {dst}")
                    continue
            shutil.move(dst, path)
            restored += 1
        journal.rename(journal.with_suffix(".undone"))
        return restored, notes
