"""Duplicate-pair precision, recall and F1 of `neardup dedup` against imagededup's PHash and DHash, same run.

Collection: BSDS500 val (100 photos) + their 58 attacked copies each (5,800, made with `neardup attack`) + BSDS500
train (200 photos, distractors). dedup gets no labels and no threshold (the calibrated default). Ground truth: a
photo and its attacked copies form one group; every train photo is its own group. Pairs are scored with
scikit-learn's pair confusion matrix over all files.

Each step is a command a user could repeat. The attacked copies are kept under --out; the scan starts fresh (so
its wall time includes feature extraction and calibration, as imagededup's includes hashing) unless --reuse.

Usage: python bench/dedup_quality.py [--out out/bench_dedup] [--skip-imagededup] [--reuse]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import neardup._compat  # noqa: F401  (torchvision on a CPU-only torch: imagededup imports it)

BSDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500"


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def truth(files: list[str], qdir: Path) -> dict[str, str]:
    """file -> group key: a val photo and its copies share the photo's id; train photos are alone."""
    from neardup.data.manifest import read_manifest

    out: dict[str, str] = {}
    for r in read_manifest(qdir / "manifest.csv"):
        out[os.path.normpath(str(qdir / r.query))] = "val:" + r.source
    for f in files:
        p = Path(f)
        if p.parent == BSDS / "val":
            out[f] = "val:" + p.stem
        elif f not in out:
            out[f] = "alone:" + f
    return out


def pair_scores(files: list[str], y: dict[str, str], pred: dict[str, str]) -> tuple[float, float, float]:
    from sklearn.metrics.cluster import pair_confusion_matrix

    t = np.unique([y[f] for f in files], return_inverse=True)[1]
    p = np.unique([pred.get(f, "alone:" + f) for f in files], return_inverse=True)[1]
    (_, fp), (fn, tp) = pair_confusion_matrix(t, p)
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return float(prec), float(rec), float(2 * prec * rec / max(prec + rec, 1e-12))


def imagededup_groups(method: str, dirs: list[Path]) -> tuple[dict[str, str], float]:
    """imagededup's find_duplicates at its defaults, over the encodings of all folders; groups = components."""
    import imagededup.methods as m
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    hasher = getattr(m, method)(verbose=False)
    t = time.perf_counter()
    enc: dict[str, str] = {}
    for d in dirs:
        for name, code in hasher.encode_images(image_dir=str(d), recursive=False).items():
            if code is not None:
                enc[os.path.normpath(str(d / name))] = code
    dups = hasher.find_duplicates(encoding_map=enc)
    secs = time.perf_counter() - t
    keys = sorted(enc)
    index = {k: i for i, k in enumerate(keys)}
    rows = [index[a] for a, bs in dups.items() for b in bs]
    cols = [index[b] for a, bs in dups.items() for b in bs]
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(keys), len(keys)))
    lab = connected_components(g, directed=False)[1]
    return {k: f"g{lab[i]}" for i, k in enumerate(keys)}, secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/bench_dedup")
    ap.add_argument("--skip-imagededup", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse the scan's caches (features, calibration scores)")
    args = ap.parse_args()
    if not (BSDS / "val").is_dir():
        sys.exit(f"BSDS500 not found at {BSDS}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    neardup = [sys.executable, "-m", "neardup"]
    qdir = out / "queries"
    if not (qdir / "manifest.csv").is_file():
        run([*neardup, "attack", str(BSDS / "val"), str(qdir)])
    dirs = [BSDS / "val", qdir, BSDS / "train"]
    scan = out / "scan"
    fresh = [] if args.reuse else ["--overwrite"]
    secs = run([*neardup, "dedup", *map(str, dirs), "--out", str(scan), "--no-report", *fresh])
    with open(scan / "groups.csv", newline="") as f:
        pred = {os.path.normpath(r["path"]): "g" + r["group"] for r in csv.DictReader(f)}
    import json

    summary = json.loads((scan / "summary.json").read_text())
    files = sorted(os.path.normpath(str(p)) for d in dirs for p in d.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    y = truth(files, qdir)
    rows = [("neardup dedup (calibrated)", *pair_scores(files, y, pred), secs)]
    if not args.skip_imagededup:
        for method in ("PHash", "DHash"):
            groups, t = imagededup_groups(method, dirs)
            rows.append((f"imagededup {method} (defaults)", *pair_scores(files, y, groups), t))
    cal = summary["calibration"] or {}
    print(f"\n{len(files)} files ({len(files) - 200} val photos + copies, 200 distractors); "
          f"dedup threshold {summary['threshold']:.4f} ({summary['threshold_source']}: estimated precision "
          f"{cal.get('precision', float('nan')):.3f}, recall {cal.get('recall', float('nan')):.3f}); "
          f"largest group {summary['largest_group']}; dedup timings {summary['timings_s']}")
    print(f"{'method':32s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'wall s':>7s}")
    for name, p, r, f1, t in rows:
        print(f"{name:32s} {p:9.4f} {r:7.4f} {f1:6.4f} {t:7.1f}")
    print("target (issue 12): F1 >= 0.95 and precision >= 0.98 with the calibrated default")


if __name__ == "__main__":
    main()
