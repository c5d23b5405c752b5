"""`--ray` on one machine: what the local Ray instance costs against the single-process paths, from one run.

Stages (each in its own process, so each peak-memory figure is its own; every ratio compares runs of one stage):

  extract   `neardup extract` on the same images, in turn in-process and on a local Ray instance, --repeat times
            each (interleaved, so a load change on this shared machine hits both alike); default options (engine
            auto, batch 32, shards of 10,000). Throughput with start-up (the whole call: model build, actors; Ray's
            own start reported apart) and without (steady state: images from the end of the first batch to the end
            of the last, timed where both paths hand batches to the same shard writer); their ratio, Ray / in-process.
  make      N synthetic unit vectors of --dim dimensions (a low-rank Gaussian around a shared mean, like network
            features, plus planted near-copies) written as a float16 feature store (the extract store format)
  knn-one   the k-NN graph and groups of `neardup dedup` above --exact-limit in one process (the stage functions
            it runs: streamed rows -> projection -> IVF k-NN -> rescoring -> star-guarded groups): time, peak memory
  knn-ray   the same on the local Ray instance (neardup.scaleout.knn: shards, query blocks, edge shards): time with
            and without Ray's start, peak memory of the driver and of each shard actor; groups compared with knn-one
  group     the grouping alone on synthetic edge lists (200,000 rows in pairs, or in groups of 16: 1.2M edges): its
            peak memory against neardup.scaleout.knn.grouping_bytes

Usage: OMP_NUM_THREADS=1 python bench/ray_scale.py [--images DIR ...] [--repeat 2] [--n 1000000] [--dim 1280]
       [--threshold 0.9] [--out out/bench_ray] [--stages extract,make,knn-one,knn-ray,group]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from measure import cpu_s, load_avg, peak_gb


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=float) + "\n")


# ---------------------------------------------------------------------------------------------------- extract
def image_list(args: argparse.Namespace) -> Path:
    """A list file of the images, each listed --copies times under its own name (symlinks: real decodes)."""
    from bsds_attacks import default_data

    folders = [Path(d) for d in args.images] or [default_data() / "train", default_data() / "val"]
    photos = sorted(p for d in folders for p in d.glob("*.jpg"))
    if not photos:
        sys.exit(f"no .jpg images in {', '.join(map(str, folders))}: give --images")
    links = args.out / "images"
    links.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in range(args.copies):
        for p in photos:
            link = links / f"c{c}_{p.parent.name}_{p.name}"
            if not link.exists():
                link.symlink_to(p.resolve())
            paths.append(str(link))
    listing = args.out / "images.txt"
    listing.write_text("".join(p + "\n" for p in paths))
    return listing


def stage_extract(args: argparse.Namespace) -> None:
    import ray

    import neardup.extract.pipeline as pipeline
    from neardup.extract.config import ExtractConfig
    from neardup.scaleout.engine import RayConfig

    listing = image_list(args)
    stamps: list[tuple[float, int]] = []
    add = pipeline.ShardWriter.add

    def timed_add(self: Any, good: list[int], feats: Any, bad: list[tuple[int, str]]) -> None:
        add(self, good, feats, bad)
        stamps.append((time.perf_counter(), len(good) + len(bad)))

    pipeline.ShardWriter.add = timed_add  # type: ignore[method-assign]  # the same point in both paths
    before = load_avg()
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    runs: dict[str, list[dict[str, float]]] = {"in-process": [], "ray": []}
    for r in range(args.repeat):
        for mode in ("in-process", "ray"):
            stamps.clear()
            out = args.out / f"extract_{mode}"
            t = time.perf_counter()
            rep = pipeline.extract_features(listing, out, ExtractConfig(overwrite=True), show_progress=False,
                                            ray=RayConfig() if mode == "ray" else None)
            total = time.perf_counter() - t
            n = rep.count + len(rep.skipped)
            steady = sum(c for _, c in stamps[1:]) / (stamps[-1][0] - stamps[0][0])
            runs[mode].append({"images": n, "seconds": round(total, 2), "img_s_with_startup": round(n / total, 2),
                               "img_s_steady": round(steady, 2), "first_batch_s": round(stamps[0][0] - t, 2)})
            print(f"  round {r + 1} {mode:10s}: {n} images in {total:.1f} s = {n / total:.1f} img/s with start-up, "
                  f"{steady:.1f} img/s steady (first batch after {stamps[0][0] - t:.1f} s); {load_avg()}", flush=True)
    from neardup.extract.store import FeatureStore

    a, b = (FeatureStore.open(args.out / f"extract_{m}") for m in ("in-process", "ray"))
    identical = bool(a.paths == b.paths and np.array_equal(a.features(), b.features()))
    ray.shutdown()
    med = {m: {k: float(np.median([x[k] for x in v])) for k in v[0]} for m, v in runs.items()}
    ratio = {k: round(med["ray"][k] / med["in-process"][k], 3) for k in ("img_s_with_startup", "img_s_steady")}
    res = {"runs": runs, "median": med, "ratio_ray_over_in_process": ratio, "ray_init_s": round(ray_start, 2),
           "features_identical": identical, "load_before": before, "load_after": load_avg(),
           "omp_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()}
    write_json(args.out / "extract.json", res)
    with_init = med["ray"]["images"] / (med["ray"]["seconds"] + ray_start)
    print(f"extract ({med['ray']['images']:.0f} images, median of {args.repeat}): in-process "
          f"{med['in-process']['img_s_with_startup']:.1f} img/s with start-up, {med['in-process']['img_s_steady']:.1f} "
          f"steady; Ray {med['ray']['img_s_with_startup']:.1f} with start-up ({with_init:.1f} counting ray.init's "
          f"{ray_start:.1f} s), {med['ray']['img_s_steady']:.1f} steady. Ray / in-process: "
          f"{ratio['img_s_with_startup']:.3f} with start-up, {ratio['img_s_steady']:.3f} steady "
          f"(overhead {100 * (1 - ratio['img_s_steady']):.1f} % steady); features identical: {identical}; "
          f"{before} before, {load_avg()} after")


# ---------------------------------------------------------------------------------------------------- vectors
def store_path(args: argparse.Namespace) -> Path:
    return args.out / f"vectors_{args.n}x{args.dim}"


def stage_make(args: argparse.Namespace) -> None:
    """N unit vectors: a shared mean + a rank-128 Gaussian (decaying spectrum) + a small isotropic residual, so
    that nearest neighbours sit near 0.5 like network features of distinct photos (median 0.48 among 20,000) and
    a 128-d projection keeps their similarities; the last 4 % are near-copies of earlier rows (1-3 per original,
    cosine ~0.93-0.98)."""
    from neardup.extract.store import SCHEMA, shard_name, write_shard
    from neardup.io_utils import atomic_write_json

    out = store_path(args)
    if (out / "meta.json").is_file():
        print(f"make: {out} exists")
        return
    rng = np.random.default_rng(args.seed)
    d, rank = args.dim, 128
    mean = rng.standard_normal(d).astype(np.float32) * 0.05
    basis = np.linalg.qr(rng.standard_normal((d, rank)))[0].T.astype(np.float32)
    sd = (np.linspace(1.0, 0.1, rank) ** 1.5).astype(np.float32)
    n_copies = int(0.04 * args.n)
    n_base = args.n - n_copies
    originals = np.sort(rng.choice(n_base, size=n_copies // 2, replace=False))
    source = np.sort(rng.choice(originals, size=n_copies))  # 1-3 copies each, on average 2
    t0 = time.perf_counter()
    shards, start = [], 0
    while start < args.n:
        stop = min(start + args.shard_size, args.n)
        m = stop - start
        block = np.empty((m, d), dtype=np.float32)
        base = np.arange(start, stop) < n_base
        gen = np.random.default_rng([args.seed, start])
        y = mean + (gen.standard_normal((m, rank), dtype=np.float32) * sd) @ basis
        y += 0.02 * gen.standard_normal((m, d), dtype=np.float32)
        block[:] = y / np.linalg.norm(y, axis=1, keepdims=True)
        cp = np.flatnonzero(~base)
        if len(cp):  # a copy: its original (from this block, or read back from its written shard) plus noise
            for i, j in zip(cp, source[start + cp - n_base].tolist(), strict=True):
                if j >= start:
                    block[i] = block[j - start]
                else:
                    shard = np.load(out / "shards" / f"{shard_name(j // args.shard_size)}.npy", mmap_mode="r")
                    block[i] = shard[j % args.shard_size]
            noise = gen.uniform(0.2, 0.4, (len(cp), 1)).astype(np.float32)
            block[cp] += noise * gen.standard_normal((len(cp), d), dtype=np.float32) / np.sqrt(d)
            block[cp] /= np.linalg.norm(block[cp], axis=1, keepdims=True)
        i = len(shards)
        write_shard(out, i, block.astype(np.float16), [f"v/{k:08d}" for k in range(start, stop)], [])
        shards.append(shard_name(i))
        start = stop
    meta = {"schema": SCHEMA, "model": "synthetic", "metric": "cosine", "num_features": d, "dtype": "float16",
            "count": args.n, "n_inputs": args.n, "root": str(out), "shards": shards, "shard_size": args.shard_size,
            "skipped": [], "input_problems": [], "transform": None, "output_dim": d,
            "preprocessing": {}, "feature_layer": "", "synthetic": {"generator": "bench/ray_scale.py",
                                                                   "seed": args.seed, "copies": n_copies}}
    atomic_write_json(out / "meta.json", meta)
    print(f"make: {args.n} vectors ({n_copies} near-copies) x {d} in {len(shards)} float16 shards, "
          f"{time.perf_counter() - t0:.1f} s")


def open_rows(args: argparse.Namespace) -> Any:
    from neardup.dedup.large import StoredRows

    if not (store_path(args) / "meta.json").is_file():
        sys.exit(f"{store_path(args)} is missing: run the make stage first")
    return StoredRows.from_stores([str(store_path(args))])


def stage_knn_one(args: argparse.Namespace) -> None:
    from neardup.dedup.find import group_contents, knn

    X = open_rows(args)
    before = load_avg()
    t0 = time.perf_counter()
    X.search_vectors()  # the projection knn makes first, timed on its own
    t1 = time.perf_counter()
    sims, nbrs = knn(X, args.k, args.exact_limit)
    t2 = time.perf_counter()
    labels = group_contents(X, sims, nbrs, args.threshold, args.centre_margin)
    t3 = time.perf_counter()
    np.save(args.out / "labels_one.npy", labels)
    res = {"n": len(X), "project_s": round(t1 - t0, 2), "knn_s": round(t2 - t1, 2), "group_s": round(t3 - t2, 2),
           "total_s": round(t3 - t0, 2), "cpu_s": round(cpu_s(), 1), "peak_gb": round(peak_gb(), 3),
           "groups": int((np.bincount(labels) > 1).sum()),
           "load_before": before, "load_after": load_avg()}
    write_json(args.out / "knn_one.json", res)
    print(f"knn-one: {len(X)} vectors, k {args.k}, threshold {args.threshold}: projection {res['project_s']} s, "
          f"k-NN {res['knn_s']} s, groups {res['group_s']} s, total {res['total_s']} s ({res['cpu_s']} CPU s); "
          f"peak memory {res['peak_gb']:.2f} GB; {res['groups']} groups ({before} before, {load_avg()} after)")


def stage_knn_ray(args: argparse.Namespace) -> None:
    import ray

    from neardup.dedup.find import group_graph
    from neardup.scaleout.engine import RayConfig, ray_session
    from neardup.scaleout.knn import dedup_graph, grouping_bytes

    X = open_rows(args)
    shutil.rmtree(args.out / "graph_ray", ignore_errors=True)  # a fresh search, not one resumed from edge shards
    before = load_avg()
    t0 = time.perf_counter()
    with ray_session(RayConfig(actors=args.shards)) as cluster:
        t1 = time.perf_counter()
        with dedup_graph(X, args.k, args.exact_limit, cluster, cluster.shards(args.shards), args.out / "graph_ray",
                         {"bench": "ray_scale"}) as graph:
            t2 = time.perf_counter()
            graph.edges(args.threshold)  # the search, at the floor the grouping needs
            t3 = time.perf_counter()
            rss_before_group = peak_gb()
            labels = group_graph(X, graph, args.threshold, args.centre_margin)
            t4 = time.perf_counter()
            shard_peaks = ray.get([s.peak_rss.remote() for s in graph.index.shards])
    one_path = args.out / "labels_one.npy"
    same = None
    if one_path.is_file():
        one = np.load(one_path)
        same = bool(np.array_equal(one, labels))
        from sklearn.metrics import adjusted_rand_score

        ari = float(adjusted_rand_score(one, labels))
    res = {"n": len(X), "shards": len(shard_peaks), "ray_init_s": round(t1 - t0, 2),
           "build_s": round(t2 - t1, 2), "search_s": round(t3 - t2, 2), "group_s": round(t4 - t3, 2),
           "total_s": round(t4 - t0, 2), "total_without_init_s": round(t4 - t1, 2),
           "driver_peak_gb": round(peak_gb(), 3), "driver_peak_before_group_gb": round(rss_before_group, 3),
           "shard_peak_gb": [round(p / 1e9, 3) for p in shard_peaks], **graph.stats,
           "grouping_estimate_gb": round(grouping_bytes(len(X), graph.stats["edges"]) / 1e9, 4),
           "groups": int((np.bincount(labels) > 1).sum()), "same_labels_as_one_process": same,
           "ari_vs_one_process": round(ari, 6) if same is not None else None,
           "load_before": before, "load_after": load_avg()}
    write_json(args.out / "knn_ray.json", res)
    print(f"knn-ray: {len(X)} vectors, {res['shards']} shards: ray.init {res['ray_init_s']} s, build (train, fill "
          f"shards) {res['build_s']} s, search {res['search_s']} s, groups {res['group_s']} s; total "
          f"{res['total_s']} s ({res['total_without_init_s']} s without ray.init); peak memory: driver "
          f"{res['driver_peak_gb']:.2f} GB, shards {', '.join(f'{p:.2f}' for p in res['shard_peak_gb'])} GB; "
          f"{res['edges']} edges (grouping estimate {res['grouping_estimate_gb']} GB); {res['groups']} groups, "
          f"same labels as one process: {same} (ARI {res['ari_vs_one_process']}) ({before} before, {load_avg()} after)")
    one_json = args.out / "knn_one.json"
    if one_json.is_file():
        one = json.loads(one_json.read_text())
        total_mem = res["driver_peak_gb"] + sum(res["shard_peak_gb"])
        largest = max(res["driver_peak_gb"], *res["shard_peak_gb"])
        print(f"  Ray / one process: time {res['total_s'] / one['total_s']:.2f} with ray.init, "
              f"{res['total_without_init_s'] / one['total_s']:.2f} without; memory (driver + shards) "
              f"{total_mem / one['peak_gb']:.2f}, largest process {largest / one['peak_gb']:.2f}")


# ---------------------------------------------------------------------------------------------------- grouping
def stage_group(args: argparse.Namespace) -> None:
    """Peak memory of the star-guarded grouping on edge lists of planted groups, against the estimate."""
    from neardup.dedup.large import guarded_by_component
    from neardup.scaleout.knn import grouping_bytes

    n, size = args.group_rows, args.group_size
    rng = np.random.default_rng(args.seed)
    V = rng.standard_normal((n, 8)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    base = peak_gb()
    t0 = time.perf_counter()
    groups = np.arange(0, n - n % size, size)
    a, b = np.triu_indices(size, 1)
    rows = (groups[:, None] + a).ravel().astype(np.int64)
    cols = (groups[:, None] + b).ravel().astype(np.int64)
    sims = rng.uniform(0.9, 1.0, len(rows)).astype(np.float32)
    labels = guarded_by_component(n, rows, cols, sims, 0.9, lambda idx: np.ones((len(idx), 8), np.float32) / 8 ** 0.5,
                                  0.7)
    used = (peak_gb() - base) * 1024 ** 3
    est = grouping_bytes(n, len(rows))
    res = {"rows": n, "group_size": size, "edges": len(rows), "seconds": round(time.perf_counter() - t0, 2),
           "measured_bytes": int(used), "estimate_bytes": est, "measured_over_estimate": round(used / est, 3),
           "groups": int((np.bincount(labels) > 1).sum())}
    write_json(args.out / f"group_{size}.json", res)
    print(f"group: {n} rows in groups of {size}: {len(rows)} edges, {res['seconds']} s; peak memory above the start "
          f"{used / 1e9:.2f} GB, estimate {est / 1e9:.2f} GB (measured / estimate {res['measured_over_estimate']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="*", default=[], help="folders of .jpg images [default: BSDS500 train + val]")
    ap.add_argument("--copies", type=int, default=2, help="list each image this many times (as its own file)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("out/bench_ray"))
    ap.add_argument("--stages", default="extract,make,knn-one,knn-ray,group")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--shard-size", type=int, default=10_000)
    ap.add_argument("--shards", type=int, default=None, help="index shards (Ray actors) [default: the plan's]")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--centre-margin", type=float, default=0.2)
    ap.add_argument("--exact-limit", type=int, default=100_000)
    ap.add_argument("--group-rows", type=int, default=200_000)
    ap.add_argument("--group-sizes", default="2,16")
    ap.add_argument("--group-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage:
        {"extract": stage_extract, "make": stage_make, "knn-one": stage_knn_one, "knn-ray": stage_knn_ray,
         "group": stage_group}[args.stage](args)
        return
    print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, {load_avg()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    for stage in [s for s in args.stages.split(",") if s]:
        sizes = args.group_sizes.split(",") if stage == "group" else [None]
        for size in sizes:
            print(f"== {stage}" + (f" (groups of {size})" if size else ""), flush=True)
            extra = ["--group-size", size] if size else []
            subprocess.run([sys.executable, __file__, *sys.argv[1:], *extra, "--stage", stage], check=True)


if __name__ == "__main__":
    main()
