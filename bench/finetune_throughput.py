"""Training throughput of `neardup finetune` against a bare forward+backward of the same model and batch.

pipeline : images/s of the real loop (views made by DataLoader workers, NT-Xent, optimizer step, logging),
           measured over steps after the first (warm-up) one
bare     : images/s of forward + backward + optimizer step on a fixed pre-made batch, same model,
           same frozen stages, same channels_last, same batch size (2 views x batch)

Usage: python bench/finetune_throughput.py [--images DIR] [--batch-size 32] [--image-size 160] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

import neardup._compat  # noqa: F401
from neardup.simclr.loss import ContrastiveObjective
from neardup.simclr.model import SimCLRModel, freeze_batchnorm, freeze_stages, load_encoder
from neardup.simclr.optim import build_optimizer
from neardup.simclr.train import FinetuneConfig, finetune

BSDS_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=BSDS_TRAIN)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--freeze-stages", type=int, default=FinetuneConfig("", "").freeze_stages)
    args = ap.parse_args()
    if not args.images.is_dir():
        sys.exit(f"images not found: {args.images}")
    cfg0 = FinetuneConfig("", "")

    # bare forward + backward + step on one fixed batch
    encoder, mcfg = load_encoder(args.model, None)
    freeze_stages(encoder, args.freeze_stages)
    model = SimCLRModel(encoder, mcfg.num_features).to(memory_format=torch.channels_last)
    opt = build_optimizer(model.encoder, model.head, cfg0.optimizer, cfg0.lr, cfg0.head_lr, cfg0.weight_decay)
    obj = ContrastiveObjective(cfg0.temperature, gather_distributed=False)
    b = args.batch_size
    x = torch.randn(2 * b, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(args.steps + 1):
        t = time.perf_counter()
        model.train()
        freeze_batchnorm(model.encoder)
        h, z = model(x)
        loss, _ = obj(z[:b], z[b:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    bare = 2 * b / (sum(times) / len(times))

    # the real loop: one epoch limited to warm-up + measured steps
    out = Path(tempfile.mkdtemp(prefix="neardup_ft_bench_"))
    cfg = FinetuneConfig(images=str(args.images), out=str(out / "run"), model=args.model, batch_size=b,
                         image_size=args.image_size, epochs=1, max_steps=args.steps + 1,
                         freeze_stages=args.freeze_stages)
    finetune(cfg, show_progress=False)
    steps = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    measured = steps[1:]  # the first step includes DataLoader start-up
    pipe = sum(2 * b for _ in measured) / (measured[-1]["elapsed"] - steps[0]["elapsed"])
    shutil.rmtree(out, ignore_errors=True)
    print(f"model {args.model}, batch {b} x 2 views at {args.image_size} px, frozen stages {args.freeze_stages}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"bare forward+backward+step : {bare:7.1f} img/s")
    print(f"neardup finetune loop      : {pipe:7.1f} img/s (steps 2..{len(steps)}; step 1 is warm-up)")
    print(f"ratio loop / bare          : {pipe / bare:7.3f}")


if __name__ == "__main__":
    main()
