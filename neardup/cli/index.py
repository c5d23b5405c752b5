"""``neardup index build|add`` and ``neardup query``: a persistent faiss index of a feature folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from neardup.cli._common import IndexSpecOption, NeardupGroup, config_option, save_config
from neardup.cli.search import background_cache, score_norm_options
from neardup.io_utils import atomic_write_json
from neardup.outdir import check_out_file


@click.group("index", cls=NeardupGroup)
def index_group() -> None:
    """Persistent faiss index of a feature folder: build it, then add images."""


@index_group.command("build")
@click.argument("features", type=click.Path())
@config_option
@click.option("--factory", default="Flat", show_default=True, cls=IndexSpecOption,
              help="faiss factory string ('{nlist}' -> 4*sqrt(N)); binary specs (BFlat...) for hashes.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Index folder to create.")
@click.option("--metric", type=click.Choice(["l2", "cosine", "l1", "js", "hamming"]), default=None,
              help="[default: the features' own, cosine or hamming]")
@click.option("--overwrite", is_flag=True,
              help="Replace the index in --out (kept until the new one is committed); in a folder neardup did "
                   "not write, write beside its files.")
def index_build_cmd(features: str, factory: str, out: str, metric: str | None, overwrite: bool) -> None:
    """Build an index over FEATURES (a `neardup extract` folder) and save index + paths + model metadata."""
    from neardup.fastsearch.persist import IndexDir, build_index_dir

    def write_config(idx: IndexDir) -> None:  # under the folder lock, right after the commit
        save_config(idx.root, "index build", {"features": features, "factory": factory, "metric": idx.meta.metric})

    idx = build_index_dir(features, factory, out, metric, overwrite, on_commit=write_config)
    click.echo(f"{idx.meta.ntotal} vectors ({idx.meta.model}, {idx.meta.metric}) -> {out} [{idx.meta.factory}]")


@index_group.command("add")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("images", type=click.Path())
@click.option("--device", default=None, help="Extraction device: auto, cpu or cuda[:N].")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint the index's model used.")
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes.")
def index_add_cmd(index_dir: str, images: str, device: str | None, weights: str | None, workers: int | None) -> None:
    """Append IMAGES (folder or list file; or a feature folder of the same model) to INDEX_DIR.

    Images already indexed (the same file, however its path is spelled) are not added again. The update
    is committed at once or not at all; a second concurrent update of the same index is refused.
    """
    from neardup.fastsearch.persist import add_features, add_images

    skipped: list[dict[str, str]] = []
    if (Path(images) / "meta.json").is_file():
        n = add_features(index_dir, images)
    else:
        n, skipped = add_images(index_dir, images, device, weights, workers, show_progress=True)
    click.echo(f"added {n} vectors to {index_dir} ({len(skipped)} unreadable files skipped)")
    for s in skipped[:20]:
        click.echo(f"skipped {s['path']}: {s['reason']}", err=True)


@click.command("query")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.option("--nprobe", type=click.IntRange(1), default=None, help="IVF lists to visit.")
@click.option("--ef-search", "ef_search", type=click.IntRange(1), default=None, help="HNSW search breadth.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON here.")
@click.option("--grid", type=click.Path(dir_okay=False), default=None,
              help="Draw each query beside its neighbours (.png, .pdf or .svg).")
@click.option("--device", default=None, help="Extraction device: auto, cpu or cuda[:N].")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint the index's model used.")
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes.")
@score_norm_options
def query_cmd(index_dir: str, images: tuple[str, ...], k: int, nprobe: int | None, ef_search: int | None,
              out: str | None, grid: str | None, device: str | None, weights: str | None,
              workers: int | None, normalize_scores: str | None, norm_k: int | None, norm_beta: float | None,
              norm_reduction: str | None) -> None:
    """Top-k neighbours of each IMAGE in INDEX_DIR, as JSON (scores: higher = more similar)."""
    from neardup.fastsearch.normalize import ScoreNormalization
    from neardup.fastsearch.persist import draw_grid, grid_format, query_index

    norm_cfg = ScoreNormalization.from_options(normalize_scores, norm_k, norm_beta, norm_reduction)

    if grid:
        grid_format(grid)  # an unknown extension is refused before any extraction
        check_out_file(grid, "--grid")
    if out:
        check_out_file(out, schema="neardup.query/")
    params = {k_: v for k_, v in (("nprobe", nprobe), ("efSearch", ef_search)) if v is not None}
    result = query_index(index_dir, list(images), k, params, device, weights, workers, show_progress=True,
                         normalization=norm_cfg, background_cache=background_cache(out))
    doc = result.to_dict()
    if out:
        atomic_write_json(out, doc)
    if grid:
        draw_grid(result, grid)
    click.echo(json.dumps(doc, indent=2))
    for s in result.skipped:
        click.echo(f"skipped {s['path']}: {s['reason']}", err=True)
