"""Forward throughput (features/s) of one representative per model-zoo family, random weights.

Times ``extractor.encode`` on a random (batch, 3, crop, crop) batch of already
preprocessed images, so it measures the network alone (decode/resize: see
bench/extract_throughput.py). Weights are random: speed does not depend on them.
One warm-up call, then ``--repeats`` timed calls; the best is reported.

Usage: python bench/model_zoo_throughput.py [--batch-size 32] [--threads N] [--models a,b] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import neardup._compat  # noqa: F401
from neardup.extract.base import TorchExtractor
from neardup.extract.registry import get_model_cfg
from neardup.extract.zoo_info import build_architecture, count_params
from neardup.fastsearch.timing import Timer

REPRESENTATIVES = ["simclr_v1_r50_1x", "simclr_v2_r50_1x_sk0", "simclr_v2_r50_1x_sk1", "byol_r50_1x", "resnet50",
                   "wide_resnet50_2", "inception_v3", "efficientnet_b0", "vit_b_16", "efficientnet_lite0"]


def measure(name: str, batch_size: int, repeats: int, device: str) -> dict:
    cfg = get_model_cfg(name)
    torch.manual_seed(0)
    net = build_architecture(name, device="cpu")
    if net is None:
        raise SystemExit(f"{name}: no architecture builder")
    ext = TorchExtractor(cfg, net, device=device)
    x = torch.rand(batch_size, 3, cfg.input_size, cfg.input_size)
    timer = Timer(warmup=1, repeats=repeats)
    feats = timer.run(lambda: ext.encode(x))
    assert feats.shape == (batch_size, cfg.num_features)
    return {"model": name, "family": cfg.family, "input": cfg.input_size, "dim": cfg.num_features,
            "params_m": round(count_params(net) / 1e6, 1), "batch": batch_size, "best_s": round(timer.best, 3),
            "features_per_s": round(batch_size / timer.best, 2), "device": str(ext.device), "amp": ext.amp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads [torch's default]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default=",".join(REPRESENTATIVES))
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
           "machine": platform.processor() or platform.machine(), "loadavg_start": os.getloadavg()[0]}
    print(f"# {env}")
    print(f"{'model':<24} {'family':<12} {'input':>5} {'dim':>5} {'params':>7} {'s/batch':>8} {'feat/s':>8}")
    rows = []
    for name in args.models.split(","):
        r = measure(name, args.batch_size, args.repeats, args.device)
        rows.append(r)
        print(f"{r['model']:<24} {r['family']:<12} {r['input']:>5} {r['dim']:>5} {r['params_m']:>6}M "
              f"{r['best_s']:>8.2f} {r['features_per_s']:>8.2f}", flush=True)
    env["loadavg_end"] = os.getloadavg()[0]
    print(f"# loadavg at end {env['loadavg_end']:.2f}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            json.dump({"env": env, "rows": rows, "created": created}, f, indent=2)


if __name__ == "__main__":
    main()
