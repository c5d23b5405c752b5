"""Throughput and retrieval quality of the extraction engines (torch, onnx fp32, onnx int8), from one run.

For each engine, on the same images and batches:
  forward  : the bare network forward on preprocessed batches (img/s; best of --rounds, the engines timed
             in turn within each round, so a load change on a shared machine hits them alike)
  pipeline : `neardup extract` end to end (DataLoader workers decoding, the forward, shards) on the
             5800 BSDS val attack queries, model already loaded (img/s)
  R@1, µAP : exact cosine search of those queries in the 100 val photos (`neardup search exact`)
and the int8 / fp32 ratios. `decode` is decoding + preprocessing alone, one process: the pipeline cannot
beat 1 / (decode + forward) per image on a CPU where both share the cores. Without the BSDS photos (or
with --no-quality) only the forward is measured, on --images.

Each model of --model (default: efficientnet_lite0 and the bundled neardup_cd) gets its own table.

Usage: python bench/extract_throughput.py [--data BSDS500_DIR] [--work out/bench_engines]
       [--model efficientnet_lite0,neardup_cd] [--engines torch,onnx,onnx-int8] [--megapixels 12] [--no-quality]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from bsds_attacks import default_data, scores, val_attacks

from neardup.data.images import list_images, load_image
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.registry import create_extractor


def make_large(paths: list[Path], out: Path, megapixels: float) -> list[Path]:
    """Upscale photos to ~``megapixels`` JPEGs (12 MP ~ 4240x2830), as a camera would write them."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    res = []
    for p in paths:
        img = load_image(p)
        s = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
        big = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BICUBIC)
        dst = out / f"{p.stem}.jpg"
        big.save(dst, quality=92)
        res.append(dst)
    return res


def forward_rates(extractors: dict, batches: list[torch.Tensor], rounds: int) -> dict[str, float]:
    """img/s of each extractor's ``encode`` over ``batches``: best of ``rounds``, engines interleaved."""
    n = sum(len(b) for b in batches)
    best = dict.fromkeys(extractors, 0.0)
    for ext in extractors.values():
        ext.encode(batches[0])  # warm-up
    for _ in range(rounds):
        for name, ext in extractors.items():
            t0 = time.perf_counter()
            for b in batches:
                ext.encode(b)
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=default_data(), help="BSDS500 folder (train/, val/)")
    ap.add_argument("--work", type=Path, default=Path("out/bench_engines"), help="the attack queries, reused")
    ap.add_argument("--images", type=Path, default=None, help="images for the forward timing [default: BSDS val]")
    ap.add_argument("--n", type=int, default=128, help="images for the forward and decode timings")
    ap.add_argument("--model", default="efficientnet_lite0,neardup_cd", help="one or more models, comma-separated")
    ap.add_argument("--engines", default="torch,onnx,onnx-int8")
    ap.add_argument("--calibration", default=None, help="images calibrating onnx-int8 [default: bundled photos]")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--megapixels", type=float, default=0, help="0 = the images as they are; 12 = 12-MP JPEGs")
    ap.add_argument("--no-quality", action="store_true", help="skip the pipeline runs and R@1/µAP")
    args = ap.parse_args()

    engines = args.engines.split(",")
    images = args.images or args.data / "val"
    if not images.is_dir():
        sys.exit(f"images folder not found: {images} (pass --images DIR or --data BSDS500_DIR)")
    quality = not args.no_quality and (args.data / "val").is_dir()
    tmp = Path(tempfile.mkdtemp(prefix="neardup_bench_"))
    try:
        for model in args.model.split(","):
            run(argparse.Namespace(**{**vars(args), "model": model}), engines, images, quality, tmp / model)
            print()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, engines: list[str], images: Path, quality: bool, tmp: Path) -> None:
    load0 = os.getloadavg()[0]
    exts = {e: create_extractor(args.model, device="cpu", engine=e,
                                calibration=args.calibration if e == "onnx-int8" else None) for e in engines}
    src = list_images(images)
    if args.megapixels:
        src = make_large(src[: min(len(src), 40)], tmp / "large", args.megapixels)
    paths = sorted(str(src[i % len(src)]) for i in range(args.n))
    first = next(iter(exts.values()))
    t0 = time.perf_counter()
    tensors = [first.transform(load_image(p, draft_size=first.draft_size)) for p in paths]
    t_decode = (time.perf_counter() - t0) / len(paths)
    batches = [torch.stack(tensors[i:i + args.batch_size]) for i in range(0, len(tensors), args.batch_size)]
    forward = forward_rates(exts, batches, args.rounds)
    del tensors, batches
    print(f"model {args.model}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, forward on "
          f"{args.n} images from {images}{f' upscaled to {args.megapixels:g} MP' if args.megapixels else ''}; "
          f"decode+preprocess alone {1 / t_decode:.1f} img/s")
    print("bare forward (img/s): " + ", ".join(f"{e} {r:.1f}" for e, r in forward.items()), flush=True)

    pipeline, result = {}, {}
    if quality:
        queries = val_attacks(args.data, args.work, args.workers)
        for e, ext in exts.items():
            db, q = tmp / e / "db", tmp / e / "q"
            cfg = ExtractConfig(args.model, batch_size=args.batch_size, workers=args.workers)
            extract_features(args.data / "val", db, cfg, extractor=ext, show_progress=False)
            rep = extract_features(queries, q, cfg, extractor=ext, show_progress=False)
            pipeline[e] = rep.count / rep.seconds
            result[e] = scores(db, q).overall
            print(f"{e}: pipeline {pipeline[e]:.1f} img/s, R@1 {result[e].recall['1']:.4f}, µAP {result[e].muAP:.4f}",
                  flush=True)

    print(f"{'engine':<10} {'forward':>9} {'pipeline':>9} {'R@1':>7} {'µAP':>7}   (img/s)")
    for e in engines:
        pipe = f"{pipeline[e]:9.1f}" if e in pipeline else f"{'-':>9}"
        q = f"{result[e].recall['1']:7.4f} {result[e].muAP:7.4f}" if e in result else f"{'-':>7} {'-':>7}"
        print(f"{e:<10} {forward[e]:9.1f} {pipe} {q}")
    for a, b in (("onnx-int8", "onnx"), ("onnx-int8", "torch"), ("onnx", "torch")):
        if a in exts and b in exts:
            line = f"{a} / {b}: forward x{forward[a] / forward[b]:.2f}"
            if a in pipeline and b in pipeline:
                d_r1 = result[a].recall["1"] - result[b].recall["1"]
                line += (f", pipeline x{pipeline[a] / pipeline[b]:.2f}, R@1 {d_r1:+.4f}, "
                         f"µAP {result[a].muAP - result[b].muAP:+.4f}")
            print(line)
    if quality:
        n = next(iter(result.values())).n_queries
        print(f"({n} queries: BSDS val x 58 attacks, database the 100 val photos; load average "
              f"{load0:.1f} -> {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
