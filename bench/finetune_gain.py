"""Does neardup's own copy-detection model beat the pretrained one? efficientnet_lite0 against neardup_cd, per family.

Trains the neardup_cd recipe (``neardup/configs/recipes/neardup_cd.yaml``, `neardup finetune` from the
ImageNet-pretrained efficientnet_lite0) on the 200 BSDS500 *training* photos only, so that the 100 validation
photos are never trained on for this table; `make model` packs exactly this run as the shipped weights. Then scores
both models on two query sets made from the validation photos: the study's 58 attacks (``default``, 5,800
queries) and the ``extended`` set (40 attacks: overlays, pads, memes, stripes, blends, pixelisation, heavy blur and
noise, strong perspective, chains; 4,000 queries), against the validation + training photos (exact cosine search,
224-px features). Prints R@1, R@10 and µAP per family and overall for both sets, and checks the targets:
no family worse, seed-set R@1 >= 0.995 and µAP >= 0.985, extended-set R@1 >= 0.97.

A finished training is reused (delete --out/run to retrain; an interrupted one resumes); the pretrained model's
scores are cached in --out. ``--candidate FILE`` scores an existing encoder instead of training (a RUN/best.pt of
`neardup finetune` or a neardup.cd/1 file).

Usage: python bench/finetune_gain.py [--out out/bench_finetune] [--recipe YAML] [--candidate FILE]
       [any FinetuneConfig field as --key value, overriding the recipe]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path
from typing import Any

import neardup._compat  # noqa: F401
from neardup.data.generate import generate_attacks, load_attack_config
from neardup.io_utils import atomic_write_json, load_yaml
from neardup.simclr.model import load_encoder
from neardup.simclr.train import FinetuneConfig, finetune
from neardup.simclr.validate import Validator

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "neardup" / "configs" / "recipes" / "neardup_cd.yaml"
SETS = ("default", "extended")
TARGETS = {"default": {"recall@1": 0.995, "muAP": 0.985}, "extended": {"recall@1": 0.97}}


def find_bsds() -> Path:
    """The shared BSDS500 photos: the first ``shared/data/bsds500`` above this script (worktrees sit deeper)."""
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "data" / "bsds500"
        if (cand / "train").is_dir():
            return cand
    return Path("/work/shared/data/bsds500")


def table(before: dict, after: dict) -> str:
    """Before/after recall@1 and µAP per family and overall (bench/train_gain.py prints it too)."""
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


def worse_families(before: dict, after: dict) -> list[str]:
    """Families whose recall@1 dropped, or whose µAP dropped at equal recall@1."""
    out = []
    for f, b in before["per_family"].items():
        a = after["per_family"][f]
        if a["recall@1"] < b["recall@1"] - 1e-9 or (abs(a["recall@1"] - b["recall@1"]) < 1e-9
                                                     and a["muAP"] < b["muAP"] - 1e-9):
            out.append(f)
    return out


def model_table(base: dict, cand: dict, names: tuple[str, str]) -> str:
    """R@1, R@10 and µAP per family for two models, the weaker one flagged."""
    head = f"{'family':<24}" + "".join(f" {m + ' ' + n:>14}" for m in ("R@1", "R@10", "µAP") for n in ("lite0", "cd"))
    lines = [f"{'':<24} lite0 = {names[0]}, cd = {names[1]}", head]
    worse = set(worse_families(base, cand))
    for f in sorted(base["per_family"]):
        b, c = base["per_family"][f], cand["per_family"][f]
        cells = "".join(f" {x[k]:>14.3f}" for k in ("recall@1", "recall@10", "muAP") for x in (b, c))
        lines.append(f"{f:<24}{cells}" + ("  <- worse" if f in worse else ""))
    cells = "".join(f" {x[k]:>14.4f}" for k in ("recall@1", "recall@10", "muAP") for x in (base, cand))
    lines.append(f"{'overall (' + str(base['n_queries']) + ' queries)':<24}{cells}")
    return "\n".join(lines)


def overrides_from(rest: list[str]) -> dict[str, Any]:
    """``--key value`` pairs as FinetuneConfig fields of the right type."""
    hints = typing.get_type_hints(FinetuneConfig)
    if len(rest) % 2:
        sys.exit(f"every override needs a value: {rest}")
    out: dict[str, Any] = {}
    for key, value in zip(rest[::2], rest[1::2], strict=True):
        name = key.lstrip("-").replace("-", "_")
        if name not in hints:
            sys.exit(f"unknown option {key}")
        hint = hints[name]
        if hint is bool:
            out[name] = value.lower() in ("1", "true", "yes")
        else:
            base = next((t for t in (int, float, str) if hint is t or t in typing.get_args(hint)), str)
            out[name] = base(value)
    return out


def candidate_encoder(args: argparse.Namespace, rest: list[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(encoder, its model config, what was trained) for the candidate: --candidate, or the recipe on train."""
    from neardup.extract.registry import create_extractor

    if args.candidate:
        from neardup.extract.weights import read_checkpoint

        fmt = read_checkpoint(args.candidate).get("format")
        model = "neardup_cd" if fmt == "neardup.cd/1" else "finetuned"
        ext = create_extractor(model, weights=str(args.candidate), device="cpu")
        return ext.model, ext.cfg, {"candidate": str(args.candidate)}
    recipe = dict(load_yaml(args.recipe, "recipe"))
    run = args.out / "run"
    cfg = FinetuneConfig(images=str(args.data / "train"), out=str(run), **{**recipe, **overrides_from(rest)})
    if not (run / "summary.json").is_file():  # written when a run finishes; an interrupted one resumes
        cfg.resume = (run / "checkpoint.pt").is_file()
        finetune(cfg, show_progress=True)
    done = json.loads((run / "summary.json").read_text())
    print(f"training: {done['steps']} steps, {done['epochs_run']} epochs in {done['seconds'] / 60:.1f} min "
          f"({args.data / 'train'}, recipe {args.recipe})", flush=True)
    ext = create_extractor("finetuned", weights=str(run / "best.pt"), device="cpu")
    return ext.model, ext.cfg, {"config": dataclasses.asdict(cfg), "training": done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench_finetune"))
    ap.add_argument("--data", type=Path, default=find_bsds())
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--candidate", type=Path, default=None)
    args, rest = ap.parse_known_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"BSDS500 not found at {args.data}: this benchmark needs the shared photos")
    t0 = time.perf_counter()
    validators = {}
    for name in SETS:
        queries = args.out / f"queries_{name}"
        if not (queries / "manifest.csv").is_file():
            generate_attacks(args.data / "val", queries, load_attack_config(name), seed=0, show_progress=False)
        validators[name] = Validator(str(queries), str(args.data / "val"), [str(args.data / "train")])
    base_enc, base_cfg = load_encoder("efficientnet_lite0", None)
    base: dict[str, dict] = {}
    for name, v in validators.items():  # the pretrained model's scores do not change between runs
        cache = args.out / f"lite0_{name}.json"
        base[name] = json.loads(cache.read_text()) if cache.is_file() else v.evaluate(base_enc, base_cfg).to_dict()
        atomic_write_json(cache, base[name])
    enc, cfg, trained = candidate_encoder(args, rest)
    cand = {name: v.evaluate(enc, cfg).to_dict() for name, v in validators.items()}
    label = str(args.candidate) if args.candidate else "neardup_cd recipe, trained on BSDS train"
    checks = []
    for name in SETS:
        print(f"\n{name} attacks on BSDS500 val ({base[name]['n_queries']} queries; database val + train)")
        print(model_table(base[name], cand[name], ("efficientnet_lite0", label)))
        worse = worse_families(base[name], cand[name])
        checks.append((f"{name}: no family worse", not worse, ", ".join(worse) or "none worse"))
        for key, target in TARGETS[name].items():
            checks.append((f"{name}: {key} >= {target}", cand[name][key] >= target, f"{cand[name][key]:.4f}"))
    print()
    for what, ok, value in checks:
        print(f"target {what:<32} {'MET' if ok else 'NOT MET'} ({value})")
    total = time.perf_counter() - t0
    print(f"whole benchmark {total / 60:.1f} min")
    atomic_write_json(args.out / "result.json", {"efficientnet_lite0": base, "neardup_cd": cand, **trained,
                                                 "targets": {w: ok for w, ok, _ in checks},
                                                 "total_minutes": total / 60})


if __name__ == "__main__":
    main()
