"""BYOL ResNet-50 encoders (Grill et al. 2020) from the official Haiku pickle or torchvision-layout files.

The encoder is Haiku's ResNet v1 (stride on the 3x3, BN eps 1e-5) whose convs and
max pool use ``'SAME'`` padding; with ``same=True`` :class:`WideResNet` reproduces
that exactly (PyTorch ports pad symmetrically, a one-pixel shift on strided layers).
BYOL normalises inputs with the ImageNet mean/std inside its graph
(``dataset.normalize_images``) and evaluates on a 224 centre crop of a 256 resize (bicubic).

Accepted ``--weights``:

* the official ``pretrain_res50x1.pkl`` (read with a restricted unpickler, see
  :mod:`neardup.extract.convert`; ``neardup convert byol`` writes the .pth once);
* a torchvision-layout state dict (``conv1.weight``, ``layer1.0.conv1.weight``, ...,
  optionally ``fc.*``), bare, under ``state_dict``, or prefixed: ``module.``,
  ``backbone.`` (solo-learn; its other keys ``projector.*``, ``momentum_backbone.*``,
  ``classifier.*`` are ignored), lightly's ``nn.Sequential(*resnet.children()[:-1])``
  layout (``backbone.0.weight`` = conv1, ``backbone.1.*`` = bn1, ``backbone.4-7.*`` =
  layer1-4) and ajtejankar/byol-convert's ``.pth.tar`` (no ``num_batches_tracked``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Unpack

import torch

from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor, empty_model
from neardup.extract.models.simclr import DEPTHS, WideResNet, load_backbone, require_weights
from neardup.extract.registry import RESNET_STAGES, ExtractorOptions, ModelCfg, register_model
from neardup.extract.weights import read_checkpoint

PAPER = "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"
LIGHTLY_INDEX = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def to_torchvision_layout(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Strip wrappers so keys read ``conv1.weight``, ``layer1.0.conv1.weight``, ..."""
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    for p in ("module.", "model."):
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):  # solo-learn / lightly: the encoder only
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if sd and all(re.match(r"\d+\.", k) for k in sd):  # lightly: Sequential(*resnet.children()[:-1])
        try:
            sd = {LIGHTLY_INDEX[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in sd.items()}
        except KeyError as exc:
            raise UsageError(f"unexpected Sequential index {exc} in a lightly-style backbone") from None
    return sd


def load_byol(model: WideResNet, path: str) -> None:
    """Load a BYOL ``.pkl`` (Haiku) or a torchvision-layout file into ``model``, every key and shape checked."""
    if path.endswith(".pkl"):
        from neardup.extract.convert import byol_from_pickle

        sd = byol_from_pickle(path)
    else:
        ckpt = read_checkpoint(path)
        sd = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    load_backbone(model, to_torchvision_layout(sd), path)


def _register(width: int) -> None:
    name = f"byol_r50_{width}x"
    files = [f"pretrain_res50x{width}.pkl", f"pretrain_res50x{width}.pth.tar", f"byol_r50_{width}x.pth"]
    cfg = ModelCfg(
        name=name, num_features=2048 * width, family="byol",
        weights_format="official Haiku .pkl, or a torchvision-layout ResNet-50 state dict (solo-learn 'backbone.', "
                       "lightly Sequential, ajtejankar .pth.tar)",
        weights_hint=f"--weights FILE or {files[0]} in torch's hub cache",
        feature_layer="global average pool after block_group_4 (the BYOL representation y)",
        paper=PAPER, license="Apache-2.0 (deepmind-research/byol)", stages=RESNET_STAGES,
        extra={"depth": 50, "width": width, "files": files})

    @register_model(cfg, arch=lambda cfg: WideResNet(DEPTHS[50], width, same=True))
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        model = empty_model(lambda: WideResNet(DEPTHS[50], width, same=True))
        path = require_weights(name, weights, files, "Haiku .pkl or torchvision layout")
        load_byol(model, path)
        return TorchExtractor(cfg, model, weights_path=path, **options)


for _w in (1, 2):
    _register(_w)
