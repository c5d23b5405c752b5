"""Published-format conversions: SimCLR TF1 variable names, BYOL Haiku pickles, lightly/solo-learn files, CLI."""

import importlib.util
import os
import pickle
import sys
import types
from typing import NamedTuple

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neardup.errors import UsageError
from neardup.extract import convert as C
from neardup.extract.models import byol as B
from neardup.extract.models import simclr as S
from neardup.extract.registry import create_extractor
from tests.conftest import make_image
from tests.extract.test_zoo_simclr import randomize

pytestmark = pytest.mark.usefixtures("one_thread")

BN = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))


# --------------------------------------------------------------------------- SimCLR TF1
def tf_graph_order(layers, sk: bool, v1: bool = False) -> tuple[list[str], list[str]]:
    """Torch module names of the convs and BNs in the order google-research/simclr resnet.py creates them.

    Written from the TF code, not from our modules: stem; then per block the projection
    shortcut (first block only), conv1, the 3x3 (or SK: main conv, mixing conv 1, 2), conv3.
    """
    convs, bns = [], []
    if v1:
        convs.append("conv1"), bns.append("bn1")
        for g, n in enumerate(layers, start=1):
            for i in range(n):
                p = f"layer{g}.{i}."
                if i == 0:
                    convs.append(p + "downsample.0"), bns.append(p + "downsample.1")
                convs += [p + "conv1", p + "conv2", p + "conv3"]
                bns += [p + "bn1", p + "bn2", p + "bn3"]
        return convs, bns
    if sk:
        convs += ["net.0.0", "net.0.2", "net.0.4"]
        bns += ["net.0.1.0", "net.0.3.0", "net.0.5.0"]
    else:
        convs.append("net.0.0"), bns.append("net.0.1.0")
    for g, n in enumerate(layers, start=1):
        for i in range(n):
            p = f"net.{g}.blocks.{i}."
            if i == 0:
                convs.append(p + ("projection.shortcut.2" if sk else "projection.shortcut"))
                bns.append(p + "projection.bn.0")
            if sk:
                convs += [p + "net.0", p + "net.2.main_conv.0", p + "net.2.mixing_conv.0", p + "net.2.mixing_conv.2",
                          p + "net.3"]
                bns += [p + "net.1.0", p + "net.2.main_conv.1.0", p + "net.2.mixing_conv.1.0", p + "net.4.0"]
            else:
                convs += [p + "net.0", p + "net.2", p + "net.4"]
                bns += [p + "net.1.0", p + "net.3.0", p + "net.5.0"]
    return convs, bns


def tf_variables(model_sd, head_sd, convs, bns, prefix="base_model/") -> dict[str, np.ndarray]:
    """A TF1 SimCLR checkpoint's variables (real names, HWIO kernels), incl. Momentum slots and global_step."""
    var = {"global_step": np.array(250228, np.int64)}
    for i, name in enumerate(convs):
        scope = f"{prefix}conv2d" + (f"_{i}" if i else "")
        var[scope + "/kernel"] = model_sd[name + ".weight"].permute(2, 3, 1, 0).numpy()
        var[scope + "/kernel/Momentum"] = np.zeros(1, np.float32)  # the converter must ignore slots
    for i, name in enumerate(bns):
        scope = f"{prefix}batch_normalization" + (f"_{i}" if i else "")
        for ours, theirs in BN:
            var[f"{scope}/{theirs}"] = model_sd[f"{name}.{ours}"].numpy()
    var["head_supervised/linear_layer/dense/kernel"] = model_sd["fc.weight"].T.numpy()
    var["head_supervised/linear_layer/dense/bias"] = model_sd["fc.bias"].numpy()
    if head_sd is not None:
        for i in range(3):
            var[f"head_contrastive/nl_{i}/dense/kernel"] = head_sd[f"layers.{3 * i}.weight"].T.numpy()
            for ours, theirs in BN:
                if i == 2 and theirs == "beta":
                    continue  # the output layer's BN has center=False
                bn = f"head_contrastive/nl_{i}/batch_normalization/"
                var[bn + theirs] = head_sd[f"layers.{3 * i + 1}.{ours}"].numpy()
    return var


def test_tf1_names_of_full_r50_1x_sk1_convert_and_match(tmp_path):
    src = randomize(S.build_v2(50, 1, 1), seed=11)
    with torch.no_grad():
        src.head.layers[7].bias.zero_()  # TF has no beta there
    convs, bns = tf_graph_order(S.DEPTHS[50], sk=True)
    var = tf_variables(src.resnet.state_dict(), src.head.state_dict(), convs, bns)
    assert "base_model/conv2d_86/kernel" in var and "base_model/conv2d_87/kernel" not in var  # 87 convs
    ckpt, desc = C.simclr_tf1_to_torch(var)
    assert desc.startswith("r50_1x_sk1 (v2 layout, with projection head")
    path = tmp_path / "r50_1x_sk1.pth"
    C.save_torch(ckpt, path)
    x = torch.rand(2, 3, 64, 64)
    for layer in ("backbone", "head2"):
        dst = S.build_v2(50, 1, 1, layer)
        S.load_simclr_v2(dst, str(path))
        src.layer = layer
        with torch.no_grad():
            assert torch.equal(src(x), dst.eval()(x))


def test_tf1_v1_layout_for_r50_2x_tiny_and_ema(tmp_path):
    src = randomize(S.WideResNet((1, 1, 1, 1), width=2), seed=12)
    convs, bns = tf_graph_order((1, 1, 1, 1), sk=False, v1=True)
    var = tf_variables(src.state_dict(), None, convs, bns, prefix="ema_model/base_model/")
    var.update({"head_supervised/linear_layer/dense/kernel": src.fc.weight.T.detach().numpy(),
                "head_supervised/linear_layer/dense/bias": src.fc.bias.detach().numpy()})
    ckpt, desc = C.simclr_tf1_to_torch(var, layout="v1", ema=True, arch=((1, 1, 1, 1), 2, 0))
    assert set(ckpt) == {"state_dict"}  # tonylins layout
    path = tmp_path / "resnet50-2x.pth"
    C.save_torch(ckpt, path)
    dst = S.WideResNet((1, 1, 1, 1), width=2)
    S.load_wide_resnet(dst, str(path))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst.eval()(x))
    with pytest.raises(UsageError, match="no base_model/conv2d"):
        C.simclr_tf1_to_torch(var)  # not ema: there is no base_model/ copy


def test_tf1_identifies_every_registered_architecture_from_shapes():
    for depth, width, sk in [(101, 2, 1), (152, 3, 0), (50, 4, 0)]:
        with torch.device("meta"):
            net = S.ResNet(S.DEPTHS[depth], width, S.SK_RATIO if sk else 0.0)
        shapes = [tuple(m.weight.permute(2, 3, 1, 0).shape) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert C.identify_simclr(shapes) == (depth, width, sk)
    with pytest.raises(UsageError, match="no SimCLR ResNet"):
        C.identify_simclr([(3, 3, 3, 7)])


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed")
def test_convert_simclr_without_tensorflow_names_the_package(tmp_path):
    """Reading a real TF checkpoint needs TensorFlow (not installed here, and a TF checkpoint can't be written
    without it): the file-reading step is the only part not exercised; the name mapping is tested above."""
    from neardup.cli import main

    r = CliRunner().invoke(main, ["convert", "simclr", str(tmp_path), str(tmp_path / "out.pth")])
    assert r.exit_code != 0 and "pip install tensorflow" in r.output
    assert not (tmp_path / "out.pth").exists()


# --------------------------------------------------------------------------- BYOL
def haiku_trees(model_sd, layers, prefix="res_net50"):
    """BYOL's Haiku params/state trees, named as haiku.nets.ResNet / byol/utils/networks.py name them."""
    params, state = {}, {}

    def conv(hk, tv):
        params[f"{prefix}/~/{hk}"] = {"w": model_sd[tv + ".weight"].permute(2, 3, 1, 0).numpy()}

    def bn(hk, tv):
        c = model_sd[tv + ".weight"].shape[0]
        params[f"{prefix}/~/{hk}"] = {"scale": model_sd[tv + ".weight"].reshape(1, 1, 1, c).numpy(),
                                      "offset": model_sd[tv + ".bias"].reshape(1, 1, 1, c).numpy()}
        for ema, buf in (("mean_ema", "running_mean"), ("var_ema", "running_var")):
            v = model_sd[f"{tv}.{buf}"].reshape(1, 1, 1, c).numpy()
            state[f"{prefix}/~/{hk}/~/{ema}"] = {"average": v, "hidden": v, "counter": np.array(5004, np.int32)}

    conv("initial_conv", "conv1"), bn("initial_batchnorm", "bn1")
    for g, n in enumerate(layers):
        for b in range(n):
            p, t = f"block_group_{g}/~/block_{b}/~/", f"layer{g + 1}.{b}."
            if b == 0:
                conv(p + "shortcut_conv", t + "downsample.0"), bn(p + "shortcut_batchnorm", t + "downsample.1")
            for j in range(3):
                conv(p + f"conv_{j}", t + f"conv{j + 1}"), bn(p + f"batchnorm_{j}", t + f"bn{j + 1}")
    rng = np.random.default_rng(0)
    params["projector/~/linear"] = {"w": rng.random((8, 4), np.float32), "b": np.zeros(4, np.float32)}
    params["projector/~/batch_norm"] = {"scale": np.ones(4, np.float32), "offset": np.zeros(4, np.float32)}
    params["predictor/~/linear_1"] = {"w": rng.random((4, 4), np.float32)}
    params["classifier"] = {"w": rng.random((8, 10), np.float32), "b": np.zeros(10, np.float32)}
    state["projector/~/batch_norm/~/mean_ema"] = {"average": np.zeros(4, np.float32), "hidden": np.zeros(4, np.float32),
                                                  "counter": np.array(1, np.int32)}
    return params, state


class _ByolExperimentState(NamedTuple):  # byol/byol_experiment.py's field order
    online_params: dict
    target_params: dict
    online_state: dict
    target_state: dict
    opt_state: tuple


@pytest.fixture
def byol_module(monkeypatch):
    """Pickle the NamedTuple by reference as byol.byol_experiment._ByolExperimentState, as dill does."""
    pkg, mod = types.ModuleType("byol"), types.ModuleType("byol.byol_experiment")
    mod._ByolExperimentState = _ByolExperimentState
    monkeypatch.setattr(_ByolExperimentState, "__module__", "byol.byol_experiment")
    monkeypatch.setitem(sys.modules, "byol", pkg)
    monkeypatch.setitem(sys.modules, "byol.byol_experiment", mod)


def write_byol_pkl(path, src, layers, as_namedtuple=True):
    params, state = haiku_trees(src.state_dict(), layers)
    decoy = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in params.items()}  # target network
    decoy_state = {k: {n: np.zeros_like(a) for n, a in v.items()} for k, v in state.items()}
    if as_namedtuple:
        exp = _ByolExperimentState(params, decoy, state, decoy_state, ({"mu": decoy},))
    else:
        exp = {"target_params": decoy, "online_params": params, "target_state": decoy_state, "online_state": state}
    with open(path, "wb") as f:  # checkpointing.py: dill.dump(checkpoint_data, f, protocol=2)
        pickle.dump({"experiment_state": exp, "step": 300000, "rng": np.array([0, 42], np.uint32)}, f, protocol=2)


@pytest.mark.parametrize("as_namedtuple", [True, False])
def test_byol_haiku_pickle_round_trip(tmp_path, byol_module, as_namedtuple):
    layers = (1, 2, 1, 1)
    src = randomize(S.WideResNet(layers, width=1, same=True), seed=21)
    path = tmp_path / "pretrain_res50x1.pkl"
    write_byol_pkl(path, src, layers, as_namedtuple)
    dst = S.WideResNet(layers, width=1, same=True)
    B.load_byol(dst, str(path))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst.eval()(x))
    # and via `neardup convert byol`: a torchvision-layout file the same loader takes
    from neardup.cli import main

    out = tmp_path / "byol_r50_1x.pth"
    r = CliRunner().invoke(main, ["convert", "byol", str(path), str(out)])
    assert r.exit_code == 0, r.output
    assert "blocks [1, 2, 1, 1]" in r.output
    sd = torch.load(out, weights_only=True)
    assert "layer2.1.conv3.weight" in sd and not any(k.startswith(("projector", "fc")) for k in sd)
    dst2 = S.WideResNet(layers, width=1, same=True)
    B.load_byol(dst2, str(out))
    with torch.no_grad():
        assert torch.equal(src(x), dst2.eval()(x))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_byol_pickle_reader_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"experiment_state": _Evil()}, f, protocol=2)
    with pytest.raises(UsageError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        C.read_haiku_pickle(path)


def test_byol_registry_with_solo_learn_and_lightly_files(tmp_path):
    import torchvision.models as tvm

    src = randomize(S.WideResNet(width=1, same=True), seed=22)
    body = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    solo = {"backbone." + k: v for k, v in body.items()}
    solo.update({"projector.0.weight": torch.zeros(4, 2048), "momentum_backbone.conv1.weight": torch.zeros(1),
                 "classifier.weight": torch.zeros(10, 2048)})
    tv = tvm.resnet50(weights=None)
    tv.load_state_dict(src.state_dict())
    lightly = {"backbone." + k: v for k, v in torch.nn.Sequential(*list(tv.children())[:-1]).state_dict().items()}
    assert "backbone.4.0.conv1.weight" in lightly  # layer1 at index 4 of resnet.children()
    x = None
    for fname, sd in (("solo.ckpt", {"state_dict": solo}), ("lightly.pth", lightly)):
        torch.save(sd, tmp_path / fname)
        e = create_extractor("byol_r50_1x", weights=str(tmp_path / fname), device="cpu", input_size=64)
        if x is None:
            x = e.transform(make_image(3, (120, 90)))[None]
            with torch.no_grad():
                ref = src(x).numpy()
        assert np.array_equal(e.encode(x), ref), fname
    assert e.cfg.mean == (0.485, 0.456, 0.406)  # BYOL normalises with ImageNet statistics


# --------------------------------------------------------------------------- end to end on photos
def test_extract_simclr_v2_r50_1x_sk1_on_bsds_photos(tmp_path, bsds_val):
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    src = randomize(S.build_v2(50, 1, 1), seed=31)
    weights = tmp_path / "r50_1x_sk1.pth"
    torch.save({"resnet": src.resnet.state_dict(), "head": src.head.state_dict()}, weights)
    listing = tmp_path / "eight.txt"
    paths = sorted(str(p) for p in bsds_val.glob("*.jpg"))[:8]
    listing.write_text("\n".join(paths) + "\n")
    rep = extract_features(str(listing), tmp_path / "feats", ExtractConfig("simclr_v2_r50_1x_sk1",
                           weights=str(weights), engine="torch", workers=0, batch_size=4, device="cpu"),
                           show_progress=False)
    assert rep.count == 8 and not rep.skipped
