"""``neardup extract`` and ``neardup models``: features of images with any registered model."""

from __future__ import annotations

import json
from typing import Any

import click

from neardup.cli._common import config_option, default_help, save_config
from neardup.cli._ray import ray_config, ray_options
from neardup.extract.config import ExtractConfig
from neardup.extract.registry import ENGINES

_D = ExtractConfig()



@click.command()
@click.argument("images", type=click.Path())
@config_option
@click.option("--model", default=None, help=f"A name from `neardup models`. {default_help(_D.model)}")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output feature folder.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None, help="Checkpoint file for the model.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help=default_help(_D.batch_size))
@click.option("--workers", type=click.IntRange(0, 256), default=None, help="Decoding processes [default: cores - 1].")
@click.option("--device", default=None, help=f"auto, cpu or cuda[:N]. {default_help(_D.device)}")
@click.option("--amp", type=click.Choice(["auto", "off", "fp16", "bf16"]), default=None,
              help=f"Mixed precision (auto: bf16 on GPU, off on CPU). {default_help(_D.amp)}")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="auto: ONNX Runtime on CPU when its export matches PyTorch within 1e-4. onnx-int8: its int8 "
                   "graph (static quantisation; faster, features close to fp32 but in their own space: search "
                   f"them only against int8 features of the same calibration). {default_help(_D.engine)}")
@click.option("--calibration", type=click.Path(exists=True), default=None,
              help="Images (folder or list file; up to 64 used) that calibrate --engine onnx-int8 "
                   "[default: photos bundled with scikit-image].")
@click.option("--input-size", type=click.IntRange(16, 2048), default=None,
              help="Override the model's crop size (networks only; the resize keeps the model's ratio).")
@click.option("--compile", "compile_", is_flag=True, default=None,
              help="torch.compile the model (PyTorch engine; for long GPU runs).")
@click.option("--layer", default=None, help="Feature layer, for models that offer several (SimCLR v2: backbone, "
              "head0, head1, head2) [default: backbone].")
@click.option("--shard-size", type=click.IntRange(1), default=None, help=default_help(_D.shard_size))
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default=None, help=default_help(_D.dtype))
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Keep only files matching this pattern relative to IMAGES (e.g. '**/*.jpg'). Repeatable.")
@click.option("--max-pixels", type=click.IntRange(1), default=None,
              help=f"Skip larger images (decompression-bomb guard). {default_help(_D.max_pixels)}")
@click.option("--normalize", is_flag=True, default=None,
              help="Store an L2-normalisation transform (applied when read).")
@click.option("--whiten", type=click.IntRange(1), default=None, metavar="DIM",
              help="Fit L2 + PCA whitening to DIM dimensions on a sample, stored and applied when read.")
@click.option("--whiten-sample", type=click.IntRange(2), default=None, help=default_help(_D.whiten_sample))
@click.option("--transform-from", type=click.Path(file_okay=False), default=None,
              help="Apply the transform fitted on another feature folder (extract queries like their database).")
@click.option("--overwrite", is_flag=True, default=None,
              help="Start over: remove this command's earlier output in --out (shards, meta.json, job.json, ...). "
                   "Files neardup did not write are never removed.")
@ray_options
def extract(images: str, model: str | None, out: str, weights: str | None, batch_size: int | None,
            workers: int | None, device: str | None, amp: str | None, engine: str | None, calibration: str | None,
            input_size: int | None,
            compile_: bool | None, layer: str | None, shard_size: int | None, dtype: str | None,
            globs: tuple[str, ...], max_pixels: int | None, normalize: bool | None, whiten: int | None,
            whiten_sample: int | None, transform_from: str | None, overwrite: bool | None, ray: str | None,
            ray_cpus: int | None, ray_actors: int | None) -> None:
    """Extract features of IMAGES (a folder, a text file of paths, or a manifest.csv) into --out.

    Re-running the same command after an interruption resumes where it stopped (also with --ray: Ray Data
    decodes on CPU tasks and encodes on an actor pool, one GPU per actor when the cluster has GPUs).
    """
    from neardup.extract.pipeline import extract_features

    on_ray = ray_config(ray, ray_cpus, ray_actors)

    given: dict[str, Any] = {
        "model": model, "weights": weights, "batch_size": batch_size, "workers": workers, "device": device,
        "amp": amp, "engine": engine, "calibration": calibration, "input_size": input_size, "layer": layer,
        "compile": compile_,
        "shard_size": shard_size, "dtype": dtype, "globs": tuple(globs) or None, "max_pixels": max_pixels,
        "normalize": normalize, "whiten": whiten, "whiten_sample": whiten_sample,
        "transform_from": transform_from, "overwrite": overwrite}
    config = ExtractConfig(**{k: v for k, v in given.items() if v is not None})
    # config.yaml: the resolved options under their option names, so --config can repeat the run
    params = {"images": images, **{"glob" if k == "globs" else k: v for k, v in config.to_dict().items()
                                   if k not in ("workers", "overwrite")}}
    report = extract_features(images, out, config, write_config=lambda folder: save_config(folder, "extract", params),
                              ray=on_ray)
    resumed = f", resumed after {report.resumed_shards} shard(s)" if report.resumed_shards else ""
    click.echo(f"{report.count} images -> {out} ({report.model}, {report.images_per_s:.1f} img/s{resumed}); "
               f"{len(report.skipped)} skipped")
    for s in report.skipped[:20]:
        click.echo(f"skipped {s['path']}: {s['reason']}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"... {len(report.skipped) - 20} more in {out}/meta.json", err=True)
    for p in report.input_problems:
        click.echo(f"not searched {p['path']}: {p['reason']}", err=True)


@click.command()
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
    size = f"squash {c.input_size}" if c.fit == "squash" else f"{c.resize_size}/{c.input_size}"
    return f"{size} {c.interpolation} {norm}"
