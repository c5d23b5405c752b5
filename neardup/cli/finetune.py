"""``neardup finetune`` and ``neardup evaluate-finetuning``.

The finetune options are generated from :class:`FinetuneConfig`'s fields, so the
flags, the YAML keys (``--config run.yaml``) and the library stay one list
(:func:`config_options`; ``neardup train`` makes its options the same way).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from neardup.cli._common import FloatIn, config_option
from neardup.simclr.config import FinetuneConfig, field_types

HELP = {
    "model": "Encoder from `neardup models`.",
    "weights": "Checkpoint for the encoder (default: the model's bundled/pretrained weights).",
    "epochs": "Training epochs.", "batch_size": "Images per process and step (2 views each).",
    "image_size": "Training view size (evaluation uses the model's own size).",
    "optimizer": "adamw (default, small-batch CPU recipe), lars (large-batch GPU runs) or adam.",
    "lr": "Encoder learning rate (before --lr-scaling).", "head_lr": "Projection-head learning rate.",
    "lr_scaling": "none, linear (x batch/256, SimCLR's LARS rule) or sqrt (x sqrt(batch)).",
    "warmup_epochs": "Linear warm-up length, then cosine decay (stepped per iteration).",
    "temperature": "NT-Xent temperature.", "koleo": "Weight of the SSCD KoLeo entropy regulariser (0 = off).",
    "head_layers": "2 (SimCLR v1 head) or 3 (v2).", "proj_dim": "Projection output dimension.",
    "freeze_bn": "Keep BatchNorm statistics fixed.", "freeze_stages": "Freeze the stem and this many stages.",
    "sync_bn": "SyncBatchNorm across processes (DDP).",
    "attacks": "Attack set for the views: default, biomedical or a YAML file.",
    "attack_prob": "Probability that a view gets a random attack before the SimCLR augmentations.",
    "jitter": "Colour-jitter strength of the SimCLR augmentations.", "min_scale": "Smallest random-crop area.",
    "fit": "How the exported encoder (and validation) sees a whole image: crop (the base model's resize + "
           "centre crop) or squash (resized whole to a square: nothing cut, so caption bars, pads and overlays "
           "keep the photo in view). Training views do not change.",
    "seed": "Seed of views, order and initialisation.", "workers": "View-making processes [default: cores - 1].",
    "device": "auto, cpu or cuda.", "amp": "auto (bf16 on GPU), off, bf16 or fp16.",
    "channels_last": "channels_last memory format (faster on CPU and GPU).",
    "accumulate": "Gradient-accumulation steps.",
    "val_queries": "Attacked validation folder (with manifest.csv) for per-epoch recall@1/µAP.",
    "val_database": "The originals of the validation queries.", "val_distractors": "Distractor folders (repeatable).",
    "val_every": "Validate every N epochs.", "val_max_queries": "Validate on a fixed random subset (0 = all).",
    "keep_encoders": "Export the encoder at each validated epoch (for evaluate-finetuning).",
    "resume": "Continue the run in --out from its last checkpoint, with the run's options: those not given are "
              "taken from the checkpoint, and those that would change the training must equal it (all but {safe}, "
              "which may differ).",
    "overwrite": "Replace the run in --out (only the files a run writes are removed), or write beside the files "
                 "of a non-empty folder that holds no run.",
    "max_steps": "Stop after this many optimizer steps (0 = no limit); for smoke tests.",
}


def _type(f: dataclasses.Field, base: type) -> Any:
    """The click type of a config field, from its metadata (the ranges live only there)."""
    meta = f.metadata
    if "choices" in meta:
        return click.Choice([str(c) for c in meta["choices"]])
    r = meta.get("range")
    if base is int:
        if r is None:
            return int
        return click.IntRange(None if r.lo is None else int(r.lo), None if r.hi is None else int(r.hi),
                              min_open=r.lo_open, max_open=r.hi_open)
    if base is float:
        return FloatIn() if r is None else FloatIn(r.lo, r.hi, r.lo_open, r.hi_open)
    return str


def _help(f: dataclasses.Field, cls: type, helps: dict[str, str]) -> str:
    text = helps.get(f.name, "")
    if f.name == "resume":
        safe = [g.name for g in dataclasses.fields(cls)
                if g.metadata.get("resume_safe") and g.name not in ("resume", "overwrite")]
        text = text.format(safe=", ".join("--" + n.replace("_", "-") for n in safe))
    if f.metadata.get("resume_safe") and f.name not in ("resume", "overwrite"):
        text += " May differ on --resume."
    return text


def config_options(cls: type, helps: dict[str, str], skip: tuple[str, ...] = ("images", "out"),
                   custom: dict[str, Any] | None = None) -> Any:
    """Decorator: one click option per field of the run config ``cls`` (but ``skip``), typed from the field's
    metadata; ``custom`` maps a field to its own click option (e.g. one with an optional value)."""
    types = field_types(cls)

    def deco(fn: Any) -> Any:
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip:
                continue
            name = "--" + f.name.replace("_", "-")
            base = types[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            if custom and f.name in custom:
                opt = custom[f.name]
            elif base is bool:
                opt = click.option(f"{name}/--no-{f.name.replace('_', '-')}", default=default, show_default=True,
                                   help=_help(f, cls, helps))
            elif base is list:
                opt = click.option(name, multiple=True, help=_help(f, cls, helps))
            else:
                opt = click.option(name, type=_type(f, base), default=default, show_default=default is not None,
                                   help=_help(f, cls, helps))
            fn = opt(fn)
        return fn

    return deco


_options = config_options(FinetuneConfig, HELP)


def given_options(ctx: click.Context, names: Any) -> set[str]:
    """The options set on the command line, in the environment or in --config (not click defaults)."""
    from click.core import ParameterSource

    return {n for n in names if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)}


@click.command("finetune")
@click.argument("images", type=click.Path())
@config_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@_options
@click.pass_context
def finetune_cmd(ctx: click.Context, images: str, out: str, **kw: Any) -> None:
    """SimCLR-style NT-Xent fine-tuning of an encoder on attack views of IMAGES.

    One process: `neardup finetune ...`; several: `torchrun --nproc-per-node N -m neardup finetune ...`.
    Each epoch writes RUN_DIR/checkpoint.pt atomically; --resume continues exactly.
    """
    from neardup.simclr.train import finetune

    kw["val_distractors"] = list(kw.get("val_distractors") or [])
    cfg = FinetuneConfig(images=images, out=out, **kw)
    report = finetune(cfg, given=given_options(ctx, ["images", *kw]))
    click.echo(f"{report.steps} steps in {report.seconds / 60:.1f} min -> {out}/best.pt")
    before = next((h for h in report.history if h["epoch"] == -1), None)
    if before and report.best:
        click.echo(f"validation ({before['n_queries']} queries): recall@1 {before['recall@1']:.4f} -> "
                   f"{report.best['recall@1']:.4f}, µAP {before['muAP']:.4f} -> {report.best['muAP']:.4f} "
                   f"(before -> best epoch {report.best_epoch})")


@click.command("evaluate-finetuning")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--checkpoint", "checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="Encoder files to evaluate [default: the base model and every RUN_DIR/encoders/epoch_*.pt].")
@click.option("--val-queries", default=None, help="[default: the run's own]")
@click.option("--val-database", default=None, help="[default: the run's own]")
@click.option("--val-distractors", multiple=True, help="[default: the run's own]")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="[default: RUN_DIR/evaluation]")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty --out that holds no evaluation (beside its files, none removed).")
def evaluate_cmd(run_dir: str, checkpoints: tuple[str, ...], val_queries: str | None, val_database: str | None,
                 val_distractors: tuple[str, ...], out: str | None, overwrite: bool) -> None:
    """Recall@1/µAP and the cluster-geometry diagnostics (diameter, separation, dispersion,
    centroid distance, SN1, SN2) of chosen checkpoints; JSON + evolution plot."""
    from neardup.simclr.diagnostics import evaluate_run, evaluation_dir, format_evaluation

    res = evaluate_run(run_dir, list(checkpoints), val_queries, val_database, list(val_distractors), out, overwrite)
    click.echo(format_evaluation(res))
    out_dir = evaluation_dir(run_dir, out)
    click.echo(f"wrote {out_dir / 'evaluation.json'} and {out_dir / 'evolution.png'}")
