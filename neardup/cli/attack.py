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
              help="Attack set: built-in 'default' (the study's 58), 'biomedical', 'extended' (overlays, padding, "
                   "meme, stripes, blending, pixelisation, chains...), 'all' (the three), or a YAML file. "
                   "Repeatable.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Same seed, same images.")
@click.option("--format", "fmt", type=click.Choice(["jpg", "png", "webp"]), default="jpg", show_default=True,
              help="File format of the generated queries.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="Encoding quality for jpg/webp output (jpeg attacks apply their own quality first).")
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Processes [default: all cores].")
@click.option("--overwrite", is_flag=True,
              help="Redo every query of an earlier attack run in DST; in a folder neardup did not write, add the "
                   "queries beside its files (never replacing one).")
@click.option("--list", "list_only", is_flag=True, help="List the attacks of the selected sets and exit.")
def attack(src: str | None, dst: str | None, attack_configs: tuple[str, ...], seed: int, fmt: str, quality: int,
           workers: int | None, overwrite: bool, list_only: bool) -> None:
    """Generate manipulated copies of every image in SRC into DST, with DST/manifest.csv as ground truth.

    A re-run into the same DST resumes an interrupted run; with other settings it replaces the earlier
    queries (and removes those the new manifest does not list).
    """
    from neardup.data.attacks import ATTACKS, check_unique_names
    from neardup.data.generate import builtin_attack_configs, generate_attacks, load_attack_config

    sets = list(attack_configs or ("default",))
    specs = [s for c in sets for s in load_attack_config(c)]
    check_unique_names(specs, f"--attacks {' '.join(sets)}")
    if list_only:
        for s in specs:
            click.echo(f"{s.name:<28} {s.family:<18} {json.dumps(s.params):<28} {ATTACKS[s.attack].doc}")
        click.echo(f"{len(specs)} attacks")
        click.echo("built-in sets (--attacks NAME): "
                   + ", ".join(f"{c} ({len(load_attack_config(c))})" for c in builtin_attack_configs()))
        return
    if not src or not dst:
        raise UsageError("attack needs SRC and DST (or --list)")
    settings = {"src": src, "dst": dst, "attacks": sets, "seed": seed, "format": fmt, "quality": quality}
    report = generate_attacks(src, dst, specs, seed=seed, fmt=fmt, quality=quality, workers=workers,
                              overwrite=overwrite, on_commit=lambda out: save_config(out, "attack", settings))
    kept = f" ({report.n_kept} images were already done and kept)" if report.n_kept else ""
    click.echo(f"{report.n_queries} queries from {report.n_sources} images x {report.n_attacks} attacks -> "
               f"{dst}/manifest.csv{kept}")
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.path}: {skipped.reason}", err=True)
