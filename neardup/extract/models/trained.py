"""Encoders trained with labels by `neardup train`, with their embedding head (``--model trained --weights FILE``).

The file (format ``neardup.trained/1``) is a ``neardup.finetuned/1`` record (base model name, crop, encoder
state dict) plus the embedding head: ``embed_dim``, ``head_layers`` and ``head_state_dict``. It is read with
``weights_only=True``; the base model's bare architecture and the head are built, then both state dicts are
loaded strictly. The features are the head's L2-normalised embeddings (``num_features = embed_dim``), the
space the metric-learning loss shaped. The feature space records the file's sha256 (as for every
``--weights``), so features of two different runs are never mixed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import nn

from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor
from neardup.extract.models.finetuned import crop_cfg, load_encoder_file
from neardup.extract.registry import ExtractorOptions, ModelCfg, register_model
from neardup.extract.weights import load_strict
from neardup.io_utils import atomic_write

FORMAT = "neardup.trained/1"
#: the head's depth: 1 = one linear layer (BINDER, MedSim), 2 = linear, ReLU, linear
HEAD_LAYERS = (1, 2)


class EmbeddingHead(nn.Module):
    """Encoder features (B, D) -> L2-normalised embeddings (B, embed_dim).

    One linear layer (FaceNet's and BINDER's embedding layer) or, with ``layers=2``, a hidden ReLU layer of
    width D first. The output lies on the unit sphere, where cosine and Euclidean rankings agree.
    """

    def __init__(self, num_features: int, embed_dim: int = 128, layers: int = 1):
        super().__init__()
        if layers not in HEAD_LAYERS:
            raise UsageError(f"--head-layers must be 1 or 2, got {layers}")
        if embed_dim < 1 or num_features < 1:
            raise UsageError(f"--embed-dim must be >= 1, got {embed_dim}")
        mods: list[nn.Module] = []
        if layers == 2:
            mods += [nn.Linear(num_features, num_features), nn.ReLU(inplace=True)]
        mods.append(nn.Linear(num_features, embed_dim))
        self.net = nn.Sequential(*mods)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, D) features. Returns (B, embed_dim) unit-length embeddings (float32 under autocast too)."""
        return F.normalize(self.net(h).float(), dim=1)


class EmbeddingNet(nn.Module):
    """Encoder then embedding head: images (B, 3, H, W) -> (B, embed_dim) embeddings, as extraction runs it."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def base_name(model: str) -> str:
    """The registry name of the architecture under ``model``: a fine-tuned ``finetuned:X`` encoder is X's."""
    return model.rsplit(":", 1)[-1]


def export_trained(path: str | Path, encoder: nn.Module, head: EmbeddingHead, cfg: ModelCfg,
                   extra: dict[str, Any] | None = None) -> None:
    """Write encoder + head that `neardup extract --model trained --weights PATH` loads (weights_only-safe, atomic).

    ``cfg`` is the encoder's config; its crop (``input_size``/``resize_size``) becomes the model's default crop.
    """
    linear = [m for m in head.net if isinstance(m, nn.Linear)]
    blob = {"format": FORMAT, "base_model": base_name(cfg.name), "input_size": cfg.input_size,
            "resize_size": cfg.resize_size, "num_features": linear[-1].out_features,
            "encoder_features": linear[0].in_features, "embed_dim": linear[-1].out_features,
            "head_layers": len(linear),
            "state_dict": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
            "head_state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}, **(extra or {})}
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


@register_model(ModelCfg(
    name="trained", num_features=0, family="finetuned", weights_format=f"{FORMAT} file written by neardup train",
    weights_hint="--weights RUN_DIR/best.pt (required)",
    feature_layer="the L2-normalised embedding head on the base model's features",
    paper="deep metric learning with class labels (pytorch-metric-learning losses and miners)",
    license="as the base model", extra={"sizes_from_weights": True}))
def trained(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None, input_size: int | None = None,
            resize_size: int | None = None, **options: Unpack[ExtractorOptions]) -> TorchExtractor:
    """The base architecture and the embedding head with their trained state dicts; the crop is the file's unless
    ``input_size`` is given."""
    if not weights:
        raise UsageError("--model trained needs --weights RUN_DIR/best.pt (from neardup train)")
    blob, encoder, sized = load_encoder_file(weights, FORMAT, "a neardup trained model")
    try:
        dim, layers, width = int(blob["embed_dim"]), int(blob["head_layers"]), int(blob["encoder_features"])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"{weights}: damaged head record (embed_dim, head_layers, encoder_features)") from None
    if not isinstance(blob.get("head_state_dict"), Mapping) or layers not in HEAD_LAYERS or dim < 1:
        raise UsageError(f"{weights}: damaged head record (head_state_dict, head_layers, embed_dim)")
    if width != sized.num_features:
        raise UsageError(f"{weights}: its head takes {width}-d features but {blob['base_model']} gives "
                         f"{sized.num_features}-d")
    head = EmbeddingHead(width, dim, layers)
    load_strict(head, blob["head_state_dict"], f"{weights} (head)")
    new_cfg = crop_cfg(sized, weights, input_size, resize_size, name=f"trained:{blob['base_model']}",
                       family="trained", num_features=dim,
                       feature_layer=f"L2-normalised {dim}-d embedding head on {sized.feature_layer or 'features'}",
                       stages=tuple(tuple(f"encoder.{p}" for p in group) for group in sized.stages))
    return TorchExtractor(new_cfg, EmbeddingNet(encoder, head).eval(), weights_path=str(weights), **options)
