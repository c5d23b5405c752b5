"""``neardup cluster``: a thin Click layer over :func:`neardup.clustering.run.run_clustering`."""

from __future__ import annotations

import math
import re
from typing import Any

import click
import numpy as np

from neardup.cli._common import FloatIn, config_option, save_config
from neardup.clustering._common import MAX_SETTINGS
from neardup.errors import UsageError

#: CLI option -> estimator parameter, per method (the option applies only to the methods listed).
PARAM_MAP: dict[str, dict[str, str]] = {
    "hierarchical": {"linkage": "linkage", "threshold": "distance_threshold", "n_clusters": "n_clusters",
                     "max_memory": "max_memory"},
    "dbscan": {"eps": "eps", "min_samples": "min_samples"},
    "hdbscan": {"min_cluster_size": "min_cluster_size", "min_samples": "min_samples",
                "selection_epsilon": "cluster_selection_epsilon", "selection_method": "cluster_selection_method"},
    "graph": {"threshold": "threshold", "k": "k", "index": "index", "pca": "pca", "ef_search": "ef_search",
              "seed": "seed"},
}
#: Default distance thresholds (hierarchical threshold, dbscan eps, graph threshold) per metric.
DEFAULT_RADIUS = {"cosine": 0.1, "hamming": 10.0}


def parse_bytes(text: str | None) -> int | None:
    """'8GB', '500 MB', '1.5G' or a plain number of bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise UsageError(f"--max-memory: cannot read {text!r} (use e.g. 8GB, 500MB or a number of bytes)")
    return int(float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_"))


def parse_sweep(text: str | None) -> list[float] | None:
    """'0.05,0.1,0.2' or 'start:stop:step' (stop included); finite numbers, at most MAX_SETTINGS of them."""
    if not text:
        return None
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) or step <= 0:
                raise ValueError
            count = math.floor((stop - start) / step + 0.5) + 1
            if count < 1:
                raise UsageError(f"--sweep {text}: start is above stop, so there is no setting")
            if count > MAX_SETTINGS:
                raise UsageError(f"--sweep {text} has {count} settings; at most {MAX_SETTINGS} are allowed "
                                 f"(use a larger step)")
            values = [round(v, 10) for v in np.arange(start, stop + step / 2, step)]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
            if len(values) > MAX_SETTINGS:
                raise UsageError(f"--sweep has {len(values)} settings; at most {MAX_SETTINGS} are allowed")
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError
        return values
    except ValueError:
        raise UsageError(f"--sweep: cannot read {text!r} (finite numbers: 0.05,0.1,0.2 or start:stop:step)") from None


def method_params(method: str, metric: str, options: dict[str, Any], sweeping: bool) -> dict[str, Any]:
    """Estimator parameters from CLI options; options of another method are an error, not ignored."""
    mapping = PARAM_MAP[method]
    wrong = [k for k, v in options.items() if v is not None and k not in mapping]
    if wrong:
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise UsageError(f"{flags} do(es) not apply to --method {method}; its options: "
                         f"{', '.join('--' + k.replace('_', '-') for k in mapping)}")
    params = {mapping[k]: v for k, v in options.items() if v is not None}
    radius_key = {"hierarchical": "distance_threshold", "dbscan": "eps", "graph": "threshold"}.get(method)
    if radius_key and radius_key not in params and not (method == "hierarchical" and "n_clusters" in params) \
            and not sweeping:
        if metric not in DEFAULT_RADIUS:
            flag = {"distance_threshold": "--threshold", "eps": "--eps", "threshold": "--threshold"}[radius_key]
            raise UsageError(f"{method} with the {metric} metric needs {flag} (or --sweep); it has no default scale")
        params[radius_key] = DEFAULT_RADIUS[metric]
    return params


def sweep_name(method: str, name: str | None) -> str | None:
    if name is None:
        return None
    key = name.replace("-", "_")
    return PARAM_MAP[method].get(key, key)


@click.command()
@click.argument("features", nargs=-1, required=True, type=click.Path())
@config_option
@click.option("--method", type=click.Choice(["hierarchical", "dbscan", "hdbscan", "graph"]), default="graph",
              show_default=True, help="Clustering method.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier `neardup cluster` output (whose files are replaced).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder that holds no cluster output, beside its files (none is removed).")
@click.option("--metric", type=click.Choice(["cosine", "euclidean", "hamming"]), default=None,
              help="[default: the extractor's: cosine, or hamming for hashes]")
@click.option("--normalize", is_flag=True, default=None, help="L2-normalise float features first (e.g. for ward).")
@click.option("--linkage", type=click.Choice(["single", "complete", "average", "weighted", "centroid", "median",
                                              "ward"]), default=None, help="hierarchical [default: average].")
@click.option("--threshold", type=FloatIn(0), default=None,
              help="hierarchical/graph: distance cut (cosine distance, L2 or bits) [cosine 0.1, hamming 10].")
@click.option("--n-clusters", type=click.IntRange(1), default=None, help="hierarchical: cut to this many clusters.")
@click.option("--max-memory", default=None, help="hierarchical: memory limit, e.g. 8GB [default: 80% of free RAM].")
@click.option("--eps", type=FloatIn(0, lo_open=True), default=None,
              help="dbscan: neighbourhood radius [cosine 0.1, hamming 10].")
@click.option("--min-samples", type=click.IntRange(1), default=None, help="dbscan/hdbscan: core point density.")
@click.option("--min-cluster-size", type=click.IntRange(2), default=None, help="hdbscan [default: 2].")
@click.option("--selection-epsilon", type=FloatIn(0), default=None, help="hdbscan: cluster_selection_epsilon.")
@click.option("--selection-method", type=click.Choice(["leaf", "eom"]), default=None, help="hdbscan [default: leaf].")
@click.option("-k", "k", type=click.IntRange(1), default=None, help="graph: neighbours per image [default: 10].")
@click.option("--index", default=None, help="graph: flat (exact), hnsw, or a faiss factory string [default: flat].")
@click.option("--pca", type=click.IntRange(1), default=None, help="graph: reduce features to this many dims first.")
@click.option("--ef-search", type=click.IntRange(1), default=None, help="graph: HNSW search breadth.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="graph: seed of the PCA sample.")
@click.option("--sweep", default=None, help="Values of the swept parameter: 0.05,0.1,0.2 or start:stop:step.")
@click.option("--sweep-param", default=None,
              help="Parameter to sweep [default: threshold / eps / selection-epsilon], e.g. n-clusters.")
@click.option("--manifest", "manifests", multiple=True, type=click.Path(),
              help="Attack manifest(s) for ground truth [default: manifest.csv of the extracted folders].")
@click.option("--labels", "labels_csv", type=click.Path(dir_okay=False), default=None,
              help="Ground truth CSV: path (or id) and label columns; unlisted images are singletons.")
@click.option("--exclude", multiple=True, help="Ground-truth tag to leave out of the clean scores: a group name, "
              "attack, family, or original/query/distractor/unlabelled. Repeatable.")
@click.option("--best-by", default="ari", show_default=True, help="Score that picks the best sweep setting.")
@click.option("--attributes", type=click.IntRange(0), default=100, show_default=True,
              help="Describe this many of the largest clusters (0: none).")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots under OUT/plots.")
@click.option("--mosaics", type=click.IntRange(0), default=12, show_default=True,
              help="Image mosaics for this many of the largest clusters.")
@click.option("--per-setting", is_flag=True, help="Also write OUT/sweep/<param>=<value>.csv for every setting.")
@click.option("--quiet", is_flag=True, help="Do not print the table.")
def cluster(features: tuple[str, ...], method: str, out: str, overwrite: bool, metric: str | None,
            normalize: bool | None, sweep: str | None, sweep_param: str | None, manifests: tuple[str, ...],
            labels_csv: str | None, exclude: tuple[str, ...], best_by: str, attributes: int, plots: bool,
            mosaics: int, per_setting: bool, quiet: bool, **options: Any) -> None:
    """Cluster the images of one or more FEATURES folders into near-duplicate groups.

    Scores against ground truth (attack manifests or --labels) for each --sweep
    setting and writes OUT/assignments.csv (best setting), OUT/metrics.json and plots.
    """
    from neardup.clustering.data import (
        default_manifests,
        load_features,
        truth_from_labels,
        truth_from_manifests,
    )
    from neardup.clustering.run import OWNED, format_summary, run_clustering, write_outputs
    from neardup.outdir import check_out_dir, claim_out_dir

    check_out_dir(out, "cluster", overwrite=overwrite, owned=OWNED)  # before any work: a refused --out costs nothing
    inp = load_features(list(features))
    metric = metric or ("hamming" if inp.metric == "hamming" else "cosine")
    options["max_memory"] = parse_bytes(options.get("max_memory"))
    values = parse_sweep(sweep)
    params = method_params(method, metric, options, values is not None)
    X = inp.features
    if normalize:
        if X.dtype == np.uint8:
            raise UsageError("--normalize applies to float features, not binary hashes")
        from neardup.fastsearch.exact import l2_normalize

        X = l2_normalize(X)
    if manifests and labels_csv:
        raise UsageError("give --manifest or --labels, not both")
    truth = None
    if labels_csv:
        truth = truth_from_labels(inp.ids, inp.paths, labels_csv)
    else:
        found = list(manifests) or default_manifests(inp)
        truth = truth_from_manifests(inp.ids, found) if found else None
    if exclude and truth is None:
        raise UsageError("--exclude needs ground truth (--manifest or --labels)")
    config = {"features": list(features), "method": method, "metric": metric, "normalize": bool(normalize),
              **{k: v for k, v in options.items()}, "sweep": sweep, "sweep_param": sweep_param,
              "manifests": [str(m) for m in manifests], "labels_csv": labels_csv, "exclude": list(exclude),
              "best_by": best_by, "attributes": attributes, "plots": plots, "mosaics": mosaics}
    try:
        result, labels, linkage, cents = run_clustering(
            X, method, params, metric, paths=inp.paths, sweep_param=sweep_name(method, sweep_param), values=values,
            truth=truth, exclude=exclude, best_by=best_by, attributes=attributes, model=inp.model, config=config)
    except (ValueError, MemoryError) as exc:
        raise UsageError(str(exc)) from None
    # an earlier cluster output in --out is replaced whole (its stale plots, mosaics and sweep files included),
    # so the folder never mixes two runs; files neardup did not write are never touched
    own = check_out_dir(out, "cluster", overwrite=overwrite, owned=OWNED)
    with claim_out_dir(out, "cluster", overwrite=overwrite or own, owned=OWNED):
        write_outputs(out, result, labels, inp.paths, cents, per_setting)
        if plots:
            from neardup.clustering.plots import write_plots

            write_plots(out, result, labels, inp.paths, truth, linkage, X, mosaics=mosaics)
        save_config(out, "cluster", config)
    if not quiet:
        click.echo(format_summary(result))
    best = result.settings[result.best]
    click.echo(f"{best.n_clusters} clusters ({best.n_noise} noise) -> {out}/assignments.csv, {out}/metrics.json")
