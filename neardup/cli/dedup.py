"""``neardup dedup``: scan a collection for duplicates, then act on them safely (a thin layer over neardup.dedup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from neardup.cli._common import FloatIn, config_option, default_help, save_config
from neardup.cli._ray import ray_config, ray_options
from neardup.cli.search import score_norm_options
from neardup.dedup.find import KEEP_RULES, DedupConfig
from neardup.dedup.grouping import HUB_MIN_SIZE
from neardup.extract.registry import ENGINES

_D = DedupConfig()


def _norm_options(f: Any) -> Any:
    """The score-normalisation options of `search exact` / `query`, with what they mean for a scan."""
    return score_norm_options(f, normalize_help=(
        "Normalise every pair's score by the two images' similarity to their nearest neighbours in BACKGROUND "
        "(SSCD, ISC 2021): an image that resembles everything no longer passes the threshold with unrelated ones. "
        "BACKGROUND: a feature folder of the same model, or images (extracted like the collection, cached in "
        "--out). Its images must be copies of nothing in the collection (a background inside an input is "
        "refused). The threshold is then a normalised score."), per="image")


class DedupGroup(click.Group):
    """``neardup dedup PATH...`` scans; ``neardup dedup apply|undo DIR`` act on a scan.

    Why a group with a default command: the scan is what people run, so it needs no sub-command name.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["scan", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DedupGroup, invoke_without_command=False)
def dedup() -> None:
    """Find exact and near-duplicate images in your folders, and act on them safely.

    \b
    neardup dedup PATH... --out DIR      scan (the default; see `neardup dedup scan --help`)
    neardup dedup apply DIR --move-to D  move the copies away (dry run unless --yes)
    neardup dedup undo DIR               put moved files back
    """


@dedup.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@config_option
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Scan folder: results, report.html and caches (a re-run reuses them).")
@click.option("--against", multiple=True, type=click.Path(), metavar="REF",
              help="Report only images of PATH that copy an image of REF (repeatable): leaks, copyright, "
                   "train/test contamination.")
@click.option("--add", is_flag=True, default=False,
              help="Add PATH to the earlier scan in --out, encoding only the new images.")
@click.option("--threshold", type=float, default=None,
              help="Cosine similarity (a normalised score with --normalize-scores) at which two images are "
                   "duplicates [default: calibrated on your images].")
@click.option("--precision", type=FloatIn(0.5, 1, hi_open=True), default=None,
              help=f"Target precision of the calibrated threshold. {default_help(_D.precision)}")
@click.option("--keep", type=click.Choice(KEEP_RULES), default=None,
              help=f"Which file of a group is kept (first: first in path order). {default_help(_D.keep)}")
@click.option("--model", default=None, help=f"A name from `neardup models`. {default_help(_D.model)}")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint file for the model.")
@click.option("--calibration-images", type=click.IntRange(2, 100_000), default=None,
              help=f"Images sampled to calibrate the threshold. {default_help(_D.calibration_images)}")
@click.option("--calibration-attacks", default=None,
              help=f"Attack set (name or YAML) for the calibration copies. {default_help(_D.calibration_attacks)}")
@click.option("--copies-per-image", type=click.IntRange(1, 100), default=None,
              help=f"Attacked copies per sampled image. {default_help(_D.copies_per_image)}")
@click.option("--centre-margin", type=FloatIn(0, 1), default=None,
              help=f"Chaining guard: members must be within threshold - margin of their group's centre. "
                   f"{default_help(_D.centre_margin)}")
@click.option("--min-pair-share", type=FloatIn(0, 1), default=None,
              help=f"Hub guard: groups of {HUB_MIN_SIZE}+ files need this share of their pairs above the threshold, "
                   f"else their centre is split off (0: off). {default_help(_D.min_pair_share)}")
@click.option("--max-bridge", type=FloatIn(0, 1), default=None,
              help=f"Bridge guard: groups of {HUB_MIN_SIZE}+ files are cut in two where their threshold graph has "
                   f"a cut of lower conductance (edges cut / edge ends on the smaller side): two photos' copies "
                   f"joined by a few edges (0: off). {default_help(_D.max_bridge)}")
@click.option("-k", "k", type=click.IntRange(2, 1000), default=None,
              help=f"Neighbours per image in the k-NN graph. {default_help(_D.k)}")
@click.option("--exact-limit", type=click.IntRange(1), default=None,
              help=f"Exact k-NN up to this many images, IVF above. {default_help(_D.exact_limit)}")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help=default_help(_D.batch_size))
@click.option("--workers", type=click.IntRange(0, 256), default=None, help="Decoding processes [default: cores - 1].")
@click.option("--device", default=None, help=f"auto, cpu or cuda[:N]. {default_help(_D.device)}")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help=f"What runs the network (onnx-int8: 2x faster on CPU, R@1 -0.0002). {default_help(_D.engine)}")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help=default_help(_D.seed))
@_norm_options
@click.option("--no-report", is_flag=True, default=False, help="Do not write report.html.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Start over: remove this command's earlier files in --out (never anything else).")
@ray_options
def scan(paths: tuple[str, ...], out: str, against: tuple[str, ...], add: bool, no_report: bool, overwrite: bool,
         ray: str | None, ray_cpus: int | None, ray_actors: int | None, **options: Any) -> None:
    """Find exact and near duplicates among the images of PATH... (folders, list files or feature folders).

    Writes groups.csv, pairs.csv, summary.json and report.html into --out. With --ray the features are extracted
    and the k-NN graph is searched on Ray (edge shards in --out/graph); the groups are the same.
    """
    from neardup.dedup.scan import run_scan

    on_ray = ray_config(ray, ray_cpus, ray_actors)
    cfg = DedupConfig(**{k: v for k, v in options.items() if v is not None})
    params = {"paths": list(paths), "against": list(against), **{k: v for k, v in vars(cfg).items()}}
    result = run_scan(list(paths), out, cfg, against=list(against) or None, add=add, overwrite=overwrite,
                      report=not no_report, show_progress=True,
                      write_config=lambda folder: save_config(folder, "dedup", params), ray=on_ray)
    d = result.to_dict()
    cal = result.calibration
    how = (f"calibrated: precision {cal.precision:.3f} (target {cal.target_precision}), estimated recall "
           f"{cal.recall:.3f} on {cal.n_positives} attacked copies, {cal.n_negatives} hard negatives"
           + ("" if cal.reached else "; TARGET NOT REACHED") if cal else "given")
    click.echo(f"{d['files']} files: {d['groups']} groups, {d['duplicates']} duplicates "
               f"({d['exact_duplicates']} exact, {d['near_duplicates']} near), {d['unreadable']} unreadable")
    click.echo(f"threshold {d['threshold']:.4f} ({'normalised score; ' if result.normalization else ''}{how})")
    click.echo(f"largest group {d['largest_group']} files; timings " +
               ", ".join(f"{k} {v:.1f}s" for k, v in d["timings_s"].items()))
    click.echo(f"results: {Path(out) / 'groups.csv'}, {Path(out) / 'pairs.csv'}, {Path(out) / 'summary.json'}")
    if not no_report:
        click.echo(f"report: open file://{(Path(out) / 'report.html').resolve()} in a browser")
    for i, why in list(result.skipped.items())[:20]:
        click.echo(f"unreadable {result.files[i].path}: {why}", err=True)


def _mode(move_to: str | None, symlink: bool, hardlink: bool, delete: bool) -> str:
    from neardup.errors import UsageError

    chosen = [m for m, on in (("move", move_to is not None), ("symlink", symlink), ("hardlink", hardlink),
                              ("delete", delete)) if on]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --move-to DIR, --symlink, --hardlink, --delete")
    return chosen[0]


@dedup.command("apply")
@click.argument("scan_dir", type=click.Path(file_okay=False))
@click.option("--move-to", type=click.Path(file_okay=False), default=None,
              help="Move each duplicate under this folder (keeping its full path below it).")
@click.option("--symlink", is_flag=True, help="Replace each duplicate by a symbolic link to its keeper.")
@click.option("--hardlink", is_flag=True, help="Replace each duplicate by a hard link to its keeper.")
@click.option("--delete", is_flag=True, help="Delete each duplicate (cannot be undone).")
@click.option("--yes", is_flag=True, help="Do it. Without --yes, only show what would be done.")
def apply_cmd(scan_dir: str, move_to: str | None, symlink: bool, hardlink: bool, delete: bool, yes: bool) -> None:
    """Act on the duplicates of a finished scan; keepers and --against references are never touched.

    Every file is first checked against the scan (size and mtime); a changed file refuses the whole run.
    A journal is written before each change, so `neardup dedup undo` can put moved files back.
    """
    from neardup.dedup.actions import apply

    rep = apply(scan_dir, _mode(move_to, symlink, hardlink, delete), move_to, yes=yes)
    for t in rep.planned[:10]:
        click.echo(f"{'would ' if rep.dry_run else ''}{t.op} {t.path}" + (f" -> {t.dst}" if t.dst else "")
                   + f" (keeper {t.keeper})")
    if len(rep.planned) > 10:
        click.echo(f"... {len(rep.planned) - 10} more")
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)
    if rep.dry_run:
        click.echo(f"dry run: {len(rep.planned)} file(s) would be changed; add --yes to do it")
    else:
        click.echo(f"{rep.done} file(s) changed; journal {rep.journal} (`neardup dedup undo {scan_dir}` reverses it)")


@dedup.command("undo")
@click.argument("scan_dir", type=click.Path(file_okay=False))
def undo_cmd(scan_dir: str) -> None:
    """Reverse the last `neardup dedup apply` on SCAN_DIR: moved and linked files are put back byte for byte."""
    from neardup.dedup.actions import undo

    restored, notes = undo(scan_dir)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{restored} file(s) restored")
