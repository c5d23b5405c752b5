"""Encoders fine-tuned by `neardup finetune`, loaded from RUN_DIR/best.pt (or any exported epoch).

The file (format ``neardup.finetuned/1``) holds the base model's registry name,
its crop/resize sizes and the encoder state dict; it is read with
``weights_only=True``. The base architecture is built without pretrained
weights, then the state dict is loaded strictly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor
from neardup.extract.registry import MODELS, ModelCfg, get_model_cfg, register_model
from neardup.extract.weights import load_strict, read_checkpoint

FORMAT = "neardup.finetuned/1"


@register_model(ModelCfg(
    name="finetuned", num_features=0, family="finetuned", weights_format=f"{FORMAT} file written by neardup finetune",
    weights_hint="--weights RUN_DIR/best.pt (required)", feature_layer="the base model's feature layer",
    paper="Chen et al., SimCLR, ICML 2020 (NT-Xent fine-tuning on attack views)", license="as the base model"))
def finetuned(cfg: ModelCfg, weights: str | None = None, input_size: int | None = None, **kw: Any) -> TorchExtractor:
    if not weights:
        raise UsageError("--model finetuned needs --weights RUN_DIR/best.pt (from neardup finetune)")
    blob = read_checkpoint(weights)
    if blob.get("format") != FORMAT:
        raise UsageError(f"{weights} is not a neardup fine-tuned encoder (format {blob.get('format')!r}, expected {FORMAT})")
    base = str(blob["base_model"])
    base_cfg = get_model_cfg(base)
    try:
        ext = MODELS[base].builder(base_cfg, pretrained=False, device=kw.get("device"))
    except TypeError:
        raise UsageError(f"fine-tuned {base} encoders cannot be loaded: its builder has no pretrained=False") from None
    load_strict(ext.model, blob["state_dict"], str(weights))
    new_cfg = replace(base_cfg, name=f"finetuned:{base}", family="finetuned",
                      input_size=int(blob.get("input_size", base_cfg.input_size)),
                      resize_size=int(blob.get("resize_size", base_cfg.resize_size)))
    return TorchExtractor(new_cfg, ext.model, **kw)
