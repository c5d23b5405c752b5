"""Does labelled metric learning (`neardup train`) improve retrieval? Before/after, at two levels.

digits (class level): sklearn's load_digits (1,797 8x8 images, 10 classes) saved as 64-px PNGs in class folders,
    split in half (stratified) into train/ and test/. efficientnet_lite0 pretrained against `neardup train` on
    train/ (triplet + batch-hard, and multi-similarity + its miner), scored on test/ by leave-one-out class
    retrieval: precision@1 (top-1 class accuracy) and MAP@R, pytorch-metric-learning's AccuracyCalculator
    (k = max_bin_count, each query excluded from its own database).
bsds (instance level): the 200 BSDS500 training photos and their 58 attacks (`neardup attack`) train
    NT-Xent `finetune` (no labels) and `train` (labels from the attack manifest: each photo and its copies form a
    class) with batch-hard triplet and with multi-similarity; all are evaluated like bench/finetune_gain.py: the
    58 attacks of the 100 validation photos against validation + training photos (`neardup search exact`),
    recall@1 and µAP overall and per attack family, against the pretrained model.

Every step is a neardup command, printed before it runs; a step whose output is complete is skipped, and an
interrupted training resumes (--resume), so re-running the script continues where it stopped (other settings
need another --out: finished steps are not redone). Figures and ratios printed at the end come from this run's
files; result.json holds them.

Usage: python bench/train_gain.py [--part digits|bsds|all] [--out out/bench_train] [--epochs 10]
       [--bsds-epochs 6] [--finetune-epochs 30] [--epoch-samples 1920] [--data BSDS500_DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import neardup._compat  # noqa: F401
from neardup.io_utils import atomic_write_json

try:  # the before/after per-family table of the finetune benchmark (run as a script: bench/ is on sys.path)
    from finetune_gain import find_bsds, table
except ImportError:  # pragma: no cover - imported as a module from elsewhere
    from bench.finetune_gain import find_bsds, table

#: (name, loss, miner) of the `train` runs compared
RECIPES = (("triplet", "triplet", "batch-hard"), ("ms", "multi-similarity", "multi-similarity"))


class Runner:
    """Prints each command as a user would type it, then runs it (unless its output is already complete)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.seconds: dict[str, float] = {}

    def run(self, name: str, args: list[Any], done: Path | None = None) -> None:
        shown = "neardup " + " ".join(shlex.quote(str(a)) for a in args)
        if done is not None and done.exists():
            print(f"[skip, done] {shown}", flush=True)
            return
        print(f"$ {shown}", flush=True)
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "neardup", *map(str, args)], check=False)
        self.seconds[name] = time.perf_counter() - t
        if res.returncode:
            sys.exit(f"step {name!r} failed (exit {res.returncode}); fix it and re-run this script to continue")

    def train(self, name: str, kind: str, images: Path, run: Path, args: list[Any]) -> None:
        """``neardup train|finetune``: skipped when finished, resumed when a checkpoint exists."""
        resume = ["--resume"] if (run / "checkpoint.pt").is_file() and not (run / "summary.json").is_file() else []
        self.run(name, [kind, images, "--out", run, *args, "--workers", self.workers, *resume], run / "summary.json")

    def extract(self, name: str, images: Path, out: Path, model: list[Any]) -> None:
        self.run(name, ["extract", images, "--out", out, *model, "--workers", self.workers], out / "meta.json")


# --------------------------------------------------------------------------- digits (class level)
def save_digits(root: Path) -> None:
    """load_digits as 64-px grey PNGs in class folders, half of each class in train/, half in test/."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if (root / "done").is_file():
        print(f"[skip, done] save sklearn load_digits as PNG class folders in {root}/{{train,test}}", flush=True)
        return
    print(f"# save sklearn load_digits as 64-px PNG class folders in {root}/{{train,test}} (stratified half split)",
          flush=True)
    digits = load_digits()
    idx = np.arange(len(digits.target))
    train, test = train_test_split(idx, test_size=0.5, stratify=digits.target, random_state=0)
    for split, rows in (("train", train), ("test", test)):
        for i in rows:
            d = root / split / str(digits.target[i])
            d.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels, "L").resize((64, 64), Image.Resampling.BILINEAR).save(d / f"{i:04d}.png")
    (root / "done").write_text("ok\n")


def digits_scores(features: Path, images: Path) -> dict[str, Any]:
    """precision@1 / MAP@R of a feature folder, classes from the image folders."""
    from neardup.data.labels import labels_from_folders
    from neardup.extract.store import FeatureStore
    from neardup.metric.validate import class_scores

    store = FeatureStore.open(features)
    labels = labels_from_folders(images)
    names = labels.for_paths(store.paths)
    codes = np.asarray([labels.names.index(n) for n in names])
    return class_scores(store.features(), codes).to_dict()


def digits(args: argparse.Namespace, r: Runner) -> dict[str, Any]:
    root = args.out / "digits"
    save_digits(root / "images")
    train_dir, test_dir = root / "images" / "train", root / "images" / "test"
    r.extract("digits extract pretrained", test_dir, root / "features" / "pretrained",
              ["--model", "efficientnet_lite0", "--input-size", 64])
    results = {"pretrained": digits_scores(root / "features" / "pretrained", test_dir)}
    for name, loss, miner in RECIPES:
        run = root / "runs" / name
        r.train(f"digits train {name}", "train", train_dir, run,
                ["--class-folders", train_dir, "--loss", loss, "--miner", miner, "--epochs", args.epochs,
                 "--batch-size", 64, "--m-per-class", 8, "--image-size", 64, "--input-size", 64, "--hflip-prob", 0,
                 "--jitter", 0, "--min-scale", 0.6])
        r.extract(f"digits extract {name}", test_dir, root / "features" / name,
                  ["--model", "trained", "--weights", run / "best.pt"])
        results[name] = digits_scores(root / "features" / name, test_dir)
    base = results["pretrained"]
    print(f"\ndigits, leave-one-out class retrieval on the {base['n_queries']} test images "
          f"({base['n_classes']} classes; trained on the other half, {args.epochs} epochs):")
    print(f"{'model':<47} {'precision@1':>11} {'MAP@R':>7} {'errors / pretrained':>20}")
    recipe = {n: f"train {lo} + {mi} miner" for n, lo, mi in RECIPES}
    for name, s in results.items():
        label = "efficientnet_lite0 pretrained" if name == "pretrained" else recipe[name]
        err = (1 - s["precision@1"]) / max(1 - base["precision@1"], 1e-12)
        print(f"{label:<47} {s['precision@1']:>11.4f} {s['MAP@R']:>7.4f} {err:>20.3f}")
    return results


# --------------------------------------------------------------------------- BSDS (instance level)
def search_scores(path: Path) -> dict[str, Any]:
    """A `search exact --out` result in the validator's layout (what finetune_gain's table prints)."""
    res = json.loads(path.read_text())
    o = res["overall"]
    return {"recall@1": o["recall"]["1"], "muAP": o["muAP"], "n_queries": o["n_queries"],
            "per_family": {f: {"recall@1": s["recall"]["1"], "muAP": s["muAP"]} for f, s in res["per_family"].items()}}


def bsds(args: argparse.Namespace, r: Runner) -> dict[str, Any]:
    data, root = args.data, args.out / "bsds"
    if not (data / "train").is_dir():
        sys.exit(f"BSDS500 not found at {data}: the bsds part needs the shared photos (--data)")
    attacked, queries = root / "attacked_train", root / "queries"
    r.run("attack train", ["attack", data / "train", attacked, "--workers", max(1, r.workers)],
          attacked / "manifest.csv")
    r.run("attack val", ["attack", data / "val", queries, "--workers", max(1, r.workers)], queries / "manifest.csv")
    models: dict[str, list[Any]] = {"pretrained": ["--model", "efficientnet_lite0"]}
    r.train("finetune", "finetune", data / "train", root / "runs" / "finetune", ["--epochs", args.finetune_epochs])
    models["finetune"] = ["--model", "finetuned", "--weights", root / "runs" / "finetune" / "best.pt"]
    for name, loss, miner in RECIPES:
        run = root / "runs" / name
        r.train(f"train {name}", "train", data / "train", run,
                ["--labels-from-manifest", attacked, "--loss", loss, "--miner", miner, "--epochs", args.bsds_epochs,
                 "--epoch-samples", args.epoch_samples])
        models[name] = ["--model", "trained", "--weights", run / "best.pt"]
    results = {}
    for name, model in models.items():
        feats = root / "features" / name
        for part, images in (("val", data / "val"), ("train", data / "train"), ("queries", queries)):
            r.extract(f"extract {name} {part}", images, feats / part, model)
        out = root / "results" / f"{name}.json"
        r.run(f"search {name}", ["search", "exact", "--database", feats / "val", "--queries", feats / "queries",
                                 "--distractors", feats / "train", "--out", out, "--quiet"], out)
        results[name] = search_scores(out)
    base = results["pretrained"]
    for name in models:
        if name != "pretrained":
            print(f"\nBSDS500 {base['n_queries']} attacked val queries, val + train database: pretrained -> {name}")
            print(table(base, results[name]))
    print(f"\n{'model':<12} {'R@1':>7} {'µAP':>7} {'R@1 errors / pretrained':>24}")
    for name, s in results.items():
        err = (1 - s["recall@1"]) / max(1 - base["recall@1"], 1e-12)
        print(f"{name:<12} {s['recall@1']:>7.4f} {s['muAP']:>7.4f} {err:>24.3f}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("digits", "bsds", "all"), default="all")
    ap.add_argument("--out", type=Path, default=Path("out/bench_train"))
    ap.add_argument("--data", type=Path, default=find_bsds())
    ap.add_argument("--epochs", type=int, default=10, help="digits training epochs")
    ap.add_argument("--bsds-epochs", type=int, default=6, help="BSDS `train` epochs")
    ap.add_argument("--finetune-epochs", type=int, default=30, help="BSDS `finetune` epochs")
    ap.add_argument("--epoch-samples", type=int, default=1920, help="BSDS `train` images drawn per epoch")
    ap.add_argument("--workers", type=int, default=1, help="decoding processes of each step")
    args = ap.parse_args()
    t0 = time.perf_counter()
    r = Runner(args.workers)
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.part in ("digits", "all"):
        result["digits"] = digits(args, r)
    if args.part in ("bsds", "all"):
        result["bsds"] = bsds(args, r)
    result["step_seconds"] = r.seconds
    print(f"\nsteps run this time: {len(r.seconds)} in {(time.perf_counter() - t0) / 60:.1f} min "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in r.seconds.items()) or 'all done before'})")
    atomic_write_json(args.out / "result.json", result)


if __name__ == "__main__":
    main()
