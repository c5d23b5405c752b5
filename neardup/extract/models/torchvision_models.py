"""Supervised torchvision backbones, loaded from a user's file or torch's hub cache.

Nothing is ever downloaded: with no ``--weights`` and no cached file, building
fails at once with a message saying where to put the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Unpack

import torch

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor
from neardup.extract.registry import RESNET_STAGES, ExtractorOptions, ModelCfg, register_model
from neardup.extract.weights import find_in_hub_cache, hub_cache_dir, load_strict, read_checkpoint

# file names torchvision's weight enums download to (V2 first, then V1)
HUB_FILES = {
    "resnet50": ["resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"],
    "resnet101": ["resnet101-cd907fc2.pth", "resnet101-63fe2227.pth"],
    "resnet152": ["resnet152-f82ba261.pth", "resnet152-394f9c45.pth"],
}


#: torchvision EfficientNets: the stem conv, then the seven MBConv stages (features.8, the head conv, stays trainable)
EFFICIENTNET_STAGES = tuple((f"features.{i}",) for i in range(8))


def resolve_weights(name: str, weights: str | None) -> str:
    if weights:
        return weights
    cached = find_in_hub_cache(HUB_FILES.get(name, []))
    if cached is None:
        raise UsageError(f"no weights for {name}: pass --weights FILE (a torchvision state dict) or put "
                         f"{HUB_FILES[name][0]} in {hub_cache_dir()} (neardup never downloads)")
    return str(cached)


def build_classifier_backbone(arch: Callable[..., torch.nn.Module], weights_path: str | None, head: str = "fc",
                              **arch_kw: Any) -> torch.nn.Module:
    """torchvision model with its published state dict loaded strictly, classifier ``head`` swapped for identity.

    The network is built on the meta device and allocated empty: every tensor is then
    overwritten by the strict load, so no time goes into a random init. With no
    ``weights_path`` the architecture is randomly initialised (for loading fine-tuned encoders).
    """
    if weights_path is None:
        net = arch(weights=None, **arch_kw)
        setattr(net, head, torch.nn.Identity())
        return net
    sd = read_checkpoint(weights_path)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    with torch.device("meta"):
        net = arch(weights=None, **arch_kw)
    net = net.to_empty(device="cpu")
    load_strict(net, sd, weights_path)
    setattr(net, head, torch.nn.Identity())
    return net


def _arch(name: str, head: str = "fc", **arch_kw: Any) -> Callable[[ModelCfg], torch.nn.Module]:
    """The registry's bare architecture: torchvision's network, random weights, classifier ``head`` removed."""

    def arch(cfg: ModelCfg) -> torch.nn.Module:
        import torchvision.models as tvm

        return build_classifier_backbone(getattr(tvm, name), None, head, **arch_kw)

    return arch


def _register_resnet(name: str, dim: int) -> None:
    # torchvision's IMAGENET1K_V1 evaluation transform: resize 256 (bilinear), crop 224
    cfg = ModelCfg(name=name, num_features=dim, family="torchvision", interpolation="bilinear",
                   weights_format="torchvision state dict (.pth)",
                   weights_hint=f"--weights FILE or {HUB_FILES[name][0]} in torch's hub cache",
                   feature_layer="global average pool (fc replaced by identity)",
                   paper="He et al., Deep Residual Learning, CVPR 2016", license="BSD-3-Clause (torchvision)",
                   stages=RESNET_STAGES, extra={"files": HUB_FILES[name]})

    @register_model(cfg, arch=_arch(name))
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        import torchvision.models as tvm

        path = resolve_weights(name, weights)
        return TorchExtractor(cfg, build_classifier_backbone(getattr(tvm, name), path), weights_path=path, **options)


for _name in HUB_FILES:
    _register_resnet(_name, 2048)


# --------------------------------------------------------------------------- more supervised torchvision models
# name -> (feature dim, crop, resize, interpolation, classifier attribute, hub files (V2 first), builder kwargs).
# Crop/resize/interpolation are those of each weight enum's ``transforms`` (the first file's weights);
# tests/extract/test_zoo_torchvision.py checks them against torchvision.
EXTRA = {
    "wide_resnet50_2": (2048, 224, 232, "bilinear", "fc",
                        ["wide_resnet50_2-9ba9bcbe.pth", "wide_resnet50_2-95faca4d.pth"], {}),
    "wide_resnet101_2": (2048, 224, 232, "bilinear", "fc",
                         ["wide_resnet101_2-d733dc28.pth", "wide_resnet101_2-32ee1156.pth"], {}),
    # Google's weights expect [-1, 1] inputs: torchvision sets transform_input=True for them, which maps
    # ImageNet-normalised inputs there inside the network; aux_logits=True so the file's AuxLogits load.
    "inception_v3": (2048, 299, 342, "bilinear", "fc", ["inception_v3_google-0cc3c7bd.pth"],
                     {"aux_logits": True, "transform_input": True, "init_weights": False}),
    "efficientnet_b0": (1280, 224, 256, "bicubic", "classifier", ["efficientnet_b0_rwightman-7f5810bc.pth"], {}),
    "efficientnet_b1": (1280, 240, 256, "bicubic", "classifier",
                        ["efficientnet_b1_rwightman-bac287d4.pth", "efficientnet_b1-c27df63c.pth"], {}),
    "efficientnet_b2": (1408, 288, 288, "bicubic", "classifier", ["efficientnet_b2_rwightman-c35c1473.pth"], {}),
    "efficientnet_b3": (1536, 300, 320, "bicubic", "classifier", ["efficientnet_b3_rwightman-b3899882.pth"], {}),
    "efficientnet_b4": (1792, 380, 384, "bicubic", "classifier", ["efficientnet_b4_rwightman-23ab8bcd.pth"], {}),
    "efficientnet_b5": (2048, 456, 456, "bicubic", "classifier", ["efficientnet_b5_lukemelas-1a07897c.pth"], {}),
    "efficientnet_b6": (2304, 528, 528, "bicubic", "classifier", ["efficientnet_b6_lukemelas-24a108a5.pth"], {}),
    "efficientnet_b7": (2560, 600, 600, "bicubic", "classifier", ["efficientnet_b7_lukemelas-c5b4e57e.pth"], {}),
    "vit_b_16": (768, 224, 256, "bilinear", "heads", ["vit_b_16-c867db91.pth"], {}),
}
# crops the networks cannot leave: ViT's position embeddings are for 14x14 patches of 16 pixels, and
# Inception v3's valid convolutions need at least 75 pixels
SIZE_LIMITS: dict[str, dict[str, int]] = {"vit_b_16": {"fixed_input_size": 224}, "inception_v3": {"min_input_size": 75}}
PAPERS = {
    "wide": "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016",
    "inception": "Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016",
    "efficientnet": "Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs, ICML 2019",
    "vit": "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021",
}
#: stage layouts by name prefix (Inception v3 and ViT offer none)
STAGES = {"wide": RESNET_STAGES, "efficientnet": EFFICIENTNET_STAGES}
LAYERS = {
    "fc": "global average pool (fc replaced by identity)",
    "classifier": "global average pool after the last 1x1 conv (dropout+linear classifier replaced by identity)",
    "heads": "class token after the final LayerNorm (heads replaced by identity)",
}


def _register_extra(name: str) -> None:
    dim, crop, resize, interp, head, files, arch_kw = EXTRA[name]
    HUB_FILES[name] = files
    paper = next(v for k, v in PAPERS.items() if name.startswith(k))
    feature_layer = LAYERS[head] if name != "inception_v3" else \
        "global average pool after Mixed_7c (fc replaced by identity)"
    cfg = ModelCfg(name=name, num_features=dim, family="torchvision", input_size=crop, resize_size=resize,
                   interpolation=interp, weights_format="torchvision state dict (.pth)",
                   weights_hint=f"--weights FILE or {files[0]} in torch's hub cache",
                   feature_layer=feature_layer, paper=paper, license="BSD-3-Clause (torchvision)",
                   stages=STAGES.get(name.split("_")[0], ()), extra={"files": files, **SIZE_LIMITS.get(name, {})})

    @register_model(cfg, arch=_arch(name, head, **arch_kw))
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        import torchvision.models as tvm

        path = resolve_weights(name, weights)
        net = build_classifier_backbone(getattr(tvm, name), path, head, **arch_kw)
        return TorchExtractor(cfg, net, weights_path=path, **options)


for _name in EXTRA:
    _register_extra(_name)
