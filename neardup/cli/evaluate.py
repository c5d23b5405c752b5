"""``neardup evaluate-retrieval`` and ``neardup embed-map``: class-level evaluation of a feature space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from neardup.cli._common import config_option, save_config


class EmbedderChoice(click.Choice):
    """``--method`` of embed-map: the registered map methods, read from the registry when first needed."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from neardup.evaluation.embedding import EMBEDDERS

        return tuple(EMBEDDERS)

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns it; the registry is the source
        pass


def label_options(fn: Any) -> Any:
    """--labels / --class-folders / --labels-from-manifest: the three sources of class labels (one at a time)."""
    for opt in reversed([
        click.option("--labels", "labels_csv", type=click.Path(dir_okay=False), default=None,
                     help="CSV with a path column and a label (or class) column; relative paths are relative "
                          "to the CSV."),
        click.option("--class-folders", type=click.Path(file_okay=False), default=None,
                     help="Folder of class folders: every image under DIR/<class>/ has that class."),
        click.option("--labels-from-manifest", "labels_manifest", type=click.Path(), default=None,
                     help="A `neardup attack` output: each source image and its attacked copies form a class."),
    ]):
        fn = opt(fn)
    return fn


@click.command("evaluate-retrieval")
@click.argument("features", type=click.Path())
@config_option
@label_options
@click.option("--queries", type=click.Path(), default=None,
              help="Feature folder of a query set, searched against FEATURES (the labels must cover both). "
                   "[default: leave-one-out within FEATURES]")
@click.option("--protocol", type=click.Choice(["loo", "queries"]), default=None,
              help="loo: each image queries all the others (itself left out; exact duplicates of it stay); "
                   "queries: --queries against FEATURES. [default: queries with --queries, else loo]")
@click.option("--split-classes", "split_seed", type=click.IntRange(0, 2**32 - 1), default=None, metavar="SEED",
              help="Split the classes in half by a shuffle with SEED and evaluate on one half only; the other half "
                   "goes to OUT/train_classes.txt and OUT/train_labels.csv for `neardup train`.")
@click.option("--vote-k", type=click.IntRange(1, 1000), default=None,
              help="Neighbours in the majority vote. [default: 5]")
@click.option("--metric", type=click.Choice(["cosine", "l2", "euclidean", "hamming"]), default=None,
              help="[default: the extractor's: cosine, or hamming for hashes]")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier evaluate-retrieval output (whose files are replaced).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder that holds no evaluate-retrieval output, beside its files.")
@click.option("--confusion-classes", type=click.IntRange(2, 200), default=30, show_default=True,
              help="Classes drawn in the confusion matrices; with more classes, the most confused ones.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Draw the confusion matrices (PNG).")
@click.option("--quiet", is_flag=True, help="No table, no progress bar.")
def evaluate_retrieval_cmd(features: str, labels_csv: str | None, class_folders: str | None,
                           labels_manifest: str | None, queries: str | None, protocol: str | None,
                           split_seed: int | None, vote_k: int | None, metric: str | None, out: str,
                           overwrite: bool, confusion_classes: int, plots: bool, quiet: bool) -> None:
    """Class-level retrieval quality of FEATURES: precision@1/5/10, R-precision, MAP@R, mAP, top-1 and vote accuracy.

    Exact search; per-class table and confusion matrices. Writes OUT/retrieval.json (schema neardup.retrieval/1),
    OUT/per_class.csv, OUT/queries.csv, OUT/confusion_{top1,vote}.{csv,png} and OUT/config.yaml.
    """
    from neardup.data.labels import load_labels
    from neardup.evaluation.inputs import load_retrieval_inputs
    from neardup.evaluation.report import OWNED, write_retrieval
    from neardup.evaluation.retrieval import RetrievalConfig, evaluate_retrieval, format_table
    from neardup.outdir import check_out_dir, claim_out_dir

    cfg = RetrievalConfig(protocol=protocol, metric=metric, split_seed=split_seed,
                          **({"vote_k": vote_k} if vote_k is not None else {}))
    cfg.validate(has_queries=queries is not None)
    check_out_dir(out, "evaluate-retrieval", overwrite=overwrite, owned=OWNED)  # before any work
    labels = load_labels(labels=labels_csv, class_folders=class_folders, manifest=labels_manifest)
    inp = load_retrieval_inputs(features, labels, queries, cfg.split_seed)
    output = evaluate_retrieval(inp.data, cfg, show_progress=not quiet, inputs=inp.inputs, split=inp.split)
    params = {"features": features, "labels": labels_csv, "class_folders": class_folders,
              "labels_from_manifest": labels_manifest, "queries": queries, "protocol": cfg.protocol,
              "split_classes": split_seed, "vote_k": cfg.vote_k, "metric": output.result.metric,
              "confusion_classes": confusion_classes, "plots": plots}
    output.result.config = {**output.result.config, **params}
    own = check_out_dir(out, "evaluate-retrieval", overwrite=overwrite, owned=OWNED)
    with claim_out_dir(out, "evaluate-retrieval", overwrite=overwrite or own, owned=OWNED):
        write_retrieval(out, output, inp.data, inp.split, labels, plots=plots, max_classes=confusion_classes)
        save_config(out, "evaluate-retrieval", params)
    if not quiet:
        click.echo(format_table(output.result))
    if inp.split is not None:
        click.echo(f"class split (seed {split_seed}): evaluated on {len(inp.split.eval)} classes; "
                   f"{len(inp.split.train)} to train on -> {Path(out) / 'train_classes.txt'}, "
                   f"{Path(out) / 'train_labels.csv'}")
    click.echo(f"wrote {Path(out) / 'retrieval.json'}")


@click.command("embed-map")
@click.argument("features", type=click.Path())
@config_option
@label_options
@click.option("--method", default="tsne", show_default=True,
              type=EmbedderChoice(), help="tsne (openTSNE) or umap (needs: pip install umap-learn).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output folder: new, empty, or an earlier embed-map output (whose files are replaced).")
@click.option("--overwrite", is_flag=True,
              help="Write into a non-empty folder that holds no embed-map output, beside its files.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Random state: the same seed gives the same map.")
@click.option("--perplexity", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              help="tsne: effective number of neighbours (lowered for few images).")
@click.option("--n-neighbors", type=click.IntRange(2), default=15, show_default=True,
              help="umap: neighbourhood size.")
@click.option("--metric", type=click.Choice(["cosine", "l2", "euclidean", "hamming"]), default=None,
              help="[default: the extractor's: cosine, or hamming for hashes]")
@click.option("--thumbnails", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Draw this many images (read from the feature folder's paths) at spread-out points.")
def embed_map_cmd(features: str, labels_csv: str | None, class_folders: str | None, labels_manifest: str | None,
                  method: str, out: str, overwrite: bool, seed: int, perplexity: float, n_neighbors: int,
                  metric: str | None, thumbnails: int) -> None:
    """A 2-d map (t-SNE or UMAP) of FEATURES coloured by class: OUT/map.png, OUT/map.pdf, OUT/embedding.csv.

    Labels are optional (without them every point has one colour).
    """
    from neardup.data.labels import load_labels
    from neardup.evaluation.embedding import OWNED, EmbedConfig, embed, write_map
    from neardup.evaluation.inputs import absolute_paths
    from neardup.extract.store import FeatureStore
    from neardup.outdir import check_out_dir, claim_out_dir

    cfg = EmbedConfig(method=method, seed=seed, perplexity=perplexity, n_neighbors=n_neighbors, metric=metric,
                      thumbnails=thumbnails).validate()
    check_out_dir(out, "embed-map", overwrite=overwrite, owned=OWNED)
    store = FeatureStore.open(features)
    paths = absolute_paths(store)
    classes = None
    if labels_csv or class_folders or labels_manifest:
        labels = load_labels(labels=labels_csv, class_folders=class_folders, manifest=labels_manifest)
        classes = labels.for_paths(paths)
    xy = embed(store.features(), cfg, store.metric)
    applied = ", ".join(f"{k} {v:g}" for k, v in cfg.applied.items())
    title = f"{method} of {len(xy)} {store.model} features ({cfg.metric or store.metric}; {applied}; seed {seed})"
    params = {"features": features, "labels": labels_csv, "class_folders": class_folders,
              "labels_from_manifest": labels_manifest, "method": method, "seed": seed, "perplexity": perplexity,
              "n_neighbors": n_neighbors, "metric": cfg.metric or store.metric, "thumbnails": thumbnails}
    own = check_out_dir(out, "embed-map", overwrite=overwrite, owned=OWNED)
    with claim_out_dir(out, "embed-map", overwrite=overwrite or own, owned=OWNED):
        written = write_map(out, xy, paths, classes, title, thumbnails, seed)
        save_config(out, "embed-map", params)
    n_classes = len(set(classes)) if classes is not None else 0
    click.echo(f"{method} map of {len(xy)} images" + (f", {n_classes} classes" if classes else "") + " -> "
               + ", ".join(str(p) for p in written[1:]))
