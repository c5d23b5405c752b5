"""``neardup convert simclr|byol``: published checkpoints -> PyTorch files the model zoo loads."""

from __future__ import annotations

import click


@click.group()
def convert() -> None:
    """Convert published SimCLR (TensorFlow) and BYOL (JAX/Haiku) checkpoints to .pth files."""

@convert.command("simclr")
@click.argument("ckpt", type=click.Path(exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--layout", type=click.Choice(["auto", "v1", "v2"]), default="auto", show_default=True,
              help="v2: Separius {'resnet','head'} (simclr_v2_* models); v1: tonylins {'state_dict'} "
                   "(simclr_v1_* models); auto: v2 when the checkpoint has a v2 head, SK or is not R50 1x/2x/4x.")
@click.option("--ema", is_flag=True, help="Take the EMA copy (ema_model/base_model/*).")
def convert_simclr_cmd(ckpt: str, out: str, layout: str, ema: bool) -> None:
    """TF1 SimCLR checkpoint (folder or model.ckpt-N prefix) -> OUT.pth. Needs TensorFlow installed."""
    from neardup.extract.convert import convert_simclr

    desc = convert_simclr(ckpt, out, layout=layout, ema=ema)
    click.echo(f"wrote {out}: {desc}")

@convert.command("byol")
@click.argument("pkl", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def convert_byol_cmd(pkl: str, out: str) -> None:
    """Official BYOL Haiku pickle (pretrain_res50x1.pkl) -> torchvision-layout OUT.pth (online encoder)."""
    from neardup.extract.convert import convert_byol

    desc = convert_byol(pkl, out)
    click.echo(f"wrote {out}: {desc}")
