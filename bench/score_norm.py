"""Score normalisation on BSDS500: µAP and recall@1 with and without, from one run.

Queries: the 58 default attacks of the 100 val photos (5800, seed 0). Database: the 100 val photos.
Background: the 200 train photos (no copy of any val photo). Features: efficientnet_lite0, the default
engine. Each row is one `neardup search exact --normalize-scores` setting on the same features:
SSCD's default (mean of the 3 nearest background similarities, beta 1), the ISC 2021 baseline's
(the 10th, beta 2) and a few around them. recall@1 and mAP cannot change (one amount is subtracted from
all of a query's scores); µAP, which ranks every (query, candidate) pair together, can.

Usage: python bench/score_norm.py [--data BSDS500_DIR] [--work out/bench_norm] [--model efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bsds_attacks import default_data, extract, scores, val_attacks

from neardup.extract.store import FeatureStore
from neardup.fastsearch.normalize import BackgroundNormalizer, ScoreNormalization

#: (reduction, k, beta) settings compared with no normalisation
SETTINGS = [("mean", 3, 1.0), ("kth", 10, 2.0), ("kth", 1, 1.0), ("mean", 10, 1.0), ("mean", 3, 0.5),
            ("mean", 3, 1.5), ("mean", 3, 2.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data(), help="BSDS500 folder (train/, val/)")
    ap.add_argument("--work", type=Path, default=Path("out/bench_norm"), help="attacks and features, reused")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    if not (args.data / "val").is_dir() or not (args.data / "train").is_dir():
        sys.exit(f"BSDS500 not found at {args.data} (pass --data DIR with train/ and val/)")
    t0 = time.perf_counter()
    queries = val_attacks(args.data, args.work, args.workers)
    feats = {}
    for name, src in (("database", args.data / "val"), ("queries", queries), ("background", args.data / "train")):
        feats[name] = args.work / args.model / name
        extract(src, feats[name], model=args.model, workers=args.workers)
    t_prep = time.perf_counter() - t0
    db = FeatureStore.open(feats["database"])
    rows = [("none", scores(feats["database"], feats["queries"]))]
    for reduction, k, beta in SETTINGS:
        cfg = ScoreNormalization(str(feats["background"]), k, beta, reduction)
        norm = BackgroundNormalizer.load(cfg, db.space, "cosine")
        rows.append((f"{reduction} k={k} beta={beta:g}", scores(feats["database"], feats["queries"], norm)))
    base = rows[0][1].overall
    print(f"{args.model}: {base.n_queries} queries (BSDS val x 58 attacks), database {rows[0][1].n_database} val "
          f"photos, background {len(FeatureStore.open(feats['background']))} train photos")
    print(f"{'normalisation':<22} {'R@1':>7} {'mAP':>7} {'µAP':>7} {'µAP gain':>9}")
    for label, r in rows:
        s = r.overall
        print(f"{label:<22} {s.recall['1']:>7.4f} {s.mAP:>7.4f} {s.muAP:>7.4f} {s.muAP - base.muAP:>+9.4f}")
    print(f"(attacks + features {t_prep:.0f} s, searches {time.perf_counter() - t0 - t_prep:.1f} s; work folder "
          f"{args.work})")


if __name__ == "__main__":
    main()
