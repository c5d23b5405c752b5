"""Encoders fine-tuned by `neardup finetune`, loaded from RUN_DIR/best.pt (or any exported epoch).

The file (format ``neardup.finetuned/1``) holds the base model's registry name,
its crop/resize sizes and the encoder state dict; it is read with
``weights_only=True``. The base model's registry entry builds its bare
architecture (``arch``), then the state dict is loaded strictly.
:func:`load_encoder_file` and :func:`crop_cfg` are shared with ``--model trained``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Unpack

from torch import nn

from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor, empty_model
from neardup.extract.registry import MODELS, ExtractorOptions, ModelCfg, check_input_size, register_model, scaled_resize
from neardup.extract.weights import load_strict, read_checkpoint

FORMAT = "neardup.finetuned/1"


def load_encoder_file(weights: str, fmt: str, what: str) -> tuple[dict[str, Any], nn.Module, ModelCfg]:
    """(the file's record, its encoder with the trained weights, the base config at the file's crop).

    ``fmt`` is the format the file must declare; ``what`` names such files in messages.

    Raises:
        UsageError: another format, an unknown base model, a base without a bare architecture, a state dict
            that does not fit it, or crop sizes that are not integers.
    """
    blob = read_checkpoint(weights)
    if blob.get("format") != fmt:
        raise UsageError(f"{weights} is not {what} (format {blob.get('format')!r}, expected {fmt})")
    base = str(blob.get("base_model"))
    entry = MODELS.get(base)
    if entry is None or entry.cfg.kind != "torch" or not isinstance(blob.get("state_dict"), Mapping):
        raise UsageError(f"{weights}: base model {base!r} is not a registered network, or the file has no state_dict")
    if entry.arch is None:
        raise UsageError(f"{what.removeprefix('a ')}s of {base} cannot be loaded: its registry entry has no bare "
                         f"architecture")
    base_cfg = entry.cfg
    arch = entry.arch
    model = empty_model(lambda: arch(base_cfg))
    load_strict(model, blob["state_dict"], str(weights))
    try:
        sized = replace(base_cfg, input_size=int(blob.get("input_size", base_cfg.input_size)),
                        resize_size=int(blob.get("resize_size", base_cfg.resize_size)),
                        fit=str(blob.get("fit", base_cfg.fit)))
    except (TypeError, ValueError):
        raise UsageError(f"{weights}: input_size/resize_size are not integers") from None
    return blob, model, sized


def crop_cfg(sized: ModelCfg, weights: str, input_size: int | None, resize_size: int | None,
             **changes: Any) -> ModelCfg:
    """The loaded model's config: the file's crop unless ``input_size``/``resize_size`` are given, plus ``changes``.

    Raises:
        UsageError: a crop the network cannot run at.
    """
    if input_size is not None and resize_size is None:
        resize_size = scaled_resize(sized, input_size)
    new_cfg = replace(sized, input_size=sized.input_size if input_size is None else input_size,
                      resize_size=sized.resize_size if resize_size is None else resize_size, **changes)
    check_input_size(new_cfg, "--input-size" if input_size is not None else f"the input size in {weights}")
    return new_cfg


@register_model(ModelCfg(
    name="finetuned", num_features=0, family="finetuned", weights_format=f"{FORMAT} file written by neardup finetune",
    weights_hint="--weights RUN_DIR/best.pt (required)", feature_layer="the base model's feature layer",
    paper="Chen et al., SimCLR, ICML 2020 (NT-Xent fine-tuning on attack views)", license="as the base model",
    extra={"sizes_from_weights": True}))
def finetuned(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None, input_size: int | None = None,
              resize_size: int | None = None, **options: Unpack[ExtractorOptions]) -> TorchExtractor:
    """The base architecture with the fine-tuned state dict; the crop is the file's unless ``input_size`` is given."""
    if not weights:
        raise UsageError("--model finetuned needs --weights RUN_DIR/best.pt (from neardup finetune)")
    blob, model, sized = load_encoder_file(weights, FORMAT, "a neardup fine-tuned encoder")
    new_cfg = crop_cfg(sized, weights, input_size, resize_size, name=f"finetuned:{blob['base_model']}",
                       family="finetuned")
    return TorchExtractor(new_cfg, model, weights_path=str(weights), **options)
