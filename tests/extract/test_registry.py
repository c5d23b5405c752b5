"""The registry drives everything (timm-style): every entry builds on the meta device and gives its features,
and a model registered in a test shows up in `neardup models`, its JSON and these loops."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Unpack

import numpy as np
import pytest
import torch
from torch import nn

from neardup.errors import UsageError
from neardup.extract.base import Extractor, TorchExtractor, amp_dtype, resolve_amp, resolve_device
from neardup.extract.config import ExtractConfig
from neardup.extract.registry import (
    MODELS,
    ExtractorOptions,
    ModelCfg,
    create_extractor,
    get_entry,
    list_models,
    register_model,
    unregister_model,
)
from neardup.extract.zoo_info import build_architecture, count_params
from tests.conftest import make_image
from tests.helpers import invoke


def networks() -> list[str]:
    """Every registered model with a bare architecture: what the loops below cover."""
    return [c.name for c in list_models() if get_entry(c.name).arch is not None]


def hashes() -> list[str]:
    return [c.name for c in list_models() if c.kind == "hash"]


def check_meta_forward(name: str) -> None:
    """Built on the meta device (nothing allocated), one forward at the model's crop gives (1, num_features);
    every stage path the entry names exists; parameters are counted from the same forward."""
    cfg = get_entry(name).cfg
    net = build_architecture(name)
    assert net is not None and next(net.parameters()).device.type == "meta"
    with torch.no_grad():
        out = net.eval()(torch.empty(1, 3, cfg.input_size, cfg.input_size, device="meta"))
    assert tuple(out.shape) == (1, cfg.num_features), name
    for group in cfg.stages:
        for path in group:
            net.get_submodule(path)  # AttributeError names a wrong path
    assert 0 < count_params(net, cfg.input_size) <= sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", networks())
def test_every_network_builds_on_the_meta_device(name):
    check_meta_forward(name)


@pytest.mark.parametrize("name", hashes())
def test_every_hash_encodes_packed_bits(name):
    e = create_extractor(name)
    code = e.encode(torch.stack([e.transform(make_image(0))]))
    assert code.shape == (1, e.num_features // 8) and code.dtype == np.uint8


@pytest.mark.parametrize("cfg", list_models(), ids=lambda c: c.name)
def test_every_entry_is_a_network_a_hash_or_reads_its_weights(cfg):
    entry = get_entry(cfg.name)
    assert entry.arch is not None or cfg.kind == "hash" or cfg.extra.get("sizes_from_weights"), cfg.name
    assert entry.cfg.to_dict()["name"] == cfg.name and json.dumps(entry.cfg.to_dict())


def test_freezable_networks_name_their_stages():
    """What finetune --freeze-stages could freeze before (EfficientNet-Lite0, torchvision-layout ResNets) still is."""
    freezable = {c.name for c in list_models() if c.stages}
    assert {"efficientnet_lite0", "resnet50", "wide_resnet50_2", "simclr_v1_r50_1x", "byol_r50_1x",
            "simclr_v2_r50_1x_sk0"} <= freezable
    assert get_entry("efficientnet_lite0").cfg.stages[:2] == (("net.conv_stem", "net.bn1"), ("net.blocks.0",))


# --------------------------------------------------------------------------- a model registered by a test
TOY = ModelCfg(name="toy_net_for_tests", num_features=8, family="toy", input_size=32, resize_size=36,
               weights_format="none (random)", weights_hint="no weights", feature_layer="global average pool",
               paper="none", license="none", stages=(("conv",), ("block",)))


def _toy_arch(cfg: ModelCfg) -> nn.Module:
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), block=nn.Conv2d(4, 8, 3),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten()))


@pytest.fixture
def toy_model() -> Iterator[ModelCfg]:
    @register_model(TOY, arch=_toy_arch, weights_found=lambda: True)
    def build(cfg: ModelCfg, *, weights: str | None = None, layer: str | None = None,
              **options: Unpack[ExtractorOptions]) -> TorchExtractor:
        torch.manual_seed(0)
        return TorchExtractor(cfg, _toy_arch(cfg), **options)

    try:
        yield TOY
    finally:
        unregister_model(TOY.name)


def test_a_registered_model_is_listed_looped_and_extracted(toy_model, image_dir, tmp_path):
    from neardup.extract.pipeline import extract_features
    from neardup.extract.store import FeatureStore
    from neardup.simclr.model import freeze_stages, load_encoder

    assert toy_model.name in networks() and toy_model.name in [c.name for c in list_models()]
    check_meta_forward(toy_model.name)
    table = invoke("models").output
    assert any(line.split()[:4] == [toy_model.name, "8", "0.0M", "yes"] for line in table.splitlines()), table
    rows = {r["name"]: r for r in json.loads(invoke("models", "--json").output)}
    assert rows[toy_model.name]["params"] == 0.0 and rows[toy_model.name]["family"] == "toy"  # 408 parameters
    assert rows[toy_model.name]["stages"] == [["conv"], ["block"]]
    # extracted like any other model, and fine-tuning finds its stages in the entry
    rep = extract_features(image_dir, tmp_path / "f", ExtractConfig(toy_model.name, workers=0, engine="torch"),
                           show_progress=False)
    assert rep.count == 6 and FeatureStore.open(tmp_path / "f").dim == 8
    encoder, _ = load_encoder(toy_model.name, None)
    assert freeze_stages(encoder, 1) == sum(p.numel() for p in encoder.parameters())  # stem + the one stage
    unregister_model(toy_model.name)
    assert toy_model.name not in networks() and toy_model.name not in MODELS


# --------------------------------------------------------------------------- the contract
def test_extractors_follow_the_contract(toy_model):
    net, hashed = create_extractor(toy_model.name), create_extractor("phash")
    for e in (net, hashed):
        assert isinstance(e, Extractor)
        assert set(e.describe()) == {"model", "num_features", "metric", "dtype", "preprocessing", "feature_layer",
                                     "device", "amp", "engine", "quantization"}
    assert (net.name, net.num_features, net.metric, net.dtype) == (toy_model.name, 8, "cosine", np.float32)
    assert (hashed.metric, hashed.dtype, hashed.engine, hashed.draft_size) == ("hamming", np.uint8, "imagehash", None)
    assert net.draft_size == (36, 36) and net.describe()["preprocessing"] == toy_model.preprocessing()


def test_none_options_never_override_model_defaults(toy_model):
    e = create_extractor(toy_model.name, weights=None, device=None, amp=None, engine=None, input_size=None,
                         layer=None, compile=None)
    assert e.cfg == toy_model and e.engine == "torch" and e.amp == "off" and e.device.type == "cpu"
    assert create_extractor(toy_model.name, input_size=48).cfg.resize_size == 54  # the crop ratio is kept
    with pytest.raises(UsageError, match="unknown --engine 'fast'"):
        create_extractor(toy_model.name, engine="fast")


def test_device_and_amp_are_resolved_once():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="--device cuda requested but no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert (resolve_amp("auto", cpu), resolve_amp(None, gpu), resolve_amp("fp16", cpu)) == ("off", "bf16", "fp16")
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("off") is None
    with pytest.raises(UsageError, match="unknown --amp 'fp8'"):
        resolve_amp("fp8", cpu)


# --------------------------------------------------------------------------- ExtractConfig and the CLI
@pytest.mark.parametrize("change, message", [
    (dict(batch_size=0), "--batch-size must be an integer >= 1"),
    (dict(workers=-1), "--workers must be an integer >= 0"),
    (dict(dtype="float64"), "unknown --dtype 'float64'"),
    (dict(engine="tensorrt"), "unknown --engine 'tensorrt'"),
    (dict(amp="fp8"), "unknown --amp 'fp8'"),
    (dict(globs="*.jpg"), "--glob must be a list of patterns"),
    (dict(whiten_sample=1), "--whiten-sample must be an integer >= 2"),
])
def test_extract_config_validates_like_the_cli(change, message):
    with pytest.raises(UsageError, match=message):
        ExtractConfig(**change).validate()
    assert ExtractConfig().validate() == ExtractConfig()


def test_cli_builds_the_config_from_given_flags_only(monkeypatch, image_dir, tmp_path):
    """Options default to None: an unset flag leaves ExtractConfig's default, a given one overrides it."""
    import neardup.extract.pipeline as pipeline

    seen = {}

    def fake(src, out, config, **kw):
        seen["config"] = config
        return pipeline.ExtractReport(str(out), config.model, 0)

    monkeypatch.setattr(pipeline, "extract_features", fake)
    invoke("extract", image_dir, "--out", tmp_path / "o", "--model", "phash")
    assert seen["config"] == ExtractConfig(model="phash")
    invoke("extract", image_dir, "--out", tmp_path / "o", "--model", "dhash", "--batch-size", "7", "--glob", "*.png",
           "--normalize")
    assert seen["config"] == ExtractConfig(model="dhash", batch_size=7, globs=("*.png",), normalize=True)


def test_squash_resizes_the_whole_image_and_crop_cuts_the_long_side():
    """fit: a tall image, red top half and blue bottom half; the crop keeps its middle, squash keeps both halves."""
    from dataclasses import replace

    from PIL import Image

    from neardup.extract.base import build_transform
    from neardup.extract.registry import ModelCfg

    img = Image.new("RGB", (40, 200), (255, 0, 0))
    img.paste((0, 0, 255), (0, 100, 40, 200))
    cfg = ModelCfg("t", 8, input_size=32, resize_size=36, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    crop = build_transform(cfg)(img)
    squash = build_transform(replace(cfg, fit="squash"))(img)
    assert crop.shape == squash.shape == (3, 32, 32)
    assert squash[0, :14].min() > 0.99 and squash[2, 18:].min() > 0.99  # top red, bottom blue, both kept
    assert crop[0, :14].min() > 0.99 and crop[2, 18:].min() > 0.99  # the 36x180 middle crop: red, then blue
    tall = Image.new("RGB", (40, 400), (255, 0, 0))
    tall.paste((0, 0, 255), (0, 300, 40, 400))  # blue bottom quarter
    assert build_transform(cfg)(tall)[2].max() < 0.01  # the centre crop never reaches the bottom quarter
    assert build_transform(replace(cfg, fit="squash"))(tall)[2, 26:].min() > 0.99
    assert cfg.preprocessing().get("fit") is None and replace(cfg, fit="squash").preprocessing()["fit"] == "squash"
