"""``neardup cluster``: a thin Click layer over :func:`neardup.clustering.run.run_clustering`."""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from neardup.cli._common import FloatIn, RegistryHelpOption, config_option, save_config
from neardup.cli._ray import ray_config, ray_options
from neardup.clustering._common import MAX_SETTINGS
from neardup.errors import UsageError

if TYPE_CHECKING:
    from neardup.clustering.methods import MethodSpec


def _methods() -> dict[str, MethodSpec]:
    """The clustering method registry, imported when first needed (not by ``neardup --help``)."""
    from neardup.clustering.methods import METHODS

    return METHODS


class MethodChoice(click.Choice):
    """``--method``: the registered methods, read from the registry each time.

    Why not a fixed list: a method registered after this module is imported is offered and accepted too.
    """

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(_methods())

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


class MethodOption(RegistryHelpOption):
    """An option of some clustering methods: its help names them (and the default radius it gives)."""

    def registry_help(self, text: str) -> str:
        users = [m for m in _methods().values() if self.name in m.options]
        defaults: list[str] = []
        for m in users:
            if m.radius and m.options[self.name] == m.radius and m.default_radius:
                d = "[" + ", ".join(f"{k} {v:g}" for k, v in m.default_radius.items()) + "]"
                defaults += [d] if d not in defaults else []
        if defaults:
            text = f"{text.rstrip('.')} {' '.join(defaults)}."
        return f"{'/'.join(m.name for m in users)}: {text}" if users else text


class SweepParamOption(RegistryHelpOption):
    """``--sweep-param``: its help lists each method's default swept option."""

    def registry_help(self, text: str) -> str:
        names = dict.fromkeys((m.option_for(m.sweep_param) or m.sweep_param).replace("_", "-")
                              for m in _methods().values())
        return f"{text} [default: {' / '.join(names)}], e.g. n-clusters."


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


def _flag(option: str) -> str:
    """How the user types an option (``-k``, ``--min-samples``), from the command itself."""
    opts = next((p.opts for p in cluster.params if p.name == option and p.opts), None)
    return opts[0] if opts else "--" + option.replace("_", "-")


def method_params(method: str, metric: str, options: dict[str, Any], sweeping: bool) -> dict[str, Any]:
    """Estimator parameters from CLI options; options of another method are an error, not ignored.

    The mapping, the default radius and which parameters stand in for it come from the method's registry entry.
    """
    from neardup.clustering.methods import get_method

    m = get_method(method)
    wrong = [k for k, v in options.items() if v is not None and k not in m.options]
    if wrong:
        raise UsageError(f"{', '.join(map(_flag, wrong))} do(es) not apply to --method {method}; its options: "
                         f"{', '.join(map(_flag, m.options))}")
    params = {m.options[k]: v for k, v in options.items() if v is not None}
    if m.radius and not ({m.radius, *m.cuts} & params.keys()) and not sweeping:
        if metric not in m.default_radius:
            raise UsageError(f"{method} with the {metric} metric needs {_flag(m.option_for(m.radius) or m.radius)} "
                             f"(or --sweep); it has no default scale")
        params[m.radius] = m.default_radius[metric]
    missing = [p for p in m.required if p not in params]
    if missing and not sweeping:
        raise UsageError(f"--method {method} needs {', '.join(_flag(m.option_for(p) or p) for p in missing)} "
                         f"(or --sweep)")
    return params


def sweep_name(method: str, name: str | None) -> str | None:
    """The estimator parameter that ``--sweep-param NAME`` means (an option name, or a parameter name as is)."""
    if name is None:
        return None
    from neardup.clustering.methods import get_method

    key = name.replace("-", "_")
    return get_method(method).options.get(key, key)


@click.command()
@click.argument("features", nargs=-1, required=True, type=click.Path())
@config_option
@click.option("--method", type=MethodChoice(), default="graph", show_default=True, help="Clustering method.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier `neardup cluster` output (whose files are replaced).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder that holds no cluster output, beside its files (none is removed).")
@click.option("--metric", type=click.Choice(["cosine", "l2", "euclidean", "hamming"]), default=None,
              help="[default: the extractor's: cosine, or hamming for hashes]")
@click.option("--normalize", is_flag=True, default=None, help="L2-normalise float features first (e.g. for ward).")
# the options of the methods (MethodOption: the help names the methods that take each, from the registry)
@click.option("--linkage", cls=MethodOption, type=click.Choice(["single", "complete", "average", "weighted",
                                                               "centroid", "median", "ward"]), default=None,
              help="[default: average].")
@click.option("--threshold", cls=MethodOption, type=FloatIn(0), default=None,
              help="distance cut (cosine distance, L2 or bits).")
@click.option("--n-clusters", cls=MethodOption, type=click.IntRange(1), default=None,
              help="number of clusters (hierarchical: cut the tree into this many).")
@click.option("--max-memory", cls=MethodOption, default=None,
              help="memory limit, e.g. 8GB [default: 80% of free RAM].")
@click.option("--eps", cls=MethodOption, type=FloatIn(0, lo_open=True), default=None, help="neighbourhood radius.")
@click.option("--min-samples", cls=MethodOption, type=click.IntRange(1), default=None, help="core point density.")
@click.option("--min-cluster-size", cls=MethodOption, type=click.IntRange(2), default=None, help="[default: 2].")
@click.option("--selection-epsilon", cls=MethodOption, type=FloatIn(0), default=None,
              help="cluster_selection_epsilon.")
@click.option("--selection-method", cls=MethodOption, type=click.Choice(["leaf", "eom"]), default=None,
              help="[default: leaf].")
@click.option("-k", "k", cls=MethodOption, type=click.IntRange(1), default=None,
              help="neighbours per image [default: 10].")
@click.option("--index", cls=MethodOption, default=None,
              help="flat (exact), hnsw, or a faiss factory string [default: flat].")
@click.option("--pca", cls=MethodOption, type=click.IntRange(1), default=None,
              help="reduce features to this many dims first.")
@click.option("--ef-search", cls=MethodOption, type=click.IntRange(1), default=None, help="HNSW search breadth.")
@click.option("--seed", cls=MethodOption, type=click.IntRange(0, 2**32 - 1), default=None,
              help="random seed (graph: of the PCA sample; kmeans: of the initial centroids) [default: 0].")
@click.option("--niter", cls=MethodOption, type=click.IntRange(1), default=None,
              help="Lloyd iterations [default: 20].")
@click.option("--sweep", default=None, help="Values of the swept parameter: 0.05,0.1,0.2 or start:stop:step.")
@click.option("--sweep-param", cls=SweepParamOption, default=None, help="Parameter to sweep")
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
@ray_options
def cluster(features: tuple[str, ...], method: str, out: str, overwrite: bool, metric: str | None,
            normalize: bool | None, sweep: str | None, sweep_param: str | None, manifests: tuple[str, ...],
            labels_csv: str | None, exclude: tuple[str, ...], best_by: str, attributes: int, plots: bool,
            mosaics: int, per_setting: bool, quiet: bool, ray: str | None, ray_cpus: int | None,
            ray_actors: int | None, **options: Any) -> None:
    """Cluster the images of one or more FEATURES folders into near-duplicate groups.

    Scores against ground truth (attack manifests or --labels) for each --sweep
    setting and writes OUT/assignments.csv (best setting), OUT/metrics.json and plots.
    With --ray (--method graph), the k-NN search runs on Ray, over index shards held by actors.
    """
    on_ray = ray_config(ray, ray_cpus, ray_actors)
    if on_ray is not None and method != "graph":
        raise UsageError(f"--ray runs the k-NN search of --method graph; --method {method} runs in this process")
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
    from neardup.fastsearch.vectors import canonical_metric

    metric = canonical_metric(metric or ("hamming" if inp.metric == "hamming" else "cosine"))
    options["max_memory"] = parse_bytes(options.get("max_memory"))
    values = parse_sweep(sweep)
    params = method_params(method, metric, options, values is not None)
    if on_ray is not None:
        params["ray"] = on_ray.to_dict()
    X = inp.features
    if normalize:
        if X.dtype == np.uint8:
            raise UsageError("--normalize applies to float features, not binary hashes")
        from neardup.fastsearch.vectors import l2_normalize

        X = l2_normalize(X)
    if manifests and labels_csv:
        raise UsageError("give --manifest or --labels, not both")
    truth = None
    if labels_csv:
        truth = truth_from_labels(inp.ids, inp.paths, labels_csv)
    else:
        found: list[str | os.PathLike] = [*manifests] or [*default_manifests(inp)]
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
