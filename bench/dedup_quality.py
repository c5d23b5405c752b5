"""Duplicate-pair precision, recall and F1 of `neardup dedup` against imagededup's PHash and DHash, same run.

Collection: BSDS500 val (100 photos) + their 58 attacked copies each (5,800, made with `neardup attack`) + BSDS500
train (200 photos, distractors). dedup gets no labels and no threshold (the calibrated default). Ground truth: a
photo and its attacked copies form one group; every train photo is its own group. Pairs are scored with
scikit-learn's pair confusion matrix over all files.

Each step is a command a user could repeat. The attacked copies are kept under --out; the scan starts fresh (so
its wall time includes feature extraction and calibration, as imagededup's includes hashing) unless --reuse.

With ``--normalize-scores BACKGROUND`` (score normalisation, issue 14) the collection is scanned twice, without and
with normalisation, both calibrated, and every method is scored on that collection. The background must be copies
of nothing in the collection, so BSDS500 train cannot be both background and distractors: with
``--normalize-scores <bsds500>/train`` it is split in two halves copied under --out (background: the first 100
photos by name, distractors: the other 100; the collection is then 6,000 files). Another BACKGROUND is used as it
is, with all of train as distractors. With --reuse those scans start from the features of the main scan
(``--out/scan``), copied into them when they have none.

Usage: python bench/dedup_quality.py [--out out/bench_dedup] [--skip-imagededup] [--reuse] \
    [--normalize-scores BACKGROUND] [--bsds DIR] [--sweep]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import neardup._compat  # noqa: F401  (torchvision on a CPU-only torch: imagededup imports it)

#: where the repository's checkout expects BSDS500 (a git worktree elsewhere: --bsds)
BSDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500"


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def truth(files: list[str], qdir: Path, bsds: Path = BSDS) -> dict[str, str]:
    """file -> group key: a val photo and its copies share the photo's id; train photos are alone."""
    from neardup.data.manifest import read_manifest

    out: dict[str, str] = {}
    for r in read_manifest(qdir / "manifest.csv"):
        out[os.path.normpath(str(qdir / r.query))] = "val:" + r.source
    for f in files:
        p = Path(f)
        if p.parent == bsds / "val":
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


def scan_groups(neardup: list[str], dirs: list[Path], scan: Path, reuse: bool,
                extra: list[str], seed_from: Path | None = None) -> tuple[dict[str, str], dict, float]:
    """Run one `neardup dedup` scan; (file -> group, summary, wall seconds). ``reuse``: keep the scan's caches,
    and start from the features of ``seed_from`` when it has none."""
    if reuse and seed_from is not None and not (scan / "features").exists() and (seed_from / "features").is_dir():
        shutil.copytree(seed_from / "features", scan / "features")  # the same contents: encoded once
    fresh = [] if reuse else ["--overwrite"]
    secs = run([*neardup, "dedup", *map(str, dirs), "--out", str(scan), "--no-report", *fresh, *extra])
    with open(scan / "groups.csv", newline="") as f:
        pred = {os.path.normpath(r["path"]): "g" + r["group"] for r in csv.DictReader(f)}
    return pred, json.loads((scan / "summary.json").read_text()), secs


def split_train(train: Path, out: Path) -> tuple[Path, Path]:
    """BSDS500 train split in two halves copied under ``out``: (background: the first 100 in name order,
    distractors: the other 100). The background must be copies of nothing in the collection, and the collection
    needs distractors (its hard negatives), so one set cannot be both."""
    photos = sorted(train.glob("*.jpg"))
    halves = (out / "train_background", out / "train_distractors")
    for half, part in zip(halves, (photos[:len(photos) // 2], photos[len(photos) // 2:]), strict=True):
        half.mkdir(exist_ok=True)
        for p in part:
            if not (half / p.name).is_file():
                shutil.copy2(p, half / p.name)
    return halves


def sweep_grids(args: argparse.Namespace) -> list[np.ndarray]:
    """Threshold grids of --sweep: cosine, then (with --normalize-scores) normalised scores (k 3, beta 1)."""
    grids = [np.arange(0.70, 0.8751, 0.025)]
    if args.normalize_scores:
        grids.append(np.arange(0.25, 0.4501, 0.025))
    return grids


def describe(name: str, summary: dict) -> str:
    cal = summary["calibration"] or {}
    scale = "normalised score" if summary.get("normalization") else "cosine"
    return (f"{name}: threshold {summary['threshold']:.4f} ({scale}, {summary['threshold_source']}: estimated "
            f"precision {cal.get('precision', float('nan')):.3f}, recall {cal.get('recall', float('nan')):.3f}); "
            f"largest group {summary['largest_group']}; timings {summary['timings_s']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/bench_dedup")
    ap.add_argument("--skip-imagededup", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="reuse the scan's caches (features, calibration scores)")
    ap.add_argument("--normalize-scores", metavar="BACKGROUND",
                    help="also scan with score normalisation against BACKGROUND (BSDS500 train: split in "
                         "background and distractors halves)")
    ap.add_argument("--bsds", type=Path, default=BSDS, help="the BSDS500 folder (val/, train/)")
    ap.add_argument("--sweep", action="store_true",
                    help="also scan at a grid of given thresholds and print the best F1 (scans DIR/*_sweep)")
    args = ap.parse_args()
    bsds = args.bsds.resolve()
    if not (bsds / "val").is_dir():
        sys.exit(f"BSDS500 not found at {bsds} (give --bsds)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    neardup = [sys.executable, "-m", "neardup"]
    qdir = out / "queries"
    if not (qdir / "manifest.csv").is_file():
        run([*neardup, "attack", str(bsds / "val"), str(qdir)])
    if args.normalize_scores:
        background, distractors = Path(args.normalize_scores), bsds / "train"
        if background.resolve() == distractors:
            background, distractors = split_train(bsds / "train", out)
        dirs = [bsds / "val", qdir, distractors]
        scans = [("neardup dedup (calibrated)", out / "scan_split", []),
                 ("neardup dedup --normalize-scores", out / "scan_split_norm",
                  ["--normalize-scores", str(background)])]
    else:
        dirs = [bsds / "val", qdir, bsds / "train"]
        scans = [("neardup dedup (calibrated)", out / "scan", [])]
    files = sorted(os.path.normpath(str(p)) for d in dirs for p in d.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    y = truth(files, qdir, bsds)
    rows, notes = [], []
    for name, scan, extra in scans:
        pred, summary, secs = scan_groups(neardup, dirs, scan, args.reuse, extra, seed_from=out / "scan")
        rows.append((name, *pair_scores(files, y, pred), secs))
        notes.append(describe(name, summary))
    if not args.skip_imagededup:
        for method in ("PHash", "DHash"):
            groups, t = imagededup_groups(method, dirs)
            rows.append((f"imagededup {method} (defaults)", *pair_scores(files, y, groups), t))
    if args.sweep:  # the best any threshold gives, each scale's own grid (what a perfect calibration would reach)
        for (_, scan, extra), grid in zip(scans, sweep_grids(args), strict=False):
            best = max((pair_scores(files, y, scan_groups(neardup, dirs, scan.with_name(scan.name + "_sweep"), True,
                                                          [*extra, "--threshold", f"{t:.4f}"], seed_from=scan)[0])[2],
                        round(float(t), 4)) for t in grid)
            rows.append((f"  {'normalised' if extra else 'cosine'}, best of {len(grid)}: {best[1]:g}",
                         *([float("nan")] * 2), best[0], float("nan")))
    n_val = sum(1 for f in files if not y[f].startswith("alone:"))
    print(f"\n{len(files)} files ({n_val} val photos + copies, {len(files) - n_val} distractors"
          + (f"; background {scans[-1][2][-1]}, not in the collection" if args.normalize_scores else "") + ")")
    for note in notes:
        print(note)
    print(f"{'method':34s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'wall s':>7s}")
    for name, p, r, f1, t in rows:
        print(f"{name:34s} {p:9.4f} {r:7.4f} {f1:6.4f} {t:7.1f}".replace("nan", "  -"))
    print("target (issue 12): F1 >= 0.95 and precision >= 0.98 with the calibrated default")


if __name__ == "__main__":
    main()
