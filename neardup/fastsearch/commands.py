"""CLI commands of fastsearch: ``search bench``, ``index build|add``, ``query`` and ``plot``.

Registered by ``neardup.cli`` through :func:`register`. Each command builds its
arguments, calls one library function and writes outputs (with the resolved
``config.yaml``) atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from neardup.cli import NeardupGroup, config_option, retrieval_set_options, save_config
from neardup.io_utils import atomic_write_json


def _opt_tuple(v: tuple[Any, ...]) -> tuple[Any, ...] | None:
    return tuple(v) if v else None


@click.command("bench")
@config_option
@retrieval_set_options
@click.option("--index", "index", multiple=True, metavar="FACTORY",
              help="faiss factory string, repeatable; '{nlist}' is filled with 4*sqrt(N). "
                   "[default: Flat, IVF{nlist},Flat; BFlat, BIVF{nlist} for hashes]")
@click.option("--metric", "metric", multiple=True, type=click.Choice(["l2", "cosine", "l1", "js", "hamming"]),
              help="Repeatable [default: the features' own, cosine or hamming].")
@click.option("--nprobe", multiple=True, type=click.IntRange(1), help="IVF lists visited, repeatable [default: 1 4 16 64].")
@click.option("--ef-search", "ef_search", multiple=True, type=click.IntRange(1),
              help="HNSW search breadth, repeatable [default: 16 64 256].")
@click.option("--k-factor", "k_factor", multiple=True, type=click.IntRange(1),
              help="Re-ranking depth of ,RFlat indexes (k x this many candidates), repeatable [default: 4].")
@click.option("-k", "k", multiple=True, type=click.IntRange(1), help="Neighbours returned, repeatable [default: 10].")
@click.option("--synthetic", type=click.IntRange(0), default=0, show_default=True,
              help="Add this many generated distractors matching the real features (low-rank Gaussian).")
@click.option("--synthetic-rank", type=click.IntRange(1), default=64, show_default=True,
              help="Principal components kept by the synthetic model.")
@click.option("--pca", type=click.IntRange(1), default=None, help="Reduce real features to this many dimensions first.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="faiss GPU when faiss-gpu and a GPU are present; cpu otherwise (with a note).")
@click.option("--threads", type=click.IntRange(1), default=None, help="faiss OpenMP threads [default: all cores].")
@click.option("--latency-queries", type=click.IntRange(0), default=None,
              help="Queries timed one by one for p50/p99 [default: 200].")
@click.option("--train-size", type=click.IntRange(1), default=None,
              help="Training vectors [default: 64 per IVF list, at least 10000].")
@click.option("--chunk-size", type=click.IntRange(1), default=None, help="Vectors added per chunk [default: 65536].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (results.json, config.yaml).")
@click.option("--all-points", is_flag=True, help="Print every point, not only the Pareto frontier.")
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
def search_bench_cmd(database: str, queries: str, distractors: tuple[str, ...], manifest: str | None,
                     index: tuple[str, ...], metric: tuple[str, ...], nprobe: tuple[int, ...],
                     ef_search: tuple[int, ...], k_factor: tuple[int, ...], k: tuple[int, ...], synthetic: int, synthetic_rank: int,
                     pca: int | None, device: str, threads: int | None, latency_queries: int | None,
                     train_size: int | None, chunk_size: int | None, seed: int, out: str, all_points: bool,
                     quiet: bool) -> None:
    """Benchmark faiss indexes: build/train/add times, size, QPS, latency p50/p99, recall, µAP, ANN recall."""
    from neardup.fastsearch.bench import BenchConfig, format_frontier, load_bench_inputs, run_bench

    given = {"specs": _opt_tuple(index), "metrics": _opt_tuple(metric), "nprobe": _opt_tuple(nprobe),
             "ef_search": _opt_tuple(ef_search), "k_factor": _opt_tuple(k_factor), "ks": _opt_tuple(k), "latency_queries": latency_queries,
             "threads": threads, "device": device, "chunk_size": chunk_size, "train_size": train_size, "seed": seed}
    cfg = BenchConfig(**{k: v for k, v in given.items() if v is not None})
    cfg.validate()
    inputs = load_bench_inputs(database, queries, distractors, manifest, synthetic, synthetic_rank, seed, pca)
    result = run_bench(inputs.db, inputs.queries, inputs.gt, cfg, default_metric=inputs.metric,
                       dataset=inputs.dataset, show_progress=not quiet)
    params = {"database": database, "queries": queries, "distractors": list(distractors), "manifest": manifest,
              "index": list(dict.fromkeys(r.index for r in result.records)), "metric": list(cfg.metrics), "nprobe": list(cfg.nprobe),
              "ef_search": list(cfg.ef_search), "k_factor": list(cfg.k_factor), "k": list(cfg.ks), "synthetic": synthetic,
              "synthetic_rank": synthetic_rank, "pca": pca, "device": device, "threads": threads,
              "latency_queries": cfg.latency_queries, "train_size": train_size, "chunk_size": cfg.chunk_size,
              "seed": seed}
    result.config = params
    atomic_write_json(Path(out) / "results.json", result.to_dict())
    save_config(out, "search bench", params)
    if not quiet:
        click.echo(format_frontier(result, all_points))
    click.echo(f"wrote {Path(out) / 'results.json'} ({len(result.records)} points)")


@click.group("index", cls=NeardupGroup)
def index_group() -> None:
    """Persistent faiss index of a feature folder: build it, then add images."""


@index_group.command("build")
@click.argument("features", type=click.Path())
@config_option
@click.option("--factory", default="Flat", show_default=True,
              help="faiss factory string ('{nlist}' -> 4*sqrt(N)); binary specs (BFlat...) for hashes.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Index folder to create.")
@click.option("--metric", type=click.Choice(["l2", "cosine", "l1", "js", "hamming"]), default=None,
              help="[default: the features' own, cosine or hamming]")
@click.option("--overwrite", is_flag=True, help="Replace an existing index in --out.")
def index_build_cmd(features: str, factory: str, out: str, metric: str | None, overwrite: bool) -> None:
    """Build an index over FEATURES (a `neardup extract` folder) and save index + paths + model metadata."""
    from neardup.fastsearch.persist import build_index_dir

    idx = build_index_dir(features, factory, out, metric, overwrite)
    save_config(out, "index build", {"features": features, "factory": factory, "metric": idx.meta.metric})
    click.echo(f"{idx.meta.ntotal} vectors ({idx.meta.model}, {idx.meta.metric}) -> {out} [{idx.meta.factory}]")


@index_group.command("add")
@click.argument("index_dir", type=click.Path(file_okay=False))
@click.argument("images", type=click.Path())
@click.option("--device", default=None, help="Extraction device: auto, cpu or cuda[:N].")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint the index's model used.")
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes.")
def index_add_cmd(index_dir: str, images: str, device: str | None, weights: str | None, workers: int | None) -> None:
    """Append IMAGES (folder or list file; or a feature folder of the same model) to INDEX_DIR."""
    from neardup.fastsearch.persist import add_features, add_images

    if (Path(images) / "meta.json").is_file():
        n, skipped = add_features(index_dir, images), []
    else:
        n, skipped = add_images(index_dir, images, device, weights, workers)
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
              help="Draw each query beside its neighbours (.png or .pdf).")
@click.option("--device", default=None, help="Extraction device: auto, cpu or cuda[:N].")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint the index's model used.")
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes.")
def query_cmd(index_dir: str, images: tuple[str, ...], k: int, nprobe: int | None, ef_search: int | None,
              out: str | None, grid: str | None, device: str | None, weights: str | None,
              workers: int | None) -> None:
    """Top-k neighbours of each IMAGE in INDEX_DIR, as JSON (scores: higher = more similar)."""
    from neardup.fastsearch.persist import draw_grid, query_index

    params = {k_: v for k_, v in (("nprobe", nprobe), ("efSearch", ef_search)) if v is not None}
    result = query_index(index_dir, list(images), k, params, device, weights, workers)
    doc = result.to_dict()
    if out:
        atomic_write_json(out, doc)
    if grid:
        draw_grid(result, grid)
    click.echo(json.dumps(doc, indent=2))


@click.command("plot")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNG and PDF figures.")
def plot_cmd(results: str, out: str) -> None:
    """Figures of a `search bench` RESULTS.json: recall-vs-QPS frontier, recall vs time, build time and memory."""
    from neardup.fastsearch.plot import load_result, plot_results

    for path in plot_results(load_result(results), out):
        click.echo(f"wrote {path}")


def register(main: click.Group, search: click.Group) -> None:
    """Add the fastsearch commands to the ``neardup`` CLI."""
    search.add_command(search_bench_cmd)
    main.add_command(index_group)
    main.add_command(query_cmd)
    main.add_command(plot_cmd)
