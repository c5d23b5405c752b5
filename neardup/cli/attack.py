"""``neardup attack``: manipulated copies of images with a ground-truth manifest."""

from __future__ import annotations

import json

import click

from neardup.cli._common import config_option, save_config
from neardup.errors import UsageError


@click.command()
@click.argument("src", type=click.Path(), required=False)
@click.argument("dst", type=click.Path(), required=False)
@config_option
@click.option("--attacks", "attack_configs", multiple=True, metavar="NAME|FILE",
              help="Attack set: built-in 'default' (the study's 58), 'biomedical', or a YAML file. Repeatable.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images.")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png", "webp"]), default="jpg", show_default=True,
              help="File format of the generated queries.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="Encoding quality for jpg/webp output (jpeg attacks apply their own quality first).")
@click.option("--workers", type=click.IntRange(1), default=None, help="Processes [default: all cores].")
@click.option("--list", "list_only", is_flag=True, help="List the attacks of the selected sets and exit.")
def attack(src: str | None, dst: str | None, attack_configs: tuple[str, ...], seed: int, fmt: str, quality: int,
           workers: int | None, list_only: bool) -> None:
    """Generate manipulated copies of every image in SRC into DST, with DST/manifest.csv as ground truth."""
    from neardup.data.attacks import ATTACKS
    from neardup.data.generate import generate_attacks, load_attack_config

    specs = [s for c in (attack_configs or ("default",)) for s in load_attack_config(c)]
    if list_only:
        for s in specs:
            click.echo(f"{s.name:<28} {s.family:<18} {json.dumps(s.params):<28} {ATTACKS[s.attack].doc}")
        click.echo(f"{len(specs)} attacks")
        return
    if not src or not dst:
        raise UsageError("attack needs SRC and DST (or --list)")
    report = generate_attacks(src, dst, specs, seed=seed, fmt=fmt, quality=quality, workers=workers)
    save_config(dst, "attack", {"src": src, "dst": dst, "attacks": list(attack_configs or ("default",)),
                                "seed": seed, "format": fmt, "quality": quality})
    click.echo(f"{report.n_queries} queries from {report.n_sources} images x {report.n_attacks} attacks -> "
               f"{dst}/manifest.csv")
    for s in report.skipped:
        click.echo(f"skipped {s.path}: {s.reason}", err=True)
