"""SimCLR v1 and v2 ResNets (Chen et al. 2020), loading the community PyTorch ports' files directly.

Architectures follow google-research/simclr ``resnet.py`` (TF1): a post-activation
ResNet with BN eps 1e-5, optional selective kernels (SK, ``sk_ratio`` 0.0625) and
ResNet-D stem/shortcuts when SK is on, and for v2 a 3-layer projection head.

Weights layouts (keys are those of the ports' own modules, so their files load as is):

* **SimCLR v2**, Separius/SimCLRv2-Pytorch ``convert.py`` -> ``r50_1x_sk0.pth``:
  ``{'resnet': ResNet.state_dict(), 'head': ContrastiveHead.state_dict()}``.
  ResNet keys: ``net.0.*`` stem (``net.0.0.weight`` conv, ``net.0.1.0.*`` its BN;
  SK stem ``net.0.{0,2,4}.weight`` convs, ``net.0.{1,3,5}.0.*`` BNs), then
  ``net.{1..4}.blocks.{i}.projection.shortcut.weight`` (``shortcut.2.weight`` with SK),
  ``...projection.bn.0.*``; without SK ``...net.{0,2,4}.weight`` convs (1x1, 3x3, 1x1) and
  ``...net.{1,3,5}.0.*`` their BNs; with SK ``...net.{0,3}.weight`` 1x1 convs, ``...net.{1,4}.0.*``
  BNs and the SK unit ``...net.2.main_conv.{0.weight,1.0.*}``, ``...net.2.mixing_conv.{0.weight,1.0.*,2.weight}``;
  ``fc.{weight,bias}`` the supervised head.
  Head keys: ``layers.{0,3,6}.weight`` (Linear, no bias), ``layers.{1,4,7}.*`` (BatchNorm1d).
* **SimCLR v1**, tonylins/simclr-converter ``convert.py`` -> ``resnet50-1x.pth``:
  ``{'state_dict': ...}`` in torchvision's ResNet-50 key layout (``conv1``, ``bn1``,
  ``layer{1..4}.{i}.{conv,bn}{1,2,3}``, ``layer{1..4}.0.downsample.{0,1}``, ``fc``) with
  every channel count multiplied by the width (1x/2x/4x).

The forward pass reproduces the TF graph exactly: max pool and the stride-1 SK
shortcut pool use TF ``'SAME'`` padding (the ports use PyTorch's symmetric padding
there, which shifts windows by a pixel). Inputs are RGB in [0, 1], not normalised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import nn

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.errors import UsageError
from neardup.extract.base import TorchExtractor, empty_model
from neardup.extract.registry import RESNET_STAGES, ExtractorOptions, ModelCfg, register_model
from neardup.extract.weights import describe_mismatch, find_in_hub_cache, hub_cache_dir, read_checkpoint

BN_EPS = 1e-5
SK_RATIO = 0.0625
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
PAPER_V1 = "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020"
PAPER_V2 = "Chen et al., Big Self-Supervised Models are Strong Semi-Supervised Learners, NeurIPS 2020"
NO_NORM: dict[str, Any] = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # SimCLR feeds RGB in [0, 1]


# --------------------------------------------------------------------------- TF 'SAME' padding
def pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) like TF/Haiku ``'SAME'``: total ``(ceil(n/s)-1)*s + k - n``, the odd pixel last."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + kernel - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + kernel - iw, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


class MaxPoolSame(nn.Module):
    """``max_pooling2d(padding='SAME')``: on an even map the extra row/column is at the end, not split."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(pad_same(x, self.kernel_size, self.stride, float("-inf")), self.kernel_size, self.stride)


class AvgPoolSame(nn.Module):
    """``average_pooling2d(padding='SAME')``: padded pixels are not counted in the mean."""

    def __init__(self, kernel_size: int = 2, stride: int = 1):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        count = F.avg_pool2d(pad_same(torch.ones_like(x[:1, :1]), k, s), k, s)
        return F.avg_pool2d(pad_same(x, k, s), k, s) / count


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and keys) with Haiku/TF ``'SAME'`` padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


# --------------------------------------------------------------------------- SimCLR v2 (Separius layout)
def conv(cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> nn.Conv2d:
    """TF1 ``conv2d_fixed_padding``: symmetric ``(k-1)//2`` padding equals it for odd kernels."""
    return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False)


class BatchNormRelu(nn.Sequential):
    def __init__(self, channels: int, relu: bool = True):
        super().__init__(nn.BatchNorm2d(channels, eps=BN_EPS), nn.ReLU() if relu else nn.Identity())


class SelectiveKernel(nn.Module):
    """Two 3x3 streams (one conv of 2C channels) mixed by a softmax over streams (Li et al. 2019)."""

    def __init__(self, cin: int, cout: int, stride: int, sk_ratio: float, min_dim: int = 32):
        super().__init__()
        self.main_conv = nn.Sequential(conv(cin, 2 * cout, stride=stride), BatchNormRelu(2 * cout))
        mid = max(int(cout * sk_ratio), min_dim)
        self.mixing_conv = nn.Sequential(conv(cout, mid, kernel_size=1), BatchNormRelu(mid),
                                         conv(mid, 2 * cout, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.stack(torch.chunk(self.main_conv(x), 2, dim=1), dim=0)  # (2, B, C, H, W)
        m = self.mixing_conv(x.sum(dim=0).mean(dim=(2, 3), keepdim=True))
        m = torch.stack(torch.chunk(m, 2, dim=1), dim=0)  # (2, B, C, 1, 1)
        return (x * F.softmax(m, dim=0)).sum(dim=0)


class Projection(nn.Module):
    """Shortcut of a block's first unit; ResNet-D (pool then 1x1 conv) when SK is on."""

    def __init__(self, cin: int, cout: int, stride: int, sk_ratio: float = 0.0):
        super().__init__()
        self.shortcut: nn.Module
        if sk_ratio > 0:
            pad_pool: list[nn.Module] = ([nn.ZeroPad2d((0, 1, 0, 1)), nn.AvgPool2d(2, stride)] if stride > 1
                                         else [nn.Identity(), AvgPoolSame(2, 1)])
            self.shortcut = nn.Sequential(*pad_pool, conv(cin, cout, kernel_size=1))
        else:
            self.shortcut = conv(cin, cout, kernel_size=1, stride=stride)
        self.bn = BatchNormRelu(cout, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.shortcut(x))


class BottleneckBlock(nn.Module):
    expansion = 4

    def __init__(self, cin: int, cout: int, stride: int, sk_ratio: float = 0.0, use_projection: bool = False):
        super().__init__()
        self.projection = Projection(cin, cout * 4, stride, sk_ratio) if use_projection else nn.Identity()
        ops: list[nn.Module] = [conv(cin, cout, kernel_size=1), BatchNormRelu(cout)]
        if sk_ratio > 0:
            ops.append(SelectiveKernel(cout, cout, stride, sk_ratio))
        else:
            ops += [conv(cout, cout, stride=stride), BatchNormRelu(cout)]
        ops += [conv(cout, cout * 4, kernel_size=1), BatchNormRelu(cout * 4, relu=False)]
        self.net = nn.Sequential(*ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.projection(x) + self.net(x))


class Blocks(nn.Module):
    def __init__(self, num_blocks: int, cin: int, cout: int, stride: int, sk_ratio: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList([BottleneckBlock(cin, cout, stride, sk_ratio, True)])
        self.channels_out = cout * BottleneckBlock.expansion
        for _ in range(num_blocks - 1):
            self.blocks.append(BottleneckBlock(self.channels_out, cout, 1, sk_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


class Stem(nn.Sequential):
    def __init__(self, sk_ratio: float, width: int):
        half = 64 * width // 2
        ops: list[nn.Module] = []
        if sk_ratio > 0:  # ResNet-D: three 3x3 convs
            ops += [conv(3, half, stride=2), BatchNormRelu(half), conv(half, half), BatchNormRelu(half),
                    conv(half, half * 2)]
        else:
            ops.append(conv(3, half * 2, kernel_size=7, stride=2))
        ops += [BatchNormRelu(half * 2), MaxPoolSame(3, 2)]
        super().__init__(*ops)


class ResNet(nn.Module):
    """SimCLR v2 backbone; ``forward`` returns the globally averaged last block (B, 2048*width)."""

    def __init__(self, layers: tuple[int, ...], width: int, sk_ratio: float):
        super().__init__()
        ops: list[nn.Module] = [Stem(sk_ratio, width)]
        cin = 64 * width
        for i, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=False)):
            ops.append(Blocks(n, cin, 64 * width * 2 ** i, stride, sk_ratio))
            cin = ops[-1].channels_out  # type: ignore[assignment]
        self.channels_out = cin
        self.net = nn.Sequential(*ops)
        self.fc = nn.Linear(cin, 1000)  # supervised head, kept so the ports' files load strictly

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


class ContrastiveHead(nn.Module):
    """The v2 projection head: (Linear no bias, BN, ReLU) x2, then Linear -> ``out_dim``, BN."""

    def __init__(self, channels_in: int, out_dim: int = 128, num_layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            last = i == num_layers - 1
            dim = out_dim if last else channels_in
            self.layers.append(nn.Linear(channels_in, dim, bias=False))
            self.layers.append(nn.BatchNorm1d(dim, eps=BN_EPS))
            if not last:
                self.layers.append(nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def get_resnet(depth: int = 50, width: int = 1, sk_ratio: float = 0.0) -> tuple[ResNet, ContrastiveHead]:
    """Backbone and projection head, as Separius' ``get_resnet``."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    net = ResNet(DEPTHS[depth], width, sk_ratio)
    return net, ContrastiveHead(net.channels_out)


# head layer name -> index of the last module applied in ContrastiveHead.layers
HEAD_LAYERS = {"head0": 2, "head1": 5, "head2": 7}


class SimCLRv2Features(nn.Module):
    """Backbone output (``layer='backbone'``) or the output of projection-head layer ``head0|head1|head2``.

    ``head0`` is what SimCLR v2 fine-tunes from (``ft_proj_selector=1``): the first
    head layer after its ReLU. ``head2`` is the 128-d contrastive embedding.
    """

    def __init__(self, resnet: ResNet, head: ContrastiveHead, layer: str = "backbone"):
        super().__init__()
        if layer != "backbone" and layer not in HEAD_LAYERS:
            raise UsageError(f"unknown layer {layer!r}; use backbone, {', '.join(HEAD_LAYERS)}")
        self.resnet, self.head, self.layer = resnet, head, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.resnet(x)
        if self.layer != "backbone":
            for layer in self.head.layers[:HEAD_LAYERS[self.layer] + 1]:
                h = layer(h)
        return h


# --------------------------------------------------------------------------- SimCLR v1 (tonylins layout)
class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3) with ``downsample`` created first, as in TF's graph."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 same: bool = False):
        super().__init__()
        self.downsample = downsample
        conv3 = Conv2dSame(planes, planes, 3, stride, bias=False) if same and stride > 1 else \
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv2 = conv3
        self.bn2 = nn.BatchNorm2d(planes, eps=BN_EPS)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class WideResNet(nn.Module):
    """torchvision-layout ResNet whose every width is multiplied by ``width`` (SimCLR v1, BYOL).

    ``same=True`` pads strided convs like Haiku ``'SAME'`` (BYOL); ``same=False`` keeps
    TF1 SimCLR's symmetric fixed padding. The max pool is ``'SAME'`` in both.
    """

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 1, same: bool = False):
        super().__init__()
        c = 64 * width
        self.conv1 = Conv2dSame(3, c, 7, 2, bias=False) if same else nn.Conv2d(3, c, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = MaxPoolSame(3, 2)
        cin = c
        for i, (n, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=False)):
            planes = c * 2 ** i
            down = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * 4, eps=BN_EPS))
            blocks = [Bottleneck(cin, planes, stride, down, same)] + [Bottleneck(planes * 4, planes, same=same)
                                                                      for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = planes * 4
        self.num_features = cin
        self.fc = nn.Linear(cin, 1000)  # classifier of the published files; unused for features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 2048*width) globally averaged features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean(dim=(2, 3))


# --------------------------------------------------------------------------- loading
OPTIONAL_KEYS = ("fc.", "num_batches_tracked")  # unused for features / not saved by every converter


def strip_prefix(sd: Mapping[str, Any], prefixes: tuple[str, ...] = ("module.",)) -> dict:
    out = dict(sd)
    for p in prefixes:
        if out and all(k.startswith(p) for k in out):
            out = {k[len(p):]: v for k, v in out.items()}
    return out


def load_backbone(model: nn.Module, sd: Mapping[str, Any], source: str,
                  optional: tuple[str, ...] = OPTIONAL_KEYS) -> None:
    """Strict load, except that keys containing one of ``optional`` may be absent (the model's own values stay).

    Raises:
        UsageError: listing the first missing/unexpected keys and shape mismatches.
    """
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    full = {**{k: v for k, v in own.items() if any(o in k for o in optional) and k not in sd}, **sd}
    problem = describe_mismatch(own, full)
    if problem:
        raise UsageError(f"weights {source} do not fit {type(model).__name__}: {problem}")
    model.load_state_dict(full, strict=True)


def load_simclr_v2(model: SimCLRv2Features, path: str) -> None:
    """Load a Separius-layout file (``{'resnet': ..., 'head': ...}``, or a bare backbone state dict)."""
    ckpt = read_checkpoint(path)
    if "resnet" in ckpt:
        resnet_sd, head_sd = ckpt["resnet"], ckpt.get("head")
    else:
        resnet_sd, head_sd = strip_prefix(ckpt), None
    load_backbone(model.resnet, resnet_sd, path)
    if head_sd is not None:
        load_backbone(model.head, head_sd, path + " ['head']", optional=("num_batches_tracked",))
    elif model.layer != "backbone":
        raise UsageError(f"weights {path} hold no projection head ('head' key); use layer=backbone")


def load_wide_resnet(model: WideResNet, path: str, prefixes: tuple[str, ...] = ("module.",)) -> None:
    """Load a torchvision-layout file: a bare state dict or ``{'state_dict': ...}`` (tonylins)."""
    ckpt = read_checkpoint(path)
    sd = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    load_backbone(model, strip_prefix(sd, prefixes), path)


def local_weights(filenames: list[str]) -> str | None:
    found = find_in_hub_cache(filenames)
    return str(found) if found else None


def require_weights(name: str, weights: str | None, filenames: list[str], how: str) -> str:
    path = weights or local_weights(filenames)
    if path is None:
        raise UsageError(f"no weights for {name}: pass --weights FILE ({how}) or put {filenames[0]} in "
                         f"{hub_cache_dir()} (neardup never downloads)")
    return path


# --------------------------------------------------------------------------- registry
def v2_name(depth: int, width: int, sk: int) -> str:
    return f"simclr_v2_r{depth}_{width}x_sk{sk}"


def v2_file(depth: int, width: int, sk: int) -> str:
    """The file name Separius' converter writes (``r50_1x_sk0.pth``)."""
    return f"r{depth}_{width}x_sk{sk}.pth"


V2_MODELS = {v2_name(d, w, sk): (d, w, sk) for d in DEPTHS for w in (1, 2, 3) for sk in (0, 1)}
V1_MODELS = {f"simclr_v1_r50_{w}x": w for w in (1, 2, 4)}


#: SimCLRv2Features: the stem, then block groups 1-4 of the backbone
V2_STAGES = tuple((f"resnet.net.{i}",) for i in range(5))


def build_v2(depth: int, width: int, sk: int, layer: str = "backbone") -> SimCLRv2Features:
    resnet, head = get_resnet(depth, width, SK_RATIO if sk else 0.0)
    return SimCLRv2Features(resnet, head, layer)


def _register_v2(name: str, depth: int, width: int, sk: int) -> None:
    fname = v2_file(depth, width, sk)
    cfg = ModelCfg(
        name=name, num_features=2048 * width, family="simclr_v2", **NO_NORM,
        weights_format="Separius/SimCLRv2-Pytorch .pth: {'resnet': state dict, 'head': state dict}",
        weights_hint=f"--weights FILE or {fname} in torch's hub cache; TF checkpoints: neardup convert simclr",
        feature_layer="global average pool of block_group4 (layer=backbone); layer=head0|head1|head2 for the "
                      "projection head's layers (head0: first layer after ReLU, head2: 128-d output)",
        paper=PAPER_V2, license="Apache-2.0 (google-research/simclr)",
        stages=V2_STAGES, extra={"depth": depth, "width": width, "sk_ratio": SK_RATIO if sk else 0.0,
                                 "files": [fname], "layers": ["backbone", *HEAD_LAYERS]})

    @register_model(cfg, arch=lambda cfg: build_v2(depth, width, sk))
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        layer = layer or "backbone"
        model = empty_model(lambda: build_v2(depth, width, sk, layer))
        path = require_weights(name, weights, [fname], "Separius layout")
        load_simclr_v2(model, path)
        if layer != "backbone":
            dim = 128 if layer == "head2" else model.resnet.channels_out
            cfg = replace(cfg, num_features=dim, feature_layer=f"projection head {layer}")
        return TorchExtractor(cfg, model, weights_path=path, **options)


def _register_v1(name: str, width: int) -> None:
    fname = f"resnet50-{width}x.pth"
    cfg = ModelCfg(
        name=name, num_features=2048 * width, family="simclr_v1", **NO_NORM,
        weights_format="tonylins/simclr-converter .pth: {'state_dict': torchvision-layout ResNet-50 (width x)}",
        weights_hint=f"--weights FILE or {fname} in torch's hub cache; TF checkpoints: neardup convert simclr",
        feature_layer="global average pool after layer4 (TF 'final_avg_pool')",
        paper=PAPER_V1, license="Apache-2.0 (google-research/simclr)",
        stages=RESNET_STAGES, extra={"depth": 50, "width": width, "files": [fname]})

    @register_model(cfg, arch=lambda cfg: WideResNet(DEPTHS[50], width))
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        model = empty_model(lambda: WideResNet(DEPTHS[50], width))
        path = require_weights(name, weights, [fname], "tonylins layout")
        load_wide_resnet(model, path)
        return TorchExtractor(cfg, model, weights_path=path, **options)


for _name, (_d, _w, _sk) in V2_MODELS.items():
    _register_v2(_name, _d, _w, _sk)
for _name, _w in V1_MODELS.items():
    _register_v1(_name, _w)
