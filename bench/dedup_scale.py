"""`neardup dedup` at a million images: time, peak memory, chaining, and the quality of the real groups.

Collection: the real efficientnet_lite0 features of BSDS500 val (100 photos) + their attacked copies (`neardup
attack` default set) + train (200 photos), embedded among N synthetic distractor vectors. Ground truth: a photo and
its copies form one group; every train photo and every distractor is alone.

Distractors come from models of real photo features (BSDS train + val), not from planted groups: the mean, the top
``rank`` principal components with their variances, and an isotropic residual (``residual`` x the variance they
leave). Two models, each tuned on a grid so that each vector's nearest-neighbour cosine similarity has the
quantiles of real photos at the same density (nearest among the 300 real photos against nearest among 300 samples):

  gaussian  the plain low-rank Gaussian, tuned on (rank, residual)
  mixture   a Gaussian scale mixture: each sample's deviation from the mean scaled by exp(spread * g - spread^2),
            g standard normal; tuned on (rank, residual, spread)

The fit stage prints the comparison, plus two checks of what matters at a million: the share of pairs above high
similarities (false duplicates grow with it) and hubness (how often the most popular vector is among the others'
5 nearest: hubs grow star groups). The N vectors are sampled in chunks and written as a float16 feature store
(the extract store format) that the pipeline reads memory-mapped.

Stages (each in its own process, so each peak-memory figure is its own):

  fit     fit and tune both distractor models; print the checks
  make    write N distractors of each model (skipped when the store exists)
  small   the real features alone, same threshold: the in-memory path (exact k-NN on full features) and the large
          path forced (streamed rows, projection, IVF, rescoring): the effect of the large path at small scale
  large   real + N distractors of each model through the large path of `neardup dedup` (the stage functions the
          CLI runs: streamed rows -> projection -> k-NN -> star-guarded groups): time, CPU time and peak memory per
          step, the largest group, plain components against the guard (chaining, hubs), and the pair precision /
          recall of the real groups (over the real images; "all pairs" also counts distractor pairs). The guard
          is the dedup default (star guard + pair-share rule + bridge rule, --min-pair-share, --max-bridge);
          "star only" is the same run without the pair-share and bridge rules, "plain" without any guard

Usage: python bench/dedup_scale.py --val F --queries F --train F --manifest CSV [--n 1000000] [--threshold T | \
--threshold-from SCAN/summary.json] [--distractors mixture,gaussian] [--out out/bench_dedup_scale] \
[--stages fit,make,small,large] [--min-pair-share S] [--max-bridge B]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from measure import cpu_s, load_avg, peak_gb

from neardup.dedup.grouping import MAX_BRIDGE, MIN_PAIR_SHARE

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: similarities of the pair-tail check
TAIL = (0.6, 0.7, 0.75, 0.8)
#: density of the distribution check: nearest neighbour among this many vectors (all the real photos)
MATCH_N = 300


# ---------------------------------------------------------------------------------------------------- real data
def real_features(args: argparse.Namespace) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(feature folders, ground-truth group of each row, is-a-photo mask (val or train, not a copy))."""
    from neardup.data.manifest import query_key, read_manifest
    from neardup.extract.store import FeatureStore

    folders = [Path(args.val), Path(args.queries), Path(args.train)]
    val, queries, train = (FeatureStore.open(f) for f in folders)
    source = {query_key(r.query): r.source for r in read_manifest(args.manifest)}
    qroot = Path(args.manifest).parent
    missing = [p for p in queries.paths if query_key(p, qroot) not in source]
    if missing:
        sys.exit(f"{len(missing)} query features are not in {args.manifest}, e.g. {missing[0]}")
    keys = ([f"val:{i}" for i in val.ids()] + [f"val:{source[query_key(p, qroot)]}" for p in queries.paths]
            + [f"train:{i}" for i in range(len(train))])
    truth = np.unique(keys, return_inverse=True)[1].astype(np.int64)
    photo = np.r_[np.ones(len(val), bool), np.zeros(len(queries), bool), np.ones(len(train), bool)]
    return folders, truth, photo


def pair_scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pair precision, recall and F1 of ``labels`` against ``truth`` (scikit-learn's pair confusion matrix)."""
    from sklearn.metrics.cluster import pair_confusion_matrix

    (_, fp), (fn, tp) = pair_confusion_matrix(truth, labels)
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": round(float(p), 4), "recall": round(float(r), 4),
            "f1": round(float(2 * p * r / max(p + r, 1e-12)), 4)}


def group_stats(labels: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Largest group, and the largest group holding images of more than one true group (unrelated images)."""
    sizes = np.bincount(labels)
    # one entry per (group, true group) present: a group with two entries holds unrelated images
    kinds = np.unique(labels.astype(np.int64) * (int(truth.max()) + 1) + truth) // (int(truth.max()) + 1)
    mixed = np.flatnonzero(np.bincount(kinds, minlength=len(sizes)) > 1)
    largest_mixed = int(sizes[mixed].max()) if len(mixed) else 0
    return {"groups": int((sizes > 1).sum()), "largest": int(sizes.max()),
            "largest_share": round(float(sizes.max() / len(labels)), 6),
            "largest_unrelated": largest_mixed, "largest_unrelated_share": round(largest_mixed / len(labels), 6),
            "in_groups": int(sizes[sizes > 1].sum())}


def pair_tail(X: np.ndarray) -> np.ndarray:
    """Share of the pairs of rows of ``X`` whose cosine similarity is at least each of :data:`TAIL`."""
    sims = (X @ X.T)[np.triu_indices(len(X), 1)]
    return np.array([np.mean(sims >= t) for t in TAIL])


def hubness(X: np.ndarray, k: int = 5) -> tuple[float, float]:
    """(largest k-occurrence, its skewness): how often a row is among the others' k nearest (Radovanovic et al.,
    "Hubs in space", JMLR 2010): a few rows near everything make star groups grow."""
    from scipy.stats import skew

    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    occ = np.bincount(np.argpartition(-S, k, axis=1)[:, :k].ravel(), minlength=len(X))
    return float(occ.max()), float(skew(occ))


def nn_similarity(X: np.ndarray) -> np.ndarray:
    """Each row's cosine similarity to its nearest other row (unit rows)."""
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    return S.max(axis=1)


# ---------------------------------------------------------------------------------------------------- distractors
@dataclass
class DistractorModel:
    """mean + t * (components^T (sd * z) + residual * e), t = exp(spread * g - spread^2), z, e, g standard normal."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (rank, d), orthonormal rows
    sd: np.ndarray  # (rank,)
    residual: float  # per-dimension standard deviation of the isotropic part
    spread: float

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, d) unit float32 rows."""
        d = len(self.mean)
        z = rng.standard_normal((n, len(self.sd)), dtype=np.float32) * self.sd.astype(np.float32)
        y = z @ self.components.astype(np.float32)
        y += np.float32(self.residual) * rng.standard_normal((n, d), dtype=np.float32)
        t = np.exp(self.spread * rng.standard_normal((n, 1)) - self.spread ** 2).astype(np.float32)
        y *= t
        y += self.mean.astype(np.float32)
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        return y


def principal(R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, components, variances) of the rows of ``R``."""
    mean = R.mean(axis=0)
    _, s, vt = np.linalg.svd(R - mean, full_matrices=False)
    return mean, vt, s.astype(np.float64) ** 2 / (len(R) - 1)


def fit_model(pc: tuple[np.ndarray, np.ndarray, np.ndarray], rank: int, residual: float,
              spread: float) -> DistractorModel:
    """The model with ``rank`` components; residual scale 1 is the per-dimension variance they leave."""
    mean, vt, var = pc
    left = max(float(var.sum() - var[:rank].sum()), 0.0) / len(mean)
    return DistractorModel(mean, vt[:rank], np.sqrt(var[:rank]), residual * float(np.sqrt(left)), spread)


def nn_quantiles(sample: Any, m: int, draws: int, seed: int) -> np.ndarray:
    """Quantiles of nearest-neighbour similarity among ``m`` vectors, averaged over ``draws`` sets."""
    rng = np.random.default_rng(seed)
    return np.mean([np.quantile(nn_similarity(sample(m, rng)), QUANTILES) for _ in range(draws)], axis=0)


def stage_fit(args: argparse.Namespace) -> None:
    from neardup.dedup.large import StoredRows

    folders, _, photo = real_features(args)
    R = StoredRows.from_stores([str(f) for f in folders]).take(np.flatnonzero(photo))
    real = np.quantile(nn_similarity(R), QUANTILES)
    real_sub = nn_quantiles(lambda m, g: R[g.choice(len(R), m, replace=False)], MATCH_N // 3, 20, args.seed)
    ranks = sorted({r for r in (25, 50, 100, 150, 200, len(R) - 1) if r < len(R)})
    pc = principal(R)
    rows = []
    for rank in ranks:
        for residual in (0.25, 0.5, 0.75, 1.0, 1.5):
            for spread in (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4):
                model = fit_model(pc, rank, residual, spread)
                q = nn_quantiles(model.sample, len(R), 4, args.seed)
                rows.append((float(np.abs(q - real).max()), rank, residual, spread, q))
    rows.sort(key=lambda r: r[0])
    best = rows[0]
    plain = next(r for r in rows if r[3] == 0.0)
    model = fit_model(pc, best[1], best[2], best[3])
    q_sub = nn_quantiles(model.sample, MATCH_N // 3, 20, args.seed + 1)
    head = "  ".join(f"{f'q{int(q * 100):02d}':>5s}" for q in QUANTILES)
    print(f"nearest-neighbour cosine similarity among {len(R)} vectors (real: BSDS train + val photos)")
    print(f"{'':44s} {head}  max |diff|")
    print(f"{'real photos':44s} " + "  ".join(f"{v:.3f}" for v in real))
    for label, r in (("gaussian", plain), ("mixture", best)):
        print(f"{label + f' (rank {r[1]}, residual {r[2]}, spread {r[3]})':44s} "
              + "  ".join(f"{v:.3f}" for v in r[4]) + f"   {r[0]:.3f}")
    print(f"at a third of the density (nearest among {MATCH_N // 3}, 20 draws):")
    print(f"{'real photos':44s} " + "  ".join(f"{v:.3f}" for v in real_sub))
    print(f"{'mixture':44s} " + "  ".join(f"{v:.3f}" for v in q_sub)
          + f"   {float(np.abs(q_sub - real_sub).max()):.3f}")
    rng = np.random.default_rng(args.seed + 2)
    models = {"mixture": fit_model(pc, best[1], best[2], best[3]), "gaussian": fit_model(pc, plain[1], plain[2], 0.0)}
    shape = {"real photos": (pair_tail(R), hubness(R))}
    for name, m in models.items():
        shape[name] = (pair_tail(m.sample(3000, rng)),
                       tuple(np.mean([hubness(m.sample(len(R), rng)) for _ in range(10)], axis=0)))
    print(f"share of pairs at or above a similarity, and hubness among {len(R)} (how often the most popular "
          f"vector is among the others' 5 nearest; skewness of that count):")
    print(f"{'':14s} " + "  ".join(f">={t:<7g}" for t in TAIL) + "  max N5  skew")
    for name, (tail, hub) in shape.items():
        print(f"{name:14s} " + "  ".join(f"{v:9.2e}" for v in tail) + f"  {hub[0]:6.1f}  {hub[1]:4.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, r in (("mixture", best), ("gaussian", plain)):
        m = fit_model(pc, r[1], r[2], r[3])
        np.savez(args.out / f"distractors_{name}.npz", mean=m.mean, components=m.components, sd=m.sd,
                 residual=m.residual, spread=m.spread)
    write_json(args.out / "fit.json", {
        "quantiles": QUANTILES, "real": real.round(4).tolist(), "rank": best[1], "residual": best[2],
        "spread": best[3], "model": best[4].round(4).tolist(), "max_diff": round(best[0], 4),
        "plain": {"rank": plain[1], "residual": plain[2], "q": plain[4].round(4).tolist(),
                  "max_diff": round(plain[0], 4)},
        "third_density": {"real": real_sub.round(4).tolist(), "model": q_sub.round(4).tolist()},
        "pair_tail": {"at": TAIL, **{k: v[0].tolist() for k, v in shape.items()}},
        "hubness_max_n5_skew": {k: [round(float(x), 3) for x in v[1]] for k, v in shape.items()}})
    print(f"fit: peak memory {peak_gb():.2f} GB")


def load_model(out: Path, name: str) -> DistractorModel:
    path = out / f"distractors_{name}.npz"
    if not path.is_file():
        sys.exit(f"{path} is missing: run the fit stage first")
    with np.load(path, allow_pickle=False) as z:
        return DistractorModel(z["mean"], z["components"], z["sd"], float(z["residual"]), float(z["spread"]))


def distractor_store(args: argparse.Namespace) -> Path:
    return args.out / f"distractors_{args.distractors}_{args.n}"


def stage_make(args: argparse.Namespace) -> None:
    """N distractors as a float16 feature store, sampled and written one shard at a time."""
    from neardup.extract.store import SCHEMA, FeatureStore, shard_name, write_shard
    from neardup.io_utils import atomic_write_json, read_json_object

    out = distractor_store(args)
    if (out / "meta.json").is_file():
        print(f"make: {out} exists ({len(FeatureStore.open(out))} vectors)")
        return
    model = load_model(args.out, args.distractors)
    rng = np.random.default_rng(args.seed + 7)
    t0 = time.perf_counter()
    shards = []
    for i, start in enumerate(range(0, args.n, args.shard_size)):
        stop = min(start + args.shard_size, args.n)
        write_shard(out, i, model.sample(stop - start, rng).astype(np.float16),
                    [f"distractor/{k:07d}" for k in range(start, stop)], [])
        shards.append(shard_name(i))
    real = read_json_object(Path(args.val) / "meta.json", "feature metadata")
    meta = {**{k: real[k] for k in ("model", "num_features", "metric", "preprocessing", "feature_layer")
               if k in real},
            "schema": SCHEMA, "dtype": "float16", "count": args.n, "n_inputs": args.n, "root": str(out),
            "shards": shards, "shard_size": args.shard_size, "skipped": [], "input_problems": [],
            "transform": None, "output_dim": real["num_features"],
            "synthetic": {"generator": "bench/dedup_scale.py", "seed": args.seed + 7}}
    atomic_write_json(out / "meta.json", meta)
    print(f"make: {args.n} {args.distractors} distractors in {len(shards)} float16 shards, "
          f"{time.perf_counter() - t0:.1f} s; "
          f"peak memory {peak_gb():.2f} GB")


# ---------------------------------------------------------------------------------------------------- the pipeline
def run_pipeline(X: Any, truth: np.ndarray, threshold: float, args: argparse.Namespace,
                 exact_limit: int) -> dict[str, Any]:
    """k-NN and groups through the stage functions `neardup dedup` runs; times, memory and scores."""
    from neardup.dedup.find import group_contents, knn
    from neardup.dedup.large import StoredRows, edge_similarities

    res: dict[str, Any] = {"n": len(X), "threshold": threshold, "k": args.k, "exact_limit": exact_limit}
    t0, c0 = time.perf_counter(), cpu_s()
    if isinstance(X, StoredRows):  # the projection knn would make first (cached), timed on its own
        X.search_vectors(show_progress=args.progress)
    res["project_s"], res["project_cpu_s"] = round(time.perf_counter() - t0, 2), round(cpu_s() - c0, 2)
    res["peak_gb_after_project"] = round(peak_gb(), 3)
    t1, c1 = time.perf_counter(), cpu_s()
    sims, nbrs = knn(X, args.k, exact_limit, show_progress=args.progress)
    res["knn_s"], res["knn_cpu_s"] = round(time.perf_counter() - t1, 2), round(cpu_s() - c1, 2)
    res["peak_gb_after_knn"] = round(peak_gb(), 3)
    t2, c2 = time.perf_counter(), cpu_s()
    star = group_contents(X, sims, nbrs, threshold, args.centre_margin, min_pair_share=args.min_pair_share,
                          max_bridge=args.max_bridge)
    res["group_s"], res["group_cpu_s"] = round(time.perf_counter() - t2, 2), round(cpu_s() - c2, 2)
    res["total_s"], res["total_cpu_s"] = round(time.perf_counter() - t0, 2), round(cpu_s() - c0, 2)
    res["peak_gb"] = round(peak_gb(), 3)
    res["min_pair_share"], res["max_bridge"] = args.min_pair_share, args.max_bridge
    t3 = time.perf_counter()
    star_only = group_contents(X, sims, nbrs, threshold, args.centre_margin, min_pair_share=0.0, max_bridge=0.0)
    res["group_star_only_s"] = round(time.perf_counter() - t3, 2)
    plain = group_contents(X, sims, nbrs, threshold, np.inf, min_pair_share=0.0,
                           max_bridge=0.0)  # no guard: plain components
    n_real = len(truth)
    full_truth = np.r_[truth, np.arange(len(X) - n_real) + truth.max() + 1]
    for name, labels in (("star", star), ("star_only", star_only), ("plain", plain)):
        res[name] = {"real": pair_scores(truth, np.unique(labels[:n_real], return_inverse=True)[1]),
                     "all": pair_scores(full_truth, labels), **group_stats(labels, full_truth)}
    # similarity to the nearest other row found (column 0 is the row itself), on the full rows
    first = np.where(nbrs[:, 1] >= 0, nbrs[:, 1], 0)
    nn = (edge_similarities(X, np.arange(len(X)), first) if isinstance(X, StoredRows)
          else np.einsum("ij,ij->i", X, X[first]))
    res["nn_similarity_quantiles"] = {"real": np.quantile(nn[:n_real], QUANTILES).round(4).tolist()}
    if len(X) > n_real:
        res["nn_similarity_quantiles"]["distractors"] = np.quantile(nn[n_real:], QUANTILES).round(4).tolist()
        res["distractors_with_a_neighbour_above_threshold"] = round(float((nn[n_real:] >= threshold).mean()), 5)
    return res


def stage_small(args: argparse.Namespace) -> None:
    from neardup.dedup.large import StoredRows

    folders, truth, _ = real_features(args)
    rows = StoredRows.from_stores([str(f) for f in folders])
    t = threshold(args)
    dense = rows.take(np.arange(len(rows)))
    out = {"in_memory": run_pipeline(dense, truth, t, args, exact_limit=10 ** 9),
           "large_path_forced": run_pipeline(rows, truth, t, args, exact_limit=0)}
    for name, r in out.items():
        print(f"small {name:18s}: {len(rows)} real vectors, threshold {t:.4f}: guard P/R/F1 "
              f"{fmt(r['star']['real'])}, star only {fmt(r['star_only']['real'])}, plain {fmt(r['plain']['real'])}, "
              f"largest group {r['star']['largest']}; {r['total_s']} s")
    write_json(args.out / "small.json", out)
    print(f"small: peak memory {peak_gb():.2f} GB")


def stage_large(args: argparse.Namespace) -> None:
    from neardup.dedup.large import StoredRows

    folders, truth, _ = real_features(args)
    store = distractor_store(args)
    if not (store / "meta.json").is_file():
        sys.exit(f"{store} is missing: run the make stage first")
    t = threshold(args)
    before = load_avg()
    t0 = time.perf_counter()
    rows = StoredRows.from_stores([*(str(f) for f in folders), str(store)])
    res = {"open_s": round(time.perf_counter() - t0, 2), **run_pipeline(rows, truth, t, args, args.exact_limit)}
    res["load_before"], res["load_after"] = before, load_avg()
    res["threads"] = os.environ.get("OMP_NUM_THREADS")
    res["distractors"] = args.distractors
    write_json(args.out / f"large_{args.distractors}_{args.n}.json", res)
    print(f"large ({args.distractors} distractors): {res['n']} vectors ({len(truth)} real), threshold {t:.4f}, "
          f"k {args.k}: projection {res['project_s']} s, k-NN {res['knn_s']} s, groups {res['group_s']} s, "
          f"total {res['total_s']} s wall / {res['total_cpu_s']} s CPU; peak memory {res['peak_gb']:.2f} GB "
          f"({res['load_before']} before, {res['load_after']} after, OMP_NUM_THREADS={res['threads']})")
    labels = {"star": f"guard (star + pair share {res['min_pair_share']:g} + bridge {res.get('max_bridge', 0):g})",
              "star_only": "star only",
              "plain": "plain components"}
    for name in ("star", "star_only", "plain"):
        r = res[name]
        print(f"  {labels[name]:30s}: real groups P/R/F1 {fmt(r['real'])}; all pairs {fmt(r['all'])}; largest group "
              f"{r['largest']} ({100 * r['largest_share']:.3f} %), largest with unrelated images "
              f"{r['largest_unrelated']} ({100 * r['largest_unrelated_share']:.3f} %)")
    print(f"  nearest-neighbour similarity quantiles {QUANTILES}: {res['nn_similarity_quantiles']}; distractors "
          f"with a neighbour at or above the threshold: {100 * res['distractors_with_a_neighbour_above_threshold']:.2f}"
          " %")


# ---------------------------------------------------------------------------------------------------- helpers
def fmt(s: dict[str, float]) -> str:
    return f"{s['precision']:.3f}/{s['recall']:.3f}/{s['f1']:.3f}"


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__")
                               else float(o)) + "\n")


def threshold(args: argparse.Namespace) -> float:
    if args.threshold is not None:
        return float(args.threshold)
    path = Path(args.threshold_from)
    if not path.is_file():
        sys.exit(f"no --threshold and no {path}: run bench/dedup_quality.py first, or give --threshold")
    return float(json.loads(path.read_text())["threshold"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", required=True, help="feature folder of the BSDS500 val photos")
    ap.add_argument("--queries", required=True, help="feature folder of their attacked copies")
    ap.add_argument("--train", required=True, help="feature folder of the BSDS500 train photos")
    ap.add_argument("--manifest", required=True, help="manifest.csv of the attacked copies")
    ap.add_argument("--out", type=Path, default=Path("out/bench_dedup_scale"))
    ap.add_argument("--stages", default="fit,make,small,large")
    ap.add_argument("--n", type=int, default=1_000_000, help="distractors")
    ap.add_argument("--distractors", default="mixture,gaussian",
                    help="distractor models, each made and run in turn: mixture (the best match of the real "
                         "nearest-neighbour similarities) and gaussian (the best plain low-rank Gaussian)")
    ap.add_argument("--threshold", type=float, help="cosine threshold (default: the one --threshold-from records)")
    ap.add_argument("--threshold-from", default="out/bench_dedup/scan/summary.json",
                    help="summary.json of the small-scale calibrated scan (bench/dedup_quality.py)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--centre-margin", type=float, default=0.2, help="the dedup default")
    ap.add_argument("--min-pair-share", type=float, default=MIN_PAIR_SHARE,
                    help="the hub guard (the dedup default); 'star only' is the same run without it")
    ap.add_argument("--max-bridge", type=float, default=MAX_BRIDGE, help="the bridge rule (0: off)")
    ap.add_argument("--exact-limit", type=int, default=100_000)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        {"fit": stage_fit, "make": stage_make, "small": stage_small, "large": stage_large}[args.stage](args)
        return
    print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, {load_avg()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    stages = [s for s in args.stages.split(",") if s]
    runs = [(s, None) for s in stages if s in ("fit", "small")]
    runs += [(s, m) for m in args.distractors.split(",") for s in stages if s in ("make", "large")]
    for stage, model in runs:
        print(f"== {stage}{f' ({model} distractors)' if model else ''}", flush=True)
        extra = ["--distractors", model] if model else []
        subprocess.run([sys.executable, __file__, *sys.argv[1:], *extra, "--stage", stage], check=True)


if __name__ == "__main__":
    main()
