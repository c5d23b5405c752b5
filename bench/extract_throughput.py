"""Throughput of `neardup extract` against what the same cores allow.

Measured in one run, on the same images and batches:
  decode   : load_image + preprocessing alone, one process (s/img)
  forward  : the bare model forward on the preprocessed batches, same engine (s/img)
  pipeline : extract_features end to end (DataLoader workers, shards), model already loaded
  limit    : 1 / (decode + forward) per image: what these cores can do if nothing overlaps on a
             CPU where decoding and the forward share the cores; on a GPU the limit is the
             slower of the two, and that is printed too.

Usage: python bench/extract_throughput.py [--images DIR] [--n 200] [--megapixels 0|12] [--engine auto]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import neardup._compat  # noqa: F401
from neardup.data.images import list_images, load_image
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.registry import create_extractor

BSDS_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "val"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=BSDS_VAL)
    ap.add_argument("--n", type=int, default=200, help="images to process (the folder is cycled if smaller)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--engine", default="auto", choices=["auto", "torch", "onnx"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--megapixels", type=float, default=0, help="0 = the images as they are; 12 = 12-MP JPEGs")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    if not args.images.is_dir():
        sys.exit(f"images folder not found: {args.images} (pass --images DIR)")
    tmp = Path(tempfile.mkdtemp(prefix="neardup_bench_"))
    src = list_images(args.images)
    if args.megapixels:
        src = make_large(src[: min(len(src), 40)], tmp / "large", args.megapixels)
    paths = [src[i % len(src)] for i in range(args.n)]
    listing = tmp / "list.txt"
    # duplicates are allowed in a list file only once: cycle through copies named apart
    if len(set(paths)) < len(paths):
        link_dir = tmp / "cycled"
        link_dir.mkdir()
        uniq = []
        for i, p in enumerate(paths):
            q = link_dir / f"{i:06d}{p.suffix}"
            os.symlink(p.resolve(), q)
            uniq.append(q)
        paths = uniq
    listing.write_text("\n".join(str(p) for p in paths))

    ext = create_extractor(args.model, device=args.device, engine=args.engine)
    print(f"model {args.model}, engine {ext.engine}, device {ext.device}, torch threads {torch.get_num_threads()}, "
          f"{args.n} images from {args.images}{f' upscaled to {args.megapixels:g} MP' if args.megapixels else ''}, "
          f"batch {args.batch_size}")

    # 1. decode + preprocess alone (sorted order, as the pipeline reads them)
    ordered = sorted(str(p) for p in paths)
    t0 = time.perf_counter()
    tensors = [ext.transform(load_image(p, draft_size=ext.draft_size)) for p in ordered]
    t_decode = (time.perf_counter() - t0) / len(ordered)

    # 2. bare forward on the same batches (one warm-up batch first)
    batches = [torch.stack(tensors[i:i + args.batch_size]) for i in range(0, len(tensors), args.batch_size)]
    ext.encode(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        ext.encode(b)
    t_forward = (time.perf_counter() - t0) / len(ordered)
    del tensors, batches

    # 3. the pipeline, model already loaded
    rep = extract_features(listing, tmp / "out", ExtractConfig(args.model, batch_size=args.batch_size,
                           workers=args.workers), extractor=ext, show_progress=False)
    pipe = rep.count / rep.seconds

    limit_cpu = 1.0 / (t_decode + t_forward)
    limit_overlap = 1.0 / max(t_decode, t_forward)
    print(f"decode+preprocess alone : {1 / t_decode:8.1f} img/s  ({t_decode * 1e3:.1f} ms/img)")
    print(f"bare model forward      : {1 / t_forward:8.1f} img/s  ({t_forward * 1e3:.1f} ms/img)")
    print(f"neardup extract pipeline: {pipe:8.1f} img/s")
    print(f"pipeline / bare forward : {pipe * t_forward:8.3f}")
    print(f"limit 1/(decode+forward): {limit_cpu:8.1f} img/s -> pipeline reaches {pipe / limit_cpu:.1%} of it")
    print(f"limit 1/max(decode,fwd) : {limit_overlap:8.1f} img/s (the limit where decoding and the forward use "
          f"separate hardware, e.g. a GPU) -> {pipe / limit_overlap:.1%}")


if __name__ == "__main__":
    main()
