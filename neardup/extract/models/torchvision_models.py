"""Supervised torchvision backbones, loaded from a user's file or torch's hub cache.

Nothing is ever downloaded: with no ``--weights`` and no cached file, building
fails at once with a message saying where to put the file.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor
from neardup.extract.registry import ModelCfg, register_model
from neardup.extract.weights import find_in_hub_cache, hub_cache_dir, load_strict, read_checkpoint

# file names torchvision's weight enums download to (V2 first, then V1)
HUB_FILES = {
    "resnet50": ["resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"],
    "resnet101": ["resnet101-cd907fc2.pth", "resnet101-63fe2227.pth"],
    "resnet152": ["resnet152-f82ba261.pth", "resnet152-394f9c45.pth"],
}


def resolve_weights(name: str, weights: str | None) -> str:
    if weights:
        return weights
    cached = find_in_hub_cache(HUB_FILES.get(name, []))
    if cached is None:
        raise UsageError(f"no weights for {name}: pass --weights FILE (a torchvision state dict) or put "
                         f"{HUB_FILES[name][0]} in {hub_cache_dir()} (neardup never downloads)")
    return str(cached)


def build_classifier_backbone(arch: Callable[..., torch.nn.Module], weights_path: str) -> torch.nn.Module:
    """torchvision model with its published state dict loaded strictly, classifier swapped for identity."""
    net = arch(weights=None)
    sd = read_checkpoint(weights_path)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    load_strict(net, sd, weights_path)
    net.fc = torch.nn.Identity()
    return net


def _register_resnet(name: str, dim: int) -> None:
    cfg = ModelCfg(name=name, num_features=dim, family="torchvision", weights_format="torchvision state dict (.pth)",
                   weights_hint=f"--weights FILE or {HUB_FILES[name][0]} in torch's hub cache",
                   feature_layer="global average pool (fc replaced by identity)",
                   paper="He et al., Deep Residual Learning, CVPR 2016", license="BSD-3-Clause (torchvision)")

    @register_model(cfg)
    def build(cfg: ModelCfg, weights: str | None = None, **kw: Any) -> TorchExtractor:
        import torchvision.models as tvm

        return TorchExtractor(cfg, build_classifier_backbone(getattr(tvm, name), resolve_weights(name, weights)), **kw)


for _name in HUB_FILES:
    _register_resnet(_name, 2048)
