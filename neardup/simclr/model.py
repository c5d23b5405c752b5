"""Encoder (from the extractor registry) + a task's head (SimCLR's: lightly's), freezing, and encoder export."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

import neardup._compat  # noqa: F401
from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor
from neardup.extract.registry import ModelCfg, create_extractor
from neardup.io_utils import atomic_write

EXPORT_FORMAT = "neardup.finetuned/1"


class EncoderWithHead(torch.nn.Module):
    """An encoder and the head a training task puts on it; forward returns (features h, embeddings z).

    Only the encoder is kept after training (exported for extraction); the head serves the loss.
    """

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 3, H, W) images. Returns h (B, D) backbone features and z = head(h)."""
        h = self.encoder(x)
        return h, self.head(h)


def simclr_head(num_features: int, proj_dim: int = 128, head_layers: int = 2) -> torch.nn.Module:
    """lightly's SimCLR projection head: ``head_layers`` 2 is SimCLR v1's, 3 is v2's (Chen et al. 2020)."""
    from lightly.models.modules.heads import SimCLRProjectionHead

    if head_layers not in (2, 3):
        raise UsageError("--head-layers must be 2 (SimCLR v1) or 3 (SimCLR v2)")
    return SimCLRProjectionHead(input_dim=num_features, hidden_dim=num_features, output_dim=proj_dim,
                                num_layers=head_layers)


class SimCLRModel(EncoderWithHead):
    """The encoder with a SimCLR projection head: backbone features h -> projection z."""

    def __init__(self, encoder: torch.nn.Module, num_features: int, proj_dim: int = 128, head_layers: int = 2):
        super().__init__(encoder, simclr_head(num_features, proj_dim, head_layers))


def load_encoder(model: str, weights: str | None) -> tuple[torch.nn.Module, ModelCfg]:
    """The registry's feature network for ``model`` (CPU, float32) and its config."""
    ext = create_extractor(model, weights=weights, device="cpu")
    if not isinstance(ext, TorchExtractor):
        raise UsageError(f"{model} is not a trainable network (perceptual hashes have no weights)")
    return ext.model, ext.cfg


def stages(encoder: torch.nn.Module) -> list[list[torch.nn.Module]]:
    """The encoder's stages in input order (stem first), for freezing early layers.

    The layout is the one its registry entry names (``ModelCfg.stages``), recorded on the network
    when the registry built it; ``[]`` for networks whose entry names none (Inception v3, ViT).
    """
    from neardup.extract.base import stage_modules

    return stage_modules(encoder)


def freeze_stages(encoder: torch.nn.Module, n: int) -> int:
    """Stop gradients through the stem and the first ``n`` stages; returns the frozen parameter count.

    On a CPU this also skips their backward pass, which dominates the step time
    (depthwise convolutions): freezing 3 of EfficientNet-Lite0's 7 stages halves it.
    """
    if n <= 0:
        return 0
    st = stages(encoder)
    if not st:
        raise UsageError(f"--freeze-stages: no known stage layout in {type(getattr(encoder, 'net', encoder)).__name__}")
    if n >= len(st):
        raise UsageError(f"--freeze-stages {n}: the encoder has only {len(st) - 1} stages after the stem")
    count = 0
    for group in st[: n + 1]:
        for m in group:
            for p in m.parameters():
                p.requires_grad_(False)
                count += p.numel()
    return count


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Keep BN running statistics fixed (eval mode) while the rest trains: small CPU batches
    would otherwise overwrite ImageNet statistics with noisy ones."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def export_encoder(path: str | Path, encoder: torch.nn.Module, cfg: ModelCfg,
                   extra: dict[str, Any] | None = None) -> None:
    """Write an encoder that `neardup extract --model finetuned --weights PATH` loads (weights_only-safe)."""
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    blob = {"format": EXPORT_FORMAT, "base_model": cfg.name, "input_size": cfg.input_size,
            "resize_size": cfg.resize_size, "num_features": cfg.num_features, "state_dict": state, **(extra or {})}
    if cfg.fit != "crop":  # files of crop models keep their old layout
        blob["fit"] = cfg.fit
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
