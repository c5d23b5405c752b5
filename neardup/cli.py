"""The ``neardup`` command line: a thin layer over library functions.

Each command builds its arguments, calls one library function, and writes the
resolved settings (``config.yaml``) beside its outputs. ``--config FILE.yaml``
supplies any option; flags given on the command line override it. Bad input
ends with one ``Error: ...`` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from neardup import __version__
from neardup.errors import UsageError
from neardup.io_utils import atomic_write_json, atomic_write_text


class NeardupGroup(click.Group):
    """Turns library UsageErrors (and a few predictable OS errors) into one-line CLI errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted (finished shards and files are kept; re-run to resume)", err=True)
            sys.exit(130)
        except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            raise click.ClickException(f"{exc.strerror}: {exc.filename}") from None


def _load_yaml_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Eager ``--config``: the YAML's keys become option defaults, so explicit flags still win."""
    if not value:
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"file not found: {path}", ctx=ctx, param=param)
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"bad YAML: {str(exc).splitlines()[0]}", ctx=ctx, param=param) from None
    if not isinstance(data, dict):
        raise click.BadParameter("the YAML must be a mapping of option names to values", ctx=ctx, param=param)
    # keys may be parameter names or option names (e.g. 'format' for --format -> fmt); the metadata
    # that save_config adds is skipped, so any saved config.yaml can be fed back with --config
    alias = {}
    for p in ctx.command.params:
        alias[p.name] = p.name
        for opt in getattr(p, "opts", []):
            alias[opt.lstrip("-").replace("-", "_")] = p.name
    data = {str(k).replace("-", "_"): v for k, v in data.items() if k not in ("command", "neardup_version")}
    unknown = sorted(k for k in data if k not in alias)
    if unknown:
        raise click.BadParameter(f"unknown keys {unknown}; valid: {sorted(set(alias) - {'config'})}", ctx=ctx, param=param)
    data = {alias[k]: v for k, v in data.items()}
    ctx.default_map = {**(ctx.default_map or {}), **data}
    return value


config_option = click.option("--config", "config", type=click.Path(dir_okay=False), callback=_load_yaml_config,
                             is_eager=True, expose_value=False,
                             help="YAML file of option values (keys as option names); flags override it.")


def save_config(out_dir: str | Path, command: str, params: dict[str, Any]) -> None:
    """Write the resolved options beside a command's outputs, so any run can be repeated."""
    clean = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    atomic_write_text(Path(out_dir) / "config.yaml",
                      yaml.safe_dump({"command": command, "neardup_version": __version__, **clean}, sort_keys=False))


@click.group(cls=NeardupGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="neardup")
def main() -> None:
    """Find near-duplicate images: generate attacks, extract features, search and cluster."""


# --------------------------------------------------------------------------- attack
@main.command()
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


# --------------------------------------------------------------------------- extract / models
@main.command()
@click.argument("images", type=click.Path())
@config_option
@click.option("--model", default="efficientnet_lite0", show_default=True, help="A name from `neardup models`.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output feature folder.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint file for the model.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(0), default=None, help="Decoding processes [default: cores - 1].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--amp", type=click.Choice(["auto", "off", "fp16", "bf16"]), default="auto", show_default=True,
              help="Mixed precision (auto: bf16 on GPU, off on CPU).")
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="auto: ONNX Runtime on CPU when its export matches PyTorch within 1e-4.")
@click.option("--input-size", type=click.IntRange(16), default=None, help="Override the model's crop size.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (PyTorch engine; for long GPU runs).")
@click.option("--layer", default=None, help="Feature layer, for models that offer several (SimCLR v2: backbone, "
              "head0, head1, head2) [default: backbone].")
@click.option("--shard-size", type=click.IntRange(1), default=10000, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Keep only files matching this pattern relative to IMAGES (e.g. '**/*.jpg'). Repeatable.")
@click.option("--max-pixels", type=click.IntRange(1), default=None,
              help="Skip larger images (decompression-bomb guard) [default: 178956970].")
@click.option("--normalize", is_flag=True, help="Store an L2-normalisation transform (applied when read).")
@click.option("--whiten", type=click.IntRange(1), default=None, metavar="DIM",
              help="Fit L2 + PCA whitening to DIM dimensions on a sample, stored and applied when read.")
@click.option("--whiten-sample", type=click.IntRange(2), default=100_000, show_default=True)
@click.option("--transform-from", type=click.Path(file_okay=False), default=None,
              help="Apply the transform fitted on another feature folder (extract queries like their database).")
@click.option("--overwrite", is_flag=True, help="Discard an existing output and start over.")
def extract(images: str, model: str, out: str, weights: str | None, batch_size: int, workers: int | None,
            device: str, amp: str, engine: str, input_size: int | None, compile_: bool, layer: str | None,
            shard_size: int, dtype: str,
            globs: tuple[str, ...], max_pixels: int | None, normalize: bool, whiten: int | None, whiten_sample: int,
            transform_from: str | None, overwrite: bool) -> None:
    """Extract features of IMAGES (a folder, a text file of paths, or a manifest.csv) into --out.

    Re-running the same command after an interruption resumes where it stopped.
    """
    from neardup.extract.pipeline import extract_features

    report = extract_features(images, out, model, weights=weights, batch_size=batch_size, workers=workers,
                              device=device, amp=amp, engine=engine, input_size=input_size, layer=layer, compile=compile_,
                              shard_size=shard_size,
                              dtype=dtype, overwrite=overwrite, globs=globs, normalize=normalize, whiten=whiten,
                              whiten_sample=whiten_sample, transform_from=transform_from,
                              **({"max_pixels": max_pixels} if max_pixels else {}))
    save_config(out, "extract", {"images": images, "model": model, "weights": weights, "batch_size": batch_size,
                                 "device": device, "amp": amp, "engine": engine, "input_size": input_size, "layer": layer,
                                 "compile": compile_,
                                 "shard_size": shard_size, "dtype": dtype, "glob": list(globs),
                                 "max_pixels": max_pixels, "normalize": normalize, "whiten": whiten,
                                 "whiten_sample": whiten_sample, "transform_from": transform_from})
    resumed = f", resumed after {report.resumed_shards} shard(s)" if report.resumed_shards else ""
    click.echo(f"{report.count} images -> {out} ({report.model}, {report.images_per_s:.1f} img/s{resumed}); "
               f"{len(report.skipped)} skipped")
    for s in report.skipped[:20]:
        click.echo(f"skipped {s['path']}: {s['reason']}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"... {len(report.skipped) - 20} more in {out}/meta.json", err=True)
    for p in report.input_problems:
        click.echo(f"not searched {p['path']}: {p['reason']}", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-params", is_flag=True, help="Skip counting parameters (counted on the meta device, a few seconds).")
def models(as_json: bool, no_params: bool) -> None:
    """List every registered model: dimension, parameters, preprocessing, weights and whether they are here."""
    from neardup.extract.registry import list_models
    from neardup.extract.zoo_info import model_rows

    rows = model_rows(with_params=not no_params)
    if as_json:
        dicts = {c.name: c.to_dict() for c in list_models()}
        click.echo(json.dumps([{**dicts[r["name"]], **r} for r in rows], indent=2))
        return
    cfgs = {c.name: c for c in list_models()}
    w = max(len(r["name"]) for r in rows) + 1
    click.echo(f"{'name':<{w}} {'dim':>5} {'params':>7} {'local':<5} {'input':<24} weights")
    for r in rows:
        params = "-" if r["params"] is None else f"{r['params']:.1f}M"
        dim = str(r["dim"]) if r["dim"] else "base"
        click.echo(f"{r['name']:<{w}} {dim:>5} {params:>7} {'yes' if r['found_locally'] else 'no':<5} "
                   f"{_input_summary(cfgs[r['name']]):<24} {r['weights_format']}")


def _input_summary(c: Any) -> str:
    """e.g. '256/224 bicubic imagenet': resize/crop, interpolation, normalisation."""
    if c.kind != "torch":
        return "-"
    norm = {((0.0,) * 3, (1.0,) * 3): "[0,1]", ((0.5,) * 3, (0.5,) * 3): "[-1,1]"}.get(
        (tuple(c.mean), tuple(c.std)), "imagenet" if tuple(c.mean) == (0.485, 0.456, 0.406) else "custom")
    return f"{c.resize_size}/{c.input_size} {c.interpolation} {norm}"


# --------------------------------------------------------------------------- search
@main.group(cls=NeardupGroup)
def search() -> None:
    """Nearest-neighbour retrieval of queries against a database of features."""


def retrieval_set_options(fn: Any) -> Any:
    """--database/--queries/--distractors/--manifest: the inputs of every retrieval evaluation."""
    for opt in reversed([
        click.option("--database", required=True, type=click.Path(), help="Feature folder of the original images."),
        click.option("--queries", required=True, type=click.Path(), help="Feature folder of the attacked queries."),
        click.option("--distractors", multiple=True, type=click.Path(), help="Extra feature folders added to the database."),
        click.option("--manifest", type=click.Path(), default=None,
                     help="Ground truth [default: manifest.csv of the folder the queries came from]."),
    ]):
        fn = opt(fn)
    return fn


@search.command("exact")
@config_option
@retrieval_set_options
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default=None,
              help="For float features [default: cosine]; hashes always use hamming.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result JSON here.")
@click.option("--quiet", is_flag=True, help="Do not print the table.")
def search_exact_cmd(database: str, queries: str, distractors: tuple[str, ...], manifest: str | None,
                     metric: str | None, k: int, out: str | None, quiet: bool) -> None:
    """Exact (faiss Flat) search: recall@1/5/10, mAP and µAP, overall and per attack family."""
    from neardup.fastsearch.dataset import load_retrieval_set
    from neardup.fastsearch.exact import evaluate, format_table

    rs = load_retrieval_set(database, queries, distractors, manifest, metric)
    config = {"database": database, "queries": queries, "distractors": list(distractors), "manifest": manifest,
              "metric": rs.metric, "k": k}
    result = evaluate(rs, k=k, config=config)
    if out:
        atomic_write_json(out, result.to_dict())
    if not quiet:
        click.echo(format_table([result]))
    if out:
        click.echo(f"wrote {out}")


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--metric", default="recall@1", show_default=True, help="recall@1|5|10, mAP or muAP.")
def report(results: tuple[str, ...], metric: str) -> None:
    """Print several `search exact` results side by side, per attack family."""
    from neardup.fastsearch.exact import SCHEMA, RetrievalResult, format_table

    loaded = []
    for path in results:
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not JSON ({exc.msg})") from None
        if data.get("schema") != SCHEMA:
            raise UsageError(f"{path}: expected schema {SCHEMA}, got {data.get('schema')!r}")
        loaded.append(RetrievalResult.from_dict(data))
    if metric not in ("mAP", "muAP") and not metric.startswith("recall@"):
        raise UsageError(f"unknown metric {metric!r}; use recall@1, recall@5, recall@10, mAP or muAP")
    click.echo(format_table(loaded, metric))


# --------------------------------------------------------------------------- subpackage commands
# Each subpackage may ship ``commands.py`` with ``register(main, search)`` adding its own commands,
# so the CLI grows without every feature editing this file.
SUBCOMMAND_MODULES = ("neardup.extract.commands", "neardup.fastsearch.commands", "neardup.clustering.commands",
                      "neardup.simclr.commands")


def _register_subcommands() -> None:
    import importlib

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(main, search)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main()
