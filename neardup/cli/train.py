"""``neardup train``: supervised deep metric learning with class labels.

The options are generated from :class:`~neardup.metric.config.TrainConfig`'s fields (as finetune's are), so the
flags, the YAML keys (``--config run.yaml``) and the library stay one list.
"""

from __future__ import annotations

from typing import Any

import click

from neardup.cli._common import RegistryHelpOption, config_option
from neardup.cli.finetune import HELP as FINETUNE_HELP
from neardup.cli.finetune import config_options, given_options
from neardup.metric.config import TrainConfig

HELP = {
    **FINETUNE_HELP,
    "labels": "CSV with a 'path' and a 'label' (or 'class') column; paths relative to the CSV's folder.",
    "class_folders": "Folder of class folders: ROOT/<class>/**/<image>.",
    "labels_from_manifest": "A `neardup attack` output folder: each source image and its attacked copies form a "
                            "class (IMAGES: the sources or the copies; the whole class is used).",
    "loss": "Metric-learning loss (pytorch-metric-learning).",
    "loss_options": "KEY=VALUE option of the loss (repeatable), e.g. margin=0.3.",
    "miner": "Which pairs or triplets of a batch the loss uses (none: all).",
    "miner_options": "KEY=VALUE option of the miner (repeatable).",
    "embed_dim": "Dimension of the L2-normalised embedding (the trained model's features).",
    "head_layers": "Embedding head: 1 linear layer, or 2 (linear, ReLU, linear).",
    "epochs": "Training epochs.", "batch_size": "Images per process and step.",
    "m_per_class": "Images of each class in a batch (MPerClassSampler; small classes are drawn with replacement).",
    "epoch_samples": "Images drawn per epoch (0 = as many as the training set holds).",
    "image_size": "Training view size.",
    "input_size": "Crop of validation and of the exported model [default: the model's own].",
    "head_lr": "Embedding-head learning rate.", "loss_lr": "Learning rate of the loss's own parameters (proxies).",
    "online_attacks": "Make each training image an attacked copy on the fly (BINDER's manipulator), from this "
                      "attack set (default, biomedical or a YAML file); alone, without labels, each image is its "
                      "own class.",
    "attack_prob": "Probability that an image gets a random attack (with --online-attacks).",
    "hflip_prob": "Probability of a horizontal flip.",
    "seed": "Seed of sampling, views and initialisation.", "workers": "View-making processes [default: cores - 1].",
    "val_labels": "Held-out labelled set (CSV, class folders or attack folder): per-epoch precision@1 and MAP@R of "
                  "leave-one-out class retrieval.",
    "keep_encoders": "Export the model at each validated epoch.",
}


class _ObjectiveOption(RegistryHelpOption):
    """--loss / --miner: the help lists each entry with its options and defaults, read from the registry."""

    def registry_help(self, text: str) -> str:
        from neardup.metric.objectives import LOSSES, MINERS

        table = LOSSES if self.name == "loss" else MINERS
        entries = []
        for spec in table.values():
            opts = ", ".join(f"{k}={p.default}" for k, p in spec.params.items())
            entries.append(f"{spec.name}" + (f" ({opts})" if opts else ""))
        return f"{text} Choices: {'; '.join(entries)}."


def _choice_option(name: str, default: str, choices: tuple[str, ...]) -> Any:
    return click.option(f"--{name}", cls=_ObjectiveOption, type=click.Choice(choices), default=default, metavar="NAME",
                        show_default=True, help=HELP[name])


def _custom() -> dict[str, Any]:
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    return {
        "online_attacks": click.option("--online-attacks", is_flag=False, flag_value="default", default=None,
                                       metavar="[SET]", help=HELP["online_attacks"]),
        **{name: _choice_option(name, str(fields[name].default), fields[name].metadata["choices"])
           for name in ("loss", "miner")},
    }


@click.command("train")
@click.argument("images", type=click.Path())
@config_option
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@config_options(TrainConfig, HELP, custom=_custom())
@click.pass_context
def train_cmd(ctx: click.Context, images: str, out: str, **kw: Any) -> None:
    """Supervised metric learning of an encoder on the labelled images of IMAGES.

    Labels: --labels CSV, --class-folders DIR or --labels-from-manifest DIR (or none with --online-attacks).
    RUN_DIR/best.pt is the encoder with its embedding head:
    `neardup extract --model trained --weights RUN_DIR/best.pt`. Several processes:
    `torchrun --nproc-per-node N -m neardup train ...`. Each epoch writes RUN_DIR/checkpoint.pt atomically;
    --resume continues exactly.
    """
    from neardup.metric.train import train

    for name in ("val_distractors", "loss_options", "miner_options"):
        kw[name] = list(kw.get(name) or [])
    cfg = TrainConfig(images=images, out=out, **kw)
    report = train(cfg, given=given_options(ctx, ["images", *kw]))
    click.echo(f"{report.steps} steps in {report.seconds / 60:.1f} min -> {out}/best.pt "
               f"(use: --model trained --weights {out}/best.pt)")
    before = next((h for h in report.history if h["epoch"] == -1), None)
    if before and report.best:
        keys = ("precision@1", "MAP@R") if "precision@1" in before else ("recall@1", "muAP")
        change = ", ".join(f"{k.replace('mu', 'µ')} {before[k]:.4f} -> {report.best[k]:.4f}" for k in keys)
        click.echo(f"validation ({before['n_queries']} queries): {change} (before -> best epoch {report.best_epoch})")
