"""SimCLR v1/v2: architecture, published parameter counts, key layouts of the ports' files, round trips."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neardup.errors import UsageError
from neardup.extract.models import simclr as S
from neardup.extract.registry import MODELS, create_extractor
from tests.conftest import make_image

pytestmark = pytest.mark.usefixtures("one_thread")


# SimCLR v2 README table "Param (M)" (backbone without the supervised fc and projection head)
V2_PARAMS_M = {"r50_1x_sk0": 24, "r50_1x_sk1": 35, "r50_2x_sk0": 94, "r50_2x_sk1": 140, "r101_1x_sk0": 43,
               "r101_1x_sk1": 65, "r101_2x_sk0": 170, "r101_2x_sk1": 257, "r152_1x_sk0": 58, "r152_1x_sk1": 89,
               "r152_2x_sk0": 233, "r152_2x_sk1": 354, "r152_3x_sk1": 795}
V1_PARAMS_M = {1: 24, 2: 94, 4: 375}  # SimCLR paper, Table B.1 / Figure 1


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter and BN buffer, so a wrongly loaded tensor shows in the features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype.is_floating_point:
                r = torch.rand(t.shape, generator=g)
                t.copy_(0.5 + r if name.endswith(("running_var", "weight")) and t.ndim == 1 else (r - 0.5) * 0.2)
    return model.eval()


def backbone_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for k, p in model.named_parameters() if not k.startswith("fc."))


@pytest.mark.parametrize("name", sorted(S.V2_MODELS))
def test_v2_keys_and_param_counts_of_every_registered_model(name):
    depth, width, sk = S.V2_MODELS[name]
    with torch.device("meta"):  # counts without allocating (r152_3x_sk1 is 795M parameters)
        model = S.build_v2(depth, width, sk)
    assert list(model.resnet.state_dict()) == separius_keys(S.DEPTHS[depth], bool(sk))
    assert model.resnet.channels_out == MODELS[name].cfg.num_features == 2048 * width
    tag = name.removeprefix("simclr_v2_")
    if tag in V2_PARAMS_M:  # 13 of the 18 are in the published table
        assert abs(backbone_params(model.resnet) / 1e6 - V2_PARAMS_M[tag]) <= 1.0  # the table is rounded


@pytest.mark.parametrize("width", [1, 2, 4])
def test_v1_param_counts_match_the_paper(width):
    with torch.device("meta"):
        model = S.WideResNet(width=width)
    assert round(backbone_params(model) / 1e6) == V1_PARAMS_M[width]
    assert model.num_features == MODELS[f"simclr_v1_r50_{width}x"].cfg.num_features == 2048 * width


def separius_keys(layers, sk: bool) -> list[str]:
    """Separius/SimCLRv2-Pytorch resnet.py state-dict keys, written from its module structure by hand."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = []
    if sk:
        for i in (0, 2, 4):
            keys += [f"net.0.{i}.weight"] + [f"net.0.{i + 1}.0.{b}" for b in bn]
    else:
        keys += ["net.0.0.weight"] + [f"net.0.1.0.{b}" for b in bn]
    for g, n in enumerate(layers, start=1):
        for i in range(n):
            p = f"net.{g}.blocks.{i}."
            if i == 0:
                keys += [p + ("projection.shortcut.2.weight" if sk else "projection.shortcut.weight")]
                keys += [p + f"projection.bn.0.{b}" for b in bn]
            if sk:
                keys += [p + "net.0.weight"] + [p + f"net.1.0.{b}" for b in bn]
                keys += [p + "net.2.main_conv.0.weight"] + [p + f"net.2.main_conv.1.0.{b}" for b in bn]
                keys += [p + "net.2.mixing_conv.0.weight"] + [p + f"net.2.mixing_conv.1.0.{b}" for b in bn]
                keys += [p + "net.2.mixing_conv.2.weight"]
                keys += [p + "net.3.weight"] + [p + f"net.4.0.{b}" for b in bn]
            else:
                for c in (0, 2, 4):
                    keys += [p + f"net.{c}.weight"] + [p + f"net.{c + 1}.0.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


@pytest.mark.parametrize("sk", [0, 1])
def test_full_r50_1x_keys_are_the_separius_keys(sk):
    with torch.device("meta"):
        model = S.build_v2(50, 1, sk)
    assert list(model.resnet.state_dict()) == separius_keys(S.DEPTHS[50], bool(sk))
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert list(model.head.state_dict()) == [k for i in (0, 3, 6) for k in
                                             [f"layers.{i}.weight"] + [f"layers.{i + 1}.{b}" for b in bn]]
    sd = model.resnet.state_dict()
    if sk:  # mid_dim = max(int(64 * 0.0625), 32) = 32; ResNet-D stem 3 -> 32 -> 32 -> 64
        assert tuple(sd["net.1.blocks.0.net.2.mixing_conv.0.weight"].shape) == (32, 64, 1, 1)
        assert tuple(sd["net.0.0.weight"].shape) == (32, 3, 3, 3)
        assert tuple(sd["net.1.blocks.0.net.2.main_conv.0.weight"].shape) == (128, 64, 3, 3)


def test_full_v1_keys_are_torchvision_resnet50_keys():
    import torchvision.models as tvm

    with torch.device("meta"):
        ours, ref = S.WideResNet(width=1).state_dict(), tvm.resnet50(weights=None).state_dict()
    assert sorted(ours) == sorted(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)


def test_same_padding_layers_match_tf_semantics():
    x = torch.randn(2, 3, 8, 8)
    # TF 'SAME' 3x3/2 max pool on an even map: one extra column/row at the end only
    ref = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    assert torch.equal(S.MaxPoolSame(3, 2)(x), ref)
    # TF 'SAME' 2x2/1 average pool: border windows average only the real pixels
    out = S.AvgPoolSame(2, 1)(x)
    assert torch.allclose(out[..., -1, -1], x[..., -1, -1])
    assert torch.allclose(out[..., 0, -1], (x[..., 0, -1] + x[..., 1, -1]) / 2)
    assert torch.allclose(out[..., :-1, :-1], F.avg_pool2d(x, 2, 1)[..., :, :])
    # Haiku 'SAME' 7x7/2 conv on an even map: pad 2 before, 3 after (PyTorch would pad 3 and 3)
    conv = S.Conv2dSame(3, 4, 7, 2, bias=False)
    assert torch.allclose(conv(x), F.conv2d(F.pad(x, (2, 3, 2, 3)), conv.weight, stride=2), atol=1e-6)


def tiny_v2(sk: int) -> S.SimCLRv2Features:
    return S.SimCLRv2Features(S.ResNet((1, 1, 1, 1), 1, S.SK_RATIO if sk else 0.0), S.ContrastiveHead(2048)).eval()


@pytest.mark.parametrize("sk", [0, 1])
def test_v2_separius_file_round_trip_with_every_layer(tmp_path, sk):
    src = randomize(tiny_v2(sk), seed=sk)
    path = tmp_path / f"r50_1x_sk{sk}.pth"
    torch.save({"resnet": src.resnet.state_dict(), "head": src.head.state_dict()}, path)  # convert.py's layout
    x = torch.rand(2, 3, 64, 64)
    for layer, dim in (("backbone", 2048), ("head0", 2048), ("head1", 2048), ("head2", 128)):
        dst = S.SimCLRv2Features(S.ResNet((1, 1, 1, 1), 1, S.SK_RATIO if sk else 0.0), S.ContrastiveHead(2048), layer)
        S.load_simclr_v2(dst, str(path))
        src.layer = layer
        with torch.no_grad():
            a, b = src(x), dst.eval()(x)
        assert a.shape == (2, dim) and torch.equal(a, b)


def test_v2_file_without_head_loads_backbone_only(tmp_path):
    src = randomize(tiny_v2(0))
    path = tmp_path / "backbone.pth"
    torch.save({"resnet": {k: v for k, v in src.resnet.state_dict().items() if not k.startswith("fc.")}}, path)
    dst = tiny_v2(0)
    S.load_simclr_v2(dst, str(path))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    with pytest.raises(UsageError, match="no projection head"):
        S.load_simclr_v2(S.SimCLRv2Features(S.ResNet((1, 1, 1, 1), 1, 0.0), S.ContrastiveHead(2048), "head0"),
                         str(path))


def test_v2_mismatched_file_lists_the_keys(tmp_path):
    path = tmp_path / "r50_1x_sk1.pth"
    torch.save({"resnet": tiny_v2(0).resnet.state_dict(), "head": tiny_v2(0).head.state_dict()}, path)
    pattern = r"do not fit ResNet: \d+ missing: net\.0\.2\.weight.*shape: net\.0\.0\.weight"
    with pytest.raises(UsageError, match=pattern):
        S.load_simclr_v2(tiny_v2(1), str(path))


def test_registry_builds_full_r50_1x_sk1_from_a_separius_file(tmp_path, sample_photo):
    src = randomize(S.build_v2(50, 1, 1), seed=3)
    path = tmp_path / "r50_1x_sk1.pth"
    torch.save({"resnet": src.resnet.state_dict(), "head": src.head.state_dict()}, path)
    e = create_extractor("simclr_v2_r50_1x_sk1", weights=str(path), device="cpu", layer=None, input_size=96)
    assert (e.cfg.resize_size, e.cfg.input_size) == (110, 96)
    x = e.transform(sample_photo)[None]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0  # SimCLR: RGB in [0, 1], no normalisation
    with torch.no_grad():
        ref = src(x).numpy()
    assert e.num_features == 2048 and np.array_equal(e.encode(x), ref)
    h = create_extractor("simclr_v2_r50_1x_sk1", weights=str(path), device="cpu", layer="head2", input_size=96)
    assert h.num_features == 128 and h.encode(x).shape == (1, 128)
    with pytest.raises(UsageError, match="unknown (--)?layer"):
        create_extractor("simclr_v2_r50_1x_sk1", weights=str(path), layer="head9")


def test_v1_tonylins_file_round_trip(tmp_path, sample_photo):
    src = randomize(S.WideResNet((1, 1, 1, 1), width=2), seed=5)
    path = tmp_path / "resnet50-2x.pth"
    torch.save({"state_dict": src.state_dict()}, path)  # tonylins convert.py's layout
    dst = S.WideResNet((1, 1, 1, 1), width=2)
    S.load_wide_resnet(dst, str(path))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = src(x), dst.eval()(x)
    assert a.shape == (2, 4096) and torch.equal(a, b)


def test_v1_registry_round_trip_full_1x(tmp_path):
    src = randomize(S.WideResNet(width=1), seed=6)
    path = tmp_path / "resnet50-1x.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    e = create_extractor("simclr_v1_r50_1x", weights=str(path), device="cpu", input_size=97)
    x = e.transform(make_image(2, (300, 260)))[None]  # odd size: TF 'SAME' pads both sides there
    with torch.no_grad():
        assert np.array_equal(e.encode(x), src(x).numpy())


def test_missing_weights_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=r"r101_2x_sk1\.pth.*never downloads"):
        create_extractor("simclr_v2_r101_2x_sk1")
    with pytest.raises(UsageError, match=r"resnet50-4x\.pth.*never downloads"):
        create_extractor("simclr_v1_r50_4x")
