"""`neardup query` against `neardup extract` on the same N images: are queries extracted as fast as a database?

Both build their extractor through ``create_extractor`` with the same engine (``auto``: ONNX Runtime on
CPU), so the query should run within 1.2x of the extraction. Measured in one run, each end to end as
its command runs it (model load, decoding workers, the forward; the index search is a few ms):
  extract : extract_features(IMAGES) into a fresh folder
  query   : query_index(INDEX, the same IMAGES, k=10) on an index of those features
  query (engine=torch): the extraction a query ran before issue 11 (eager PyTorch), for reference
The ONNX graph is exported once before timing, so neither side pays the export.

Usage: python bench/query_throughput.py [--images DIR] [--n 64] [--model efficientnet_lite0] [--out q.json]
Without the shared BSDS500 photos (or with --synthetic), N generated images are used.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import neardup._compat  # noqa: F401
from neardup.data.images import list_images
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.registry import create_extractor
from neardup.fastsearch.persist import IndexDir, build_index_dir, extract_like_index, query_index

BSDS_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "val"


def synthetic(out: Path, n: int, size: tuple[int, int] = (481, 321)) -> list[Path]:
    """``n`` photo-sized smooth random JPEGs (BSDS500's 481x321), written under ``out``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:size[1], 0:size[0]] / max(size)
        img = np.stack([np.sin(xx * rng.uniform(2, 9) + rng.uniform(0, 6)), np.cos(yy * rng.uniform(2, 9)),
                        np.sin((xx + yy) * rng.uniform(1, 5))], axis=-1) * 0.5 + 0.5
        img += rng.normal(0, 0.05, img.shape)
        p = out / f"s{i:04d}.jpg"
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=BSDS_VAL)
    ap.add_argument("--synthetic", action="store_true", help="generated images even when --images exists")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-torch-reference", action="store_true", help="skip the eager-PyTorch query timing")
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="neardup_query_bench_"))
    if args.images.is_dir() and not args.synthetic:
        paths, source = list_images(args.images)[: args.n], str(args.images)
    else:
        paths, source = synthetic(tmp / "images", args.n), "synthetic"
    listing = tmp / "list.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    queries = [str(p) for p in paths]
    warm = create_extractor(args.model, device=args.device, engine="auto")  # exports the ONNX graph once
    print(f"model {args.model}, engine {warm.engine}, device {warm.device}, {len(paths)} images from {source}")
    del warm

    t0 = time.perf_counter()
    rep = extract_features(listing, tmp / "features", ExtractConfig(args.model, device=args.device,
                                                                    workers=args.workers), show_progress=False)
    t_extract = time.perf_counter() - t0
    build_index_dir(tmp / "features", "Flat", tmp / "index")

    t0 = time.perf_counter()
    res = query_index(tmp / "index", queries, k=10, device=args.device, workers=args.workers)
    t_query = time.perf_counter() - t0
    assert len(res.results) == rep.count

    numbers = {"model": args.model, "n": len(paths), "source": source, "extract_s": round(t_extract, 2),
               "query_s": round(t_query, 2), "extract_img_s": round(len(paths) / t_extract, 1),
               "query_img_s": round(len(paths) / t_query, 1), "query_over_extract": round(t_query / t_extract, 3)}
    if not args.no_torch_reference:
        meta = IndexDir.open(tmp / "index").meta
        t0 = time.perf_counter()
        extract_like_index(meta, queries, args.device, None, args.workers, engine="torch")
        numbers["query_torch_s"] = round(time.perf_counter() - t0, 2)

    print(f"extract : {numbers['extract_img_s']:8.1f} img/s  ({t_extract:.1f} s)")
    print(f"query   : {numbers['query_img_s']:8.1f} img/s  ({t_query:.1f} s)")
    print(f"query / extract time: {numbers['query_over_extract']:.2f}x (target <= 1.2x)")
    if "query_torch_s" in numbers:
        print(f"query extraction with engine=torch (before issue 11): {numbers['query_torch_s']:.1f} s "
              f"({numbers['query_torch_s'] / t_extract:.2f}x extract)")
    if args.out:
        args.out.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
