"""Encoders fine-tuned by `neardup finetune`, loaded from RUN_DIR/best.pt (or any exported epoch).

The file (format ``neardup.finetuned/1``) holds the base model's registry name,
its crop/resize sizes and the encoder state dict; it is read with
``weights_only=True``. The base model's registry entry builds its bare
architecture (``arch``), then the state dict is loaded strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Unpack

from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor, empty_model
from neardup.extract.registry import MODELS, ExtractorOptions, ModelCfg, check_input_size, register_model, scaled_resize
from neardup.extract.weights import load_strict, read_checkpoint

FORMAT = "neardup.finetuned/1"


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
    blob = read_checkpoint(weights)
    if blob.get("format") != FORMAT:
        raise UsageError(f"{weights} is not a neardup fine-tuned encoder (format {blob.get('format')!r}, "
                         f"expected {FORMAT})")
    base = str(blob.get("base_model"))
    entry = MODELS.get(base)
    if entry is None or entry.cfg.kind != "torch" or not isinstance(blob.get("state_dict"), Mapping):
        raise UsageError(f"{weights}: base model {base!r} is not a registered network, or the file has no state_dict")
    if entry.arch is None:
        raise UsageError(f"fine-tuned {base} encoders cannot be loaded: its registry entry has no bare architecture")
    base_cfg = entry.cfg
    arch = entry.arch
    model = empty_model(lambda: arch(base_cfg))
    load_strict(model, blob["state_dict"], str(weights))
    try:
        trained = replace(base_cfg, input_size=int(blob.get("input_size", base_cfg.input_size)),
                          resize_size=int(blob.get("resize_size", base_cfg.resize_size)))
    except (TypeError, ValueError):
        raise UsageError(f"{weights}: input_size/resize_size are not integers") from None
    if input_size is not None and resize_size is None:
        resize_size = scaled_resize(trained, input_size)
    new_cfg = replace(trained, name=f"finetuned:{base}", family="finetuned",
                      input_size=trained.input_size if input_size is None else input_size,
                      resize_size=trained.resize_size if resize_size is None else resize_size)
    check_input_size(new_cfg, "--input-size" if input_size is not None else f"the input size in {weights}")
    return TorchExtractor(new_cfg, model, weights_path=str(weights), **options)
