"""The review report of a dedup scan: ``DIR/report.html`` plus ``DIR/report_files/``, static and offline.

Read from the scan folder DIR (the pipeline's contract): ``groups.csv`` (one row per file of a group, keeper
first), ``summary.json`` (schema ``neardup.dedup/1``) and, when the threshold was calibrated,
``calibration.npz`` (``pos`` and ``neg`` scores). Written: thumbnails and their index, ``calibration.png``, the
placeholder image, and last, atomically, ``report.html`` (the commit point). Nothing else in DIR is touched.

Why the page is built the way it is: a collection can have 10,000 groups, so the group data is embedded once as
JSON and the page renders only the current page of groups into the DOM; file names are user data, so they reach
the page only as JSON (``<`` escaped) and ``textContent``, never as HTML.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from neardup.dedup.calibrate import Calibration
from neardup.dedup.report_page import GENERATOR, render_page
from neardup.dedup.thumbs import INDEX, ThumbCache
from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text, read_json_object, read_text
from neardup.outdir import FIGURE_TAG, LOCK, folder_lock

REPORT = "report.html"
FILES = "report_files"
CALIBRATION_PNG = "calibration.png"
SUMMARY_SCHEMA = "neardup.dedup/"
DATA_SCHEMA = "neardup.dedup-report/1"
GROUP_FIELDS = ("group", "path", "is_keeper", "score", "kind", "width", "height", "bytes", "mtime_ns")
KINDS = ("keeper", "exact", "near")
SUMMARY_KEYS = ("schema", "files", "groups", "duplicates", "exact_duplicates", "near_duplicates", "largest_group",
                "threshold", "threshold_source", "calibration", "model", "timings_s", "against")
SORTS = {"size": "largest group first", "weakest": "weakest score first", "strongest": "strongest score first",
         "id": "group number"}


@dataclass
class ReportConfig:
    """Options of :func:`write_report`, checked in one place."""

    thumb_size: int = 192
    page_size: int = 50

    def validate(self) -> None:
        for name, lo, hi in (("thumb_size", 32, 1024), ("page_size", 1, 1000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UsageError(f"report {name} must be an integer in [{lo}, {hi}], got {v!r}")


@dataclass
class Member:
    path: str
    kind: str
    score: float | None
    width: int
    height: int
    bytes: int
    mtime_ns: int


@dataclass
class Group:
    id: int
    members: list[Member] = field(default_factory=list)  # keeper first

    @property
    def min_score(self) -> float | None:
        """The weakest link: the lowest score of a copy to its keeper (None if no copy has a score)."""
        s = [m.score for m in self.members[1:] if m.score is not None]
        return min(s) if s else None


def _int(v: str, what: str, row: int) -> int:
    try:
        return int(v)
    except ValueError:
        raise UsageError(f"groups.csv row {row}: {what} is not an integer: {v!r}") from None


def read_groups(scan_dir: str | os.PathLike) -> list[Group]:
    """The groups of ``DIR/groups.csv`` in group-id order: keeper first, then exact copies, then near copies by
    decreasing score.

    Raises:
        UsageError: missing file, missing columns, a bad value, or a group without exactly one keeper.
    """
    path = Path(scan_dir) / "groups.csv"
    reader = csv.DictReader(read_text(path, "dedup groups file").splitlines())
    missing = [c for c in GROUP_FIELDS if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"{path} is not a dedup groups file (missing columns {', '.join(missing)})")
    groups: dict[int, Group] = {}
    keepers: dict[int, int] = {}
    for n, r in enumerate(reader, start=2):
        gid = _int(r["group"], "group", n)
        keeper = r["is_keeper"].strip().lower()
        if keeper not in ("0", "1", "true", "false"):
            raise UsageError(f"groups.csv row {n}: is_keeper must be 0/1, got {r['is_keeper']!r}")
        kind = r["kind"].strip()
        if kind not in KINDS:
            raise UsageError(f"groups.csv row {n}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        try:
            score = float(r["score"]) if r["score"].strip() else None
        except ValueError:
            raise UsageError(f"groups.csv row {n}: score is not a number: {r['score']!r}") from None
        if score is not None and not math.isfinite(score):
            score = None
        if not os.path.isabs(r["path"]):
            raise UsageError(f"groups.csv row {n}: path must be absolute, got {r['path']!r}")
        g = groups.setdefault(gid, Group(gid))
        if keeper in ("1", "true"):
            keepers[gid] = keepers.get(gid, 0) + 1
            g.members.insert(0, Member(r["path"], kind, score, 0, 0, 0, 0))
            m = g.members[0]
        else:
            g.members.append(Member(r["path"], kind, score, 0, 0, 0, 0))
            m = g.members[-1]
        m.width, m.height = _int(r["width"] or "0", "width", n), _int(r["height"] or "0", "height", n)
        m.bytes, m.mtime_ns = _int(r["bytes"], "bytes", n), _int(r["mtime_ns"], "mtime_ns", n)
    bad = [g for g in groups if keepers.get(g, 0) != 1]
    if bad:
        raise UsageError(f"{path}: group {bad[0]} has {keepers.get(bad[0], 0)} keepers (needs exactly one)")
    for g in groups.values():  # read left to right: keeper, exact copies, then near copies strongest first
        g.members[1:] = sorted(g.members[1:], key=lambda m: (m.kind != "exact", -(m.score or 0.0), m.path))
    return [groups[g] for g in sorted(groups)]


def read_summary(scan_dir: str | os.PathLike) -> dict[str, Any]:
    """``DIR/summary.json`` (schema ``neardup.dedup/...``), with every key the report shows."""
    path = Path(scan_dir) / "summary.json"
    s = read_json_object(path, "dedup summary", SUMMARY_KEYS)
    if not str(s["schema"]).startswith(SUMMARY_SCHEMA):
        raise UsageError(f"{path} has schema {s['schema']!r}, not a dedup summary ({SUMMARY_SCHEMA}N)")
    try:
        float(s["threshold"])
    except (TypeError, ValueError):
        raise UsageError(f"{path}: threshold is not a number: {s['threshold']!r}") from None
    if not isinstance(s["timings_s"], dict):
        raise UsageError(f"{path}: timings_s must be an object of stage -> seconds")
    return s


def calibration_of(summary: dict[str, Any]) -> Calibration | None:
    """The summary's calibration as a :class:`Calibration` (None when the threshold was given)."""
    c = summary.get("calibration")
    if c is None:
        return None
    names = [f.name for f in fields(Calibration)]
    if not isinstance(c, dict) or any(k not in c for k in names if k != "curve"):
        raise UsageError("summary.json: calibration must be an object with " + ", ".join(names))
    return Calibration(**{k: c[k] for k in names if k in c})


def read_scores(scan_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """``pos`` and ``neg`` from ``DIR/calibration.npz`` (no pickles), or None when the file is absent."""
    path = Path(scan_dir) / "calibration.npz"
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with z:
            pos, neg = np.asarray(z["pos"], dtype=np.float64).ravel(), np.asarray(z["neg"], dtype=np.float64).ravel()
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        raise UsageError(f"{path} is not a calibration file with pos and neg scores ({exc})") from None
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise UsageError(f"{path}: calibration scores must be finite")
    return pos, neg


def sort_orders(groups: list[Group]) -> dict[str, list[int]]:
    """For each sort of the page, the group indices in display order (ties broken by group id)."""
    idx = range(len(groups))

    def score(i: int, sign: float) -> tuple[bool, float, int]:
        s = groups[i].min_score
        return (s is None, sign * s if s is not None else 0.0, groups[i].id)

    return {"size": sorted(idx, key=lambda i: (-len(groups[i].members), groups[i].id)),
            "weakest": sorted(idx, key=lambda i: score(i, 1.0)),
            "strongest": sorted(idx, key=lambda i: score(i, -1.0)),
            "id": sorted(idx, key=lambda i: groups[i].id)}


def page_data(groups: list[Group], thumbs: dict[str, Any], scan_dir: Path, threshold: float,
              page_size: int, against: bool = False) -> dict[str, Any]:
    """The JSON the page renders: groups (members as short-keyed objects), sort orders, paths to the assets."""
    def member(m: Member) -> dict[str, Any]:
        t = thumbs[m.path]
        d: dict[str, Any] = {"p": m.path, "k": m.kind, "s": m.score, "w": m.width, "h": m.height, "b": m.bytes}
        if t.name:
            d["t"] = t.name
        if t.note:
            d["n"] = t.note
        elif t.bytes != m.bytes or t.mtime_ns != m.mtime_ns:
            d["n"] = "changed since the scan"
        return d

    # up to the file system root, then down the file's absolute path; extra "../" stop at the root, so taking
    # the deeper of the real and the given path keeps links right when DIR is opened through a symlink
    depth = max(len(scan_dir.resolve().parts), len(scan_dir.absolute().parts)) - 1
    return {"schema": DATA_SCHEMA, "threshold": threshold, "page_size": page_size, "files_dir": FILES,
            "against": against, "root": "../" * depth, "sorts": SORTS,
            "groups": [{"id": g.id, "m": [member(m) for m in g.members]} for g in groups],
            "orders": sort_orders(groups)}


def _check_ours(scan: Path) -> None:
    """Refuse to replace a report.html or use a report_files folder that neardup did not write."""
    html, files = scan / REPORT, scan / FILES
    if html.is_symlink() or (html.exists() and not html.is_file()):
        raise UsageError(f"{html} is not a regular file; move it away to write the report")
    if html.is_file():
        with open(html, "rb") as f:
            if GENERATOR.encode() not in f.read(4096):
                raise UsageError(f"{html} exists and was not written by neardup; move it away to write the report")
    for d in (files, files / "thumbs"):
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise UsageError(f"{d} is not a folder neardup made; move it away to write the report")
    if files.is_dir() and any(p.name != LOCK for p in files.iterdir()) and not (files / INDEX).is_file():
        raise UsageError(f"{files} exists and was not written by neardup; move it away to write the report")


def write_report(scan_dir: str | os.PathLike, *, thumb_size: int = 192, page_size: int = 50,
                 show_progress: bool = False) -> Path:
    """Write ``DIR/report.html`` (and ``DIR/report_files/``) for the scan in ``scan_dir``; returns its path.

    Re-running replaces the previous report and reuses every thumbnail whose file kept its size and mtime.

    Raises:
        UsageError: bad options, a folder that is not a dedup scan, inconsistent scan files, or a report.html /
            report_files that neardup did not write.
    """
    from neardup.dedup.plots import calibration_figure

    cfg = ReportConfig(thumb_size, page_size)
    cfg.validate()
    scan = Path(scan_dir)
    if not scan.is_dir():
        raise UsageError(f"scan folder not found: {scan}")
    summary = read_summary(scan)
    groups = read_groups(scan)
    if summary["groups"] != len(groups):
        raise UsageError(f"{scan}: groups.csv has {len(groups)} groups but summary.json says {summary['groups']} "
                         "(files of different scans?); re-run the scan")
    calibration = calibration_of(summary)
    scores = read_scores(scan)
    _check_ours(scan)
    files = scan / FILES
    with folder_lock(files, "writing a report in"):
        cache = ThumbCache(files, cfg.thumb_size)
        cache.save()  # claims the folder before anything else is written into it
        paths = list(dict.fromkeys(m.path for g in groups for m in g.members))
        thumbs = cache.update(paths, show_progress)
        plot = files / CALIBRATION_PNG
        has_plot = (scores is not None and len(scores[0]) + len(scores[1]) > 0) or (
            calibration is not None and bool(calibration.curve.get("threshold")))
        if has_plot:
            pos, neg = scores if scores is not None else (None, None)
            calibration_figure(pos, neg, calibration, plot, threshold=float(summary["threshold"]),
                               normalised=bool(summary.get("normalization")))
        data = page_data(groups, thumbs, scan, float(summary["threshold"]), cfg.page_size, bool(summary["against"]))
        html = render_page(summary, calibration, data, scan, f"{FILES}/{CALIBRATION_PNG}" if has_plot else None)
        atomic_write_text(scan / REPORT, html)  # the commit point
        cache.prune(set(paths))
        if not has_plot and plot.is_file() and FIGURE_TAG.encode() in plot.read_bytes()[:4096]:
            plot.unlink()
    return scan / REPORT
