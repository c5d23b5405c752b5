"""Clustering quality on real attacks, and scale on synthetic planted groups.

Stages (each runs in its own process, so each peak-memory figure is its own):

  real     BSDS500: the 100 val photos + their 58 attacks each (5800 queries) + the 200 train photos as
           singletons, efficientnet_lite0 features. Every method is swept; ARI and pairwise F1 at the
           best setting (by ARI) are printed.
  hier20k  hierarchical (average, cosine) on 20K synthetic vectors: time and peak memory.
  graph1m  the graph method (PCA 128 + IVF4096,Flat k-NN, k=10) on 1M synthetic vectors: time, peak memory,
           scores. (HNSW, --large-index hnsw, is slower here and loses recall among near-identical vectors.)

Synthetic vectors are planted near-duplicate groups around the real features: each group's centre
is a real feature moved along the difference of two other real features plus isotropic noise, and
its members are small perturbations of that centre; group sizes are 1 + Poisson(2).

Attacks and features are generated with the library (cached under --out; re-runs reuse them).

Usage: python bench/cluster_scale.py [--out out/bench_cluster] [--stages real,hier20k,graph1m]
                                     [--n-large 1000000] [--n-hier 20000] [--large-index IVF4096,Flat]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from measure import peak_gb

import neardup._compat  # noqa: F401

BSDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500"
MODEL = "efficientnet_lite0"


def prepare_real(out: Path, bsds: Path) -> list[Path]:
    """Attacks of val and features of val / train / queries, cached under ``out``."""
    from neardup.data.generate import generate_attacks, load_attack_config
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    queries = out / "queries"
    if not (queries / "manifest.csv").is_file():
        generate_attacks(bsds / "val", queries, load_attack_config("default"), show_progress=False)
    folders = []
    for name, src in (("originals", bsds / "val"), ("queries", queries), ("distractors", bsds / "train")):
        dst = out / "features" / name
        if not (dst / "meta.json").is_file():
            extract_features(src, dst, ExtractConfig(MODEL), show_progress=False)
        folders.append(dst)
    return folders


def stage_real(out: Path, bsds: Path) -> None:
    from neardup.clustering.data import load_features, truth_from_manifests
    from neardup.clustering.run import run_clustering
    from neardup.fastsearch.vectors import l2_normalize

    folders = prepare_real(out, bsds)
    inp = load_features(folders)
    truth = truth_from_manifests(inp.ids, [out / "queries" / "manifest.csv"])
    n_groups = len(np.unique(truth.groups))
    print(f"real: {len(inp.ids)} images ({len(inp.ids) - 300} attacked queries of 100 val photos, 100 originals, "
          f"200 train distractors), {n_groups} true groups, {MODEL} {inp.features.shape[1]}-d")
    radius = [round(v, 3) for v in np.arange(0.05, 0.501, 0.025)]
    runs = [
        ("hierarchical single", "hierarchical", {"linkage": "single"}, "distance_threshold", radius, "cosine"),
        ("hierarchical average", "hierarchical", {"linkage": "average"}, "distance_threshold", radius, "cosine"),
        ("hierarchical complete", "hierarchical", {"linkage": "complete"}, "distance_threshold",
         [round(v, 2) for v in np.arange(0.2, 1.01, 0.05)], "cosine"),
        ("hierarchical weighted", "hierarchical", {"linkage": "weighted"}, "distance_threshold", radius, "cosine"),
        ("hierarchical ward (L2-normalised)", "hierarchical", {"linkage": "ward"}, "n_clusters",
         list(range(100, 1001, 25)), "l2"),
        ("dbscan min_samples=2", "dbscan", {"min_samples": 2}, "eps", radius, "cosine"),
        ("dbscan min_samples=5", "dbscan", {"min_samples": 5}, "eps", radius, "cosine"),
        ("hdbscan min_cluster_size=2", "hdbscan", {"min_cluster_size": 2}, "cluster_selection_epsilon",
         [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3], "cosine"),
        ("graph flat k=20", "graph", {"k": 20, "index": "flat"}, "threshold", radius, "cosine"),
        ("graph hnsw k=10", "graph", {"k": 10, "index": "hnsw"}, "threshold", radius, "cosine"),
    ]
    Xn = l2_normalize(inp.features)
    print(f"{'method':<36} {'swept':<26} {'best':>6} {'ARI':>7} {'pairF1':>7} {'clusters':>8} {'noise':>6} "
          f"{'fit_s':>7}")
    for label, method, params, name, values, metric in runs:
        X = Xn if metric == "l2" else inp.features
        t0 = time.perf_counter()
        res, _, _, _ = run_clustering(X, method, params, metric, sweep_param=name, values=values, truth=truth,
                                      attributes=0)
        wall = time.perf_counter() - t0
        b = res.settings[res.best]
        print(f"{label:<36} {name + f' x{len(values)}':<26} {b.value:>6g} {b.full.ari:>7.4f} "
              f"{b.full.pairwise_f1:>7.4f} {b.n_clusters:>8} {b.n_noise:>6} {res.settings[0].seconds:>7.2f}"
              f"   (sweep {wall:.1f} s)", flush=True)
    print(f"real: peak memory {peak_gb():.2f} GB")


def real_base(out: Path) -> np.ndarray:
    """L2-normalised real features (val + train + queries) that the synthetic groups are planted around."""
    from neardup.clustering.data import load_features
    from neardup.fastsearch.vectors import l2_normalize

    folders = [out / "features" / n for n in ("originals", "distractors", "queries")]
    return l2_normalize(load_features([f for f in folders if (f / "meta.json").is_file()]).features)


def planted_groups(base: np.ndarray, n: int, seed: int = 0, chunk: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors in groups of 1 + Poisson(2) around the real ``base`` features (filled in place, float32)."""
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(2.0, size=n // 2)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    sizes[-1] -= int(sizes.sum() - n)
    sizes = sizes[sizes > 0]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    d = base.shape[1]
    X = np.empty((n, d), dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    # isotropic noise from a pool (sum of two random pool rows): drawing 1.3e9 normals would dominate the run
    pool = rng.standard_normal((8192, d), dtype=np.float32) / np.float32(np.sqrt(2 * d))
    for g0 in range(0, len(sizes), chunk):
        g1 = min(g0 + chunk, len(sizes))
        a, b, c = (rng.integers(0, len(base), g1 - g0) for _ in range(3))
        iso = pool[rng.integers(0, len(pool), g1 - g0)] + pool[rng.integers(0, len(pool), g1 - g0)]
        centres = base[a] + 0.6 * (base[b] - base[c]) + 0.3 * iso
        r0, r1 = starts[g0], starts[g1]
        rows = labels[r0:r1] - g0
        m = r1 - r0
        e, f = rng.integers(0, len(base), m), rng.integers(0, len(base), m)
        noise = pool[rng.integers(0, len(pool), m)] + pool[rng.integers(0, len(pool), m)]
        noise *= np.float32(0.08)
        noise += np.float32(0.05) * (base[e] - base[f])
        X[r0:r1] = centres[rows] + noise
    return X, labels


def synthetic(out: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if (BSDS / "val").is_dir() and (out / "features" / "originals" / "meta.json").is_file():
        base = real_base(out)
        src = f"around {len(base)} real {MODEL} features"
    else:
        base = np.random.default_rng(seed).standard_normal((6100, 1280)).astype(np.float32)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        src = "around Gaussian base vectors (no cached real features: run the real stage first)"
    t0 = time.perf_counter()
    X, y = planted_groups(base, n, seed)
    print(f"synthetic: {n} vectors, {int(y.max()) + 1} planted groups, {X.shape[1]}-d, {src} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return X, y


def stage_hier(out: Path, n: int) -> None:
    from neardup.clustering.hierarchical import HierarchicalClustering, linkage_memory
    from neardup.clustering.metrics import score_partition

    X, y = synthetic(out, n, seed=1)
    print(f"hierarchical: estimated need {linkage_memory(len(X), X.shape[1]) / 1e9:.2f} GB", flush=True)
    t0 = time.perf_counter()
    est = HierarchicalClustering(linkage="average", metric="cosine", distance_threshold=0.1).fit(X)
    fit = time.perf_counter() - t0
    best = None
    for t in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
        s = score_partition(y, est.cut(distance_threshold=t))
        if best is None or s.ari > best[1].ari:
            best = (t, s)
    assert best is not None
    print(f"hierarchical average/cosine on {n} vectors: fit {fit:.1f} s (limit 120 s: "
          f"{'OK' if fit < 120 else 'TOO SLOW'}), best cut {best[0]}: ARI {best[1].ari:.4f}, "
          f"pairwise F1 {best[1].pairwise_f1:.4f}, {best[1].n_clusters} clusters; peak memory {peak_gb():.2f} GB")


def stage_graph(out: Path, n: int, index: str) -> None:
    from neardup.clustering.graph import GraphClustering, components_from_knn
    from neardup.clustering.metrics import score_partition

    t_all = time.perf_counter()
    X, y = synthetic(out, n, seed=2)
    t0 = time.perf_counter()
    est = GraphClustering(threshold=0.05, k=10, metric="cosine", index=index, pca=128, ef_search=32).fit(
        X, show_progress=True)
    fit = time.perf_counter() - t0
    print(f"graph (PCA 128, index {index}, k=10) fit on {n} vectors: {fit:.1f} s; peak so far {peak_gb():.2f} GB",
          flush=True)
    best = None
    for t in (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2):
        t1 = time.perf_counter()
        labels = components_from_knn(est.knn_distances_, est.knn_indices_, t)
        s = score_partition(y, labels)
        print(f"  threshold {t:<6g} clusters {s.n_clusters:>8}  ARI {s.ari:.4f}  pairwise F1 {s.pairwise_f1:.4f}  "
              f"({time.perf_counter() - t1:.1f} s)", flush=True)
        if best is None or s.ari > best[1].ari:
            best = (t, s)
    assert best is not None
    total = time.perf_counter() - t_all
    peak = peak_gb()
    print(f"graph on {n} vectors: best threshold {best[0]}: ARI {best[1].ari:.4f}, pairwise F1 "
          f"{best[1].pairwise_f1:.4f}; fit {fit:.1f} s, total with data generation and sweep {total:.1f} s "
          f"(limit 900 s: {'OK' if total < 900 else 'TOO SLOW'}); peak memory {peak:.2f} GB "
          f"(limit 8 GB: {'OK' if peak < 8 else 'TOO MUCH'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench_cluster"))
    ap.add_argument("--stages", default="real,hier20k,graph1m")
    ap.add_argument("--n-large", type=int, default=1_000_000)
    ap.add_argument("--n-hier", type=int, default=20_000)
    ap.add_argument("--bsds", type=Path, default=Path(os.environ.get("BSDS500", BSDS)))
    ap.add_argument("--large-index", default="IVF4096,Flat",
                    help="faiss index of the 1M graph stage: a factory string (nprobe 16), hnsw (M=16, efSearch 32) "
                         "or flat")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        {"real": lambda: stage_real(args.out, args.bsds), "hier20k": lambda: stage_hier(args.out, args.n_hier),
         "graph1m": lambda: stage_graph(args.out, args.n_large, args.large_index)}[args.stage]()
        return
    if "real" in args.stages and not (args.bsds / "val").is_dir():
        print(f"skipping the real stage: BSDS500 not found at {args.bsds}")
        args.stages = args.stages.replace("real", "")
    for stage in [s for s in args.stages.split(",") if s]:
        print(f"== {stage}", flush=True)
        cmd = [sys.executable, __file__, "--stage", stage, "--out", str(args.out), "--n-large", str(args.n_large),
               "--n-hier", str(args.n_hier), "--bsds", str(args.bsds), "--large-index", args.large_index]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
