"""Write a `neardup finetune` encoder as the bundled neardup_cd weights (float16) and their record (sha256, recipe).

Usage: python scripts/pack_model.py RUN/best.pt [--recipe YAML] [--holdout BENCH/result.json] [--images DIR]
`make model` runs it on the release run (BSDS500 train + val) with the holdout bench's result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import neardup._compat  # noqa: F401
from neardup.extract.models import neardup_cd
from neardup.io_utils import atomic_write_json, load_yaml


def summary(result: dict) -> dict:
    """The holdout table's overall figures (per set) for the record."""
    out = {}
    for model in ("efficientnet_lite0", "neardup_cd"):
        out[model] = {name: {k: round(s[k], 4) for k in ("recall@1", "recall@10", "muAP", "n_queries")}
                      for name, s in result[model].items()}
    out["targets"] = result.get("targets", {})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("encoder", type=Path)
    ap.add_argument("--recipe", type=Path, default=Path("neardup/configs/recipes/neardup_cd.yaml"))
    ap.add_argument("--holdout", type=Path, default=None, help="bench/finetune_gain.py's result.json")
    ap.add_argument("--images", default="BSDS500 train + val (300 photos)")
    args = ap.parse_args()
    recipe = args.recipe.read_text(encoding="utf-8")
    run = args.encoder.parent
    config = (run / "config.yaml").read_text(encoding="utf-8") if (run / "config.yaml").is_file() else ""
    fit = (load_yaml(args.recipe) or {}).get("fit")  # the recipe says how the shipped model sees images
    sha = neardup_cd.pack(args.encoder, neardup_cd.WEIGHTS, recipe=recipe, fit=fit)
    record = {"schema": "neardup.cd-record/1", "model": "neardup_cd", "format": neardup_cd.FORMAT,
              "sha256": sha, "bytes": neardup_cd.WEIGHTS.stat().st_size,
              "recipe_sha256": hashlib.sha256(recipe.encode()).hexdigest(),
              "trained_on": args.images, "base_model": "efficientnet_lite0",
              "run_config": config}
    if args.holdout:
        record["holdout"] = summary(json.loads(args.holdout.read_text(encoding="utf-8")))
    atomic_write_json(neardup_cd.RECORD, record)
    print(f"{neardup_cd.WEIGHTS} ({record['bytes'] / 1e6:.1f} MB, sha256 {sha})")


if __name__ == "__main__":
    main()
