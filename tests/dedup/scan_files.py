"""A scan folder as ``neardup dedup`` writes it (groups.csv, summary.json, calibration.npz), built from real
generated images, for the report tests."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from neardup.dedup.calibrate import choose_threshold
from tests.conftest import make_image

FIELDS = ("group", "path", "is_keeper", "score", "kind", "width", "height", "bytes", "mtime_ns")


def write_scan(scan: Path, rows: list[dict], *, calibrated: bool = True, threshold: float = 0.8,
               scores: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> dict:
    """Write groups.csv, summary.json and (calibrated) calibration.npz for ``rows``; returns the summary."""
    scan.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    (scan / "groups.csv").write_text(buf.getvalue(), "utf-8")
    calibration = None
    if calibrated:
        rng = np.random.default_rng(seed)
        pos, neg = scores or (np.clip(rng.normal(0.9, 0.05, 400), 0, 1), np.clip(rng.normal(0.55, 0.1, 400), 0, 1))
        cal = choose_threshold(pos, neg, 0.99)
        threshold, calibration = cal.threshold, cal.to_dict()
        np.savez(scan / "calibration.npz", pos=pos, neg=neg)
    sizes = Counter(r["group"] for r in rows)
    exact = sum(1 for r in rows if r["kind"] == "exact")
    near = sum(1 for r in rows if r["kind"] == "near")
    summary = {"schema": "neardup.dedup/1", "files": len(rows) + 7, "groups": len(sizes),
               "duplicates": exact + near, "exact_duplicates": exact, "near_duplicates": near,
               "largest_group": max(sizes.values(), default=0), "threshold": threshold,
               "threshold_source": "calibrated" if calibrated else "given", "calibration": calibration,
               "model": "efficientnet_lite0", "timings_s": {"hash": 0.4, "extract": 12.5, "search": 0.3},
               "against": False}
    (scan / "summary.json").write_text(json.dumps(summary, indent=2), "utf-8")
    return summary


def image_groups(root: Path, n_groups: int, seed: int = 0, names: dict[int, str] | None = None) -> list[dict]:
    """Real image files in ``root``: per group a keeper and 1-3 copies (a byte copy or a resized re-encode).

    Returns groups.csv rows (keeper first, scores decreasing along the group, deterministic).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for g in range(n_groups):
        img = make_image(1000 + g, (96, 64))
        stem = (names or {}).get(g, f"photo_{g:05d}")
        members = [(root / f"{stem}.png", "keeper", 1.0, img)]
        for c in range(int(rng.integers(1, 4))):
            if c == 0 and g % 5 == 0:
                members.append((root / f"{stem}_copy.png", "exact", 1.0, img))
            else:
                small = img.resize((80 - 8 * c, 53 - 5 * c), Image.Resampling.BILINEAR)
                members.append((root / f"{stem}_v{c}.jpg", "near", round(float(rng.uniform(0.72, 0.99)), 6), small))
        for path, kind, score, im in members:
            im.save(path)
            st = os.stat(path)
            rows.append({"group": g, "path": str(path), "is_keeper": int(kind == "keeper"), "score": score,
                         "kind": kind, "width": im.width, "height": im.height, "bytes": st.st_size,
                         "mtime_ns": st.st_mtime_ns})
    return rows


def missing_groups(root: Path, n_groups: int, seed: int = 0) -> list[dict]:
    """groups.csv rows for ``n_groups`` groups of files that do not exist (a large report without decoding)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        k = int(rng.integers(2, 4))
        for i in range(k):
            rows.append({"group": g, "path": str(root / f"dir{g % 97:02d}" / f"IMG_{g:05d}_{i}.jpg"),
                         "is_keeper": int(i == 0), "score": 1.0 if i == 0 else round(float(rng.uniform(0.7, 1)), 6),
                         "kind": "keeper" if i == 0 else "near", "width": 4032, "height": 3024,
                         "bytes": int(rng.integers(1e5, 5e6)), "mtime_ns": 1_700_000_000_000_000_000 + g})
    return rows


def report_data(report: Path) -> dict:
    """The JSON embedded in a report.html, parsed as the page parses it."""
    text = report.read_text("utf-8")
    start = text.index('<script type="application/json" id="report-data">')
    start = text.index(">", start) + 1
    return json.loads(text[start:text.index("</script>", start)])
