"""``neardup search exact|bench``, ``report`` and ``plot``: retrieval quality and faiss benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from neardup.cli._common import IndexSpecOption, NeardupGroup, config_option, retrieval_set_options, save_config
from neardup.io_utils import atomic_write_json
from neardup.outdir import check_out_dir, check_out_file, claim_out_dir

#: What `search bench` writes in --out (the output-folder rule's owned files).
BENCH_OWNED = ("results.json", "config.yaml")


#: --normalize-scores' help in `search exact` and `query` (another command may give its own)
NORMALIZE_HELP = ("Subtract from each query's scores its similarity to its nearest neighbours in BACKGROUND "
                  "(a feature folder, or images extracted like the features), as SSCD and ISC 2021 do: "
                  "scores of different queries become comparable (µAP, one threshold); a query's own "
                  "ranking does not change.")


def score_norm_options(f: Callable[..., Any], normalize_help: str = NORMALIZE_HELP,
                       per: str = "query") -> Callable[..., Any]:
    """``--normalize-scores BACKGROUND`` and its ``--norm-*`` settings (search exact, query, dedup)."""
    options = [
        click.option("--normalize-scores", "normalize_scores", type=click.Path(), default=None, metavar="BACKGROUND",
                     help=normalize_help),
        click.option("--norm-k", "norm_k", type=click.IntRange(1, 10_000), default=None,
                     help=f"Background neighbours per {per} [default: 3, as SSCD]."),
        click.option("--norm-beta", "norm_beta", type=click.FloatRange(0, 10), default=None,
                     help="Weight of the background similarity [default: 1.0]."),
        click.option("--norm-reduction", "norm_reduction", type=click.Choice(["mean", "kth"]), default=None,
                     help="mean of the k background similarities (SSCD) or the k-th (ISC 2021) [default: mean]."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def background_cache(out: str | None) -> Path | None:
    """Where background images are extracted: beside the result file (``res.json`` -> ``res.background/``)."""
    return Path(out).with_name(f"{Path(out).stem}.background") if out else None


@click.group(cls=NeardupGroup)
def search() -> None:
    """Nearest-neighbour retrieval of queries against a database of features."""


@search.command("exact")
@config_option
@retrieval_set_options
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default=None,
              help="For float features [default: cosine]; hashes always use hamming.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result JSON here.")
@click.option("--quiet", is_flag=True, help="Do not print the table.")
@score_norm_options
def search_exact_cmd(database: str, queries: str, distractors: tuple[str, ...], manifest: str | None,
                     metric: str | None, k: int, out: str | None, quiet: bool, normalize_scores: str | None,
                     norm_k: int | None, norm_beta: float | None, norm_reduction: str | None) -> None:
    """Exact (faiss Flat) search: recall@1/5/10, mAP and µAP, overall and per attack family."""
    from neardup.extract.store import FeatureStore
    from neardup.fastsearch.dataset import load_retrieval_set
    from neardup.fastsearch.exact import evaluate, format_table
    from neardup.fastsearch.normalize import BackgroundNormalizer, ScoreNormalization

    norm_cfg = ScoreNormalization.from_options(normalize_scores, norm_k, norm_beta, norm_reduction)
    if out:
        check_out_file(out, schema="neardup.search.exact/")  # before the work; never a file neardup did not write
    rs = load_retrieval_set(database, queries, distractors, manifest, metric)
    normalizer = None
    if norm_cfg is not None:
        normalizer = BackgroundNormalizer.load(norm_cfg, FeatureStore.open(database).space, rs.metric,
                                               cache=background_cache(out), transform_from=database,
                                               show_progress=not quiet, reference=f"database {database}")
    config = {"database": database, "queries": queries, "distractors": list(distractors), "manifest": manifest,
              "metric": rs.metric, "k": k}
    result = evaluate(rs, k=k, config=config, normalizer=normalizer)
    if out:
        atomic_write_json(out, result.to_dict())
    if not quiet:
        click.echo(format_table([result]))
    if out:
        click.echo(f"wrote {out}")


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--metric", default="recall@1", show_default=True, help="recall@1|5|10, mAP or muAP.")
def report(results: tuple[str, ...], metric: str) -> None:
    """Print several `search exact` results side by side, per attack family."""
    from neardup.fastsearch.exact import check_metric_name, format_table, load_result

    loaded = [load_result(path) for path in results]
    check_metric_name(loaded, metric, list(results))
    click.echo(format_table(loaded, metric))


def _opt_tuple(v: tuple[Any, ...]) -> tuple[Any, ...] | None:
    return tuple(v) if v else None


@search.command("bench")
@config_option
@retrieval_set_options
@click.option("--index", "index", multiple=True, metavar="FACTORY", cls=IndexSpecOption,
              help="faiss factory string, repeatable; '{nlist}' is filled with 4*sqrt(N). "
                   "[default: Flat, IVF{nlist},Flat; BFlat, BIVF{nlist} for hashes]")
@click.option("--metric", "metric", multiple=True, type=click.Choice(["l2", "cosine", "l1", "js", "hamming"]),
              help="Repeatable [default: the features' own, cosine or hamming].")
@click.option("--nprobe", multiple=True, type=click.IntRange(1),
              help="IVF lists visited, repeatable [default: 1 4 16 64].")
@click.option("--ef-search", "ef_search", multiple=True, type=click.IntRange(1),
              help="HNSW search breadth, repeatable [default: 16 64 256].")
@click.option("--k-factor", "k_factor", multiple=True, type=click.IntRange(1),
              help="Re-ranking depth of ,RFlat indexes (k x this many candidates), repeatable [default: 4].")
@click.option("-k", "k", multiple=True, type=click.IntRange(1), help="Neighbours returned, repeatable [default: 10].")
@click.option("--synthetic", type=click.IntRange(0, 100_000_000), default=0, show_default=True,
              help="Add this many generated distractors matching the real features (low-rank Gaussian).")
@click.option("--synthetic-rank", type=click.IntRange(1), default=64, show_default=True,
              help="Principal components kept by the synthetic model.")
@click.option("--pca", type=click.IntRange(1), default=None, help="Reduce real features to this many dimensions first.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="faiss GPU when faiss-gpu and a GPU are present; cpu otherwise (with a note).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="faiss OpenMP threads [default: all cores].")
@click.option("--latency-queries", type=click.IntRange(0), default=None,
              help="Queries timed one by one for p50/p99 [default: 200].")
@click.option("--train-size", type=click.IntRange(1), default=None,
              help="Training vectors [default: 64 per IVF list, at least 10000].")
@click.option("--chunk-size", type=click.IntRange(1), default=None, help="Vectors added per chunk [default: 65536].")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder (results.json, config.yaml).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty --out neardup did not write (beside its files).")
@click.option("--all-points", is_flag=True, help="Print every point, not only the Pareto frontier.")
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
def search_bench_cmd(database: str, queries: str, distractors: tuple[str, ...], manifest: str | None,
                     index: tuple[str, ...], metric: tuple[str, ...], nprobe: tuple[int, ...],
                     ef_search: tuple[int, ...], k_factor: tuple[int, ...], k: tuple[int, ...], synthetic: int,
                     synthetic_rank: int,
                     pca: int | None, device: str, threads: int | None, latency_queries: int | None,
                     train_size: int | None, chunk_size: int | None, seed: int, out: str, overwrite: bool,
                     all_points: bool, quiet: bool) -> None:
    """Benchmark faiss indexes: build/train/add times, size, QPS, latency p50/p99, recall, µAP, ANN recall."""
    from neardup.fastsearch.bench import (
        BenchConfig,
        format_frontier,
        load_bench_inputs,
        run_bench,
    )

    given: dict[str, Any] = {"specs": _opt_tuple(index), "metrics": _opt_tuple(metric), "nprobe": _opt_tuple(nprobe),
             "ef_search": _opt_tuple(ef_search), "k_factor": _opt_tuple(k_factor), "ks": _opt_tuple(k),
             "latency_queries": latency_queries,
             "threads": threads, "device": device, "chunk_size": chunk_size, "train_size": train_size, "seed": seed}
    cfg = BenchConfig(**{k: v for k, v in given.items() if v is not None})
    cfg.validate()
    check_out_dir(out, "search bench", overwrite=overwrite, owned=BENCH_OWNED)  # before hours of work
    inputs = load_bench_inputs(database, queries, distractors, manifest, synthetic, synthetic_rank, seed, pca)
    result = run_bench(inputs.db, inputs.queries, inputs.gt, cfg, default_metric=inputs.metric,
                       dataset=inputs.dataset, show_progress=not quiet)
    params = {"database": database, "queries": queries, "distractors": list(distractors), "manifest": manifest,
              "index": list(dict.fromkeys(r.index for r in result.records)), "metric": list(cfg.metrics),
              "nprobe": list(cfg.nprobe), "ef_search": list(cfg.ef_search), "k_factor": list(cfg.k_factor),
              "k": list(cfg.ks), "synthetic": synthetic,
              "synthetic_rank": synthetic_rank, "pca": pca, "device": device, "threads": threads,
              "latency_queries": cfg.latency_queries, "train_size": train_size, "chunk_size": cfg.chunk_size,
              "seed": seed}
    result.config = params
    with claim_out_dir(out, "search bench", overwrite=overwrite, owned=BENCH_OWNED):
        atomic_write_json(Path(out) / "results.json", result.to_dict())
        save_config(out, "search bench", params)
    if not quiet:
        click.echo(format_frontier(result, all_points))
    click.echo(f"wrote {Path(out) / 'results.json'} ({len(result.records)} points)")


@click.command("plot")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the PNG and PDF figures.")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty --out neardup did not write (beside its files).")
def plot_cmd(results: str, out: str, overwrite: bool) -> None:
    """Figures of a `search bench` RESULTS.json: recall-vs-QPS frontier, recall vs time, build time and memory."""
    from neardup.fastsearch.plot import load_result, plot_results

    for path in plot_results(load_result(results), out, overwrite=overwrite):
        click.echo(f"wrote {path}")
