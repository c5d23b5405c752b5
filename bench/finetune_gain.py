"""Does fine-tuning improve near-duplicate retrieval? Before/after on attacked BSDS500.

Fine-tunes the ImageNet-pretrained efficientnet_lite0 on the 200 BSDS500 training photos
(NT-Xent on attack views, the library's default recipe), then evaluates on the 58 attacks of
the 100 validation photos with the training photos as distractors (exact cosine search,
224-px features). Prints recall@1 and µAP before and after, overall and per attack family,
and checks the targets: overall R@1 >= 0.995, µAP >= 0.98, no family worse than before.

Usage: python bench/finetune_gain.py [--epochs 30] [--out out/bench_finetune] [any FinetuneConfig field as --key value]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
import typing
from pathlib import Path

import neardup._compat  # noqa: F401
from neardup.data.generate import generate_attacks, load_attack_config
from neardup.io_utils import atomic_write_json
from neardup.simclr.model import load_encoder
from neardup.simclr.train import FinetuneConfig, finetune
from neardup.simclr.validate import Validator

BSDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500"


def table(before: dict, after: dict) -> str:
    fams = sorted(before["per_family"])
    lines = [f"{'family':<18} {'R@1 before':>10} {'R@1 after':>10} {'µAP before':>10} {'µAP after':>10}"]
    for f in fams:
        b, a = before["per_family"][f], after["per_family"][f]
        flag = "  <- worse" if a["recall@1"] < b["recall@1"] - 1e-9 else ""
        lines.append(f"{f:<18} {b['recall@1']:>10.3f} {a['recall@1']:>10.3f} {b['muAP']:>10.3f} "
                     f"{a['muAP']:>10.3f}{flag}")
    lines.append(f"{'overall':<18} {before['recall@1']:>10.4f} {after['recall@1']:>10.4f} {before['muAP']:>10.4f} "
                 f"{after['muAP']:>10.4f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench_finetune"))
    ap.add_argument("--data", type=Path, default=BSDS)
    args, rest = ap.parse_known_args()
    overrides: dict = {}
    hints = typing.get_type_hints(FinetuneConfig)
    if len(rest) % 2:
        ap.error(f"every override needs a value: {rest}")
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        name = key.lstrip("-").replace("-", "_")
        if name not in hints:
            sys.exit(f"unknown option {key}")
        hint = hints[name]
        if hint is bool:
            overrides[name] = value.lower() in ("1", "true", "yes")
        else:
            base = next((t for t in (int, float, str) if hint is t or t in typing.get_args(hint)), str)
            overrides[name] = base(value)
    if not (args.data / "train").is_dir():
        sys.exit(f"BSDS500 not found at {args.data}: this benchmark needs the shared photos")
    t0 = time.perf_counter()
    queries = args.out / "queries"
    if not (queries / "manifest.csv").is_file():
        generate_attacks(args.data / "val", queries, load_attack_config("default"), seed=0, show_progress=False)
    validator = Validator(str(queries), str(args.data / "val"), [str(args.data / "train")])
    encoder, mcfg = load_encoder("efficientnet_lite0", None)
    t = time.perf_counter()
    cache = args.out / "before.json"  # the pretrained model's score does not change between runs
    before = json.loads(cache.read_text()) if cache.is_file() else validator.evaluate(encoder, mcfg).to_dict()
    atomic_write_json(cache, before)
    t_eval = time.perf_counter() - t
    print(f"before: R@1 {before['recall@1']:.4f}  µAP {before['muAP']:.4f}  ({before['n_queries']} queries, "
          f"evaluated in {t_eval:.0f} s)", flush=True)

    run = args.out / "run"
    shutil.rmtree(run, ignore_errors=True)
    cfg = FinetuneConfig(images=str(args.data / "train"), out=str(run), **overrides)
    t = time.perf_counter()
    rep = finetune(cfg, show_progress=False)
    t_train = time.perf_counter() - t
    from neardup.extract.registry import create_extractor

    tuned = create_extractor("finetuned", weights=str(run / "best.pt"), device="cpu")
    after = validator.evaluate(tuned.model, mcfg).to_dict()
    total = time.perf_counter() - t0
    print(table(before, after))
    worse = [f for f in before["per_family"]
             if after["per_family"][f]["recall@1"] < before["per_family"][f]["recall@1"] - 1e-9]
    ok = after["recall@1"] >= 0.995 and after["muAP"] >= 0.98 and not worse
    print(f"training: {rep.steps} steps, {rep.epochs_run} epochs in {t_train / 60:.1f} min; whole benchmark "
          f"{total / 60:.1f} min")
    print(f"targets (R@1 >= 0.995, µAP >= 0.98, no family worse): {'MET' if ok else 'NOT MET'}"
          + (f" (worse: {', '.join(worse)})" if worse else ""))
    atomic_write_json(args.out / "result.json", {"before": before, "after": after, "config": dataclasses.asdict(cfg),
                                                 "train_minutes": t_train / 60, "total_minutes": total / 60,
                                                 "targets_met": ok})


if __name__ == "__main__":
    main()
