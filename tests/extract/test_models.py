import numpy as np
import pytest
import torch

from neardup.errors import UsageError
from neardup.extract.base import build_transform
from neardup.extract.registry import MODELS, create_extractor, get_model_cfg, list_models
from tests.conftest import make_image


class Unpicklable:
    pass


CAT_CLASSES = {281, 282, 283, 284, 285, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian cat, lynx


@pytest.mark.parametrize("cfg", list_models(), ids=lambda c: c.name)
def test_registry_entries_are_complete(cfg):
    assert (cfg.num_features > 0 or cfg.family == "finetuned") and cfg.metric in ("cosine", "hamming")
    assert cfg.weights_hint and cfg.feature_layer and cfg.paper
    if cfg.kind == "torch" and cfg.family != "finetuned":
        assert cfg.resize_size >= cfg.input_size > 0


def test_efficientnet_lite0_pretrained_top5_is_sensible(sample_photo):
    from neardup.extract.models.efficientnet import build_tf_efficientnet_lite0

    net = build_tf_efficientnet_lite0().eval()
    x = build_transform(get_model_cfg("efficientnet_lite0"))(sample_photo)[None]
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0  # TF-port inputs live in [-1, 1]
    with torch.no_grad():
        top5 = set(net(x).softmax(-1)[0].topk(5).indices.tolist())
    assert len(top5 & CAT_CLASSES) >= 2, top5  # chelsea is a tabby cat


def test_features_are_reproducible_and_pooled(sample_photo):
    e = create_extractor("efficientnet_lite0", device="cpu")
    x = torch.stack([e.transform(sample_photo), e.transform(make_image(0, (300, 200)))])
    a, b = e.encode(x), e.encode(x)
    assert a.shape == (2, 1280) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert (a >= 0).mean() > 0.5  # pooled post-activation features, not logits


def test_wrong_weights_fail_with_the_mismatches(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3)}, bad)
    with pytest.raises(UsageError, match="tensors, model expects|do not fit"):
        create_extractor("efficientnet_lite0", weights=str(bad))
    with pytest.raises(UsageError, match="not found"):
        create_extractor("efficientnet_lite0", weights=str(tmp_path / "missing.pth"))
    pickled = tmp_path / "code.pth"
    torch.save({"obj": Unpicklable()}, pickled)  # needs arbitrary unpickling: must be refused
    with pytest.raises(UsageError, match="cannot read weights"):
        create_extractor("efficientnet_lite0", weights=str(pickled))


def test_resnet_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError, match=r"resnet50-11ad3fa6\.pth.*never downloads"):
        create_extractor("resnet50")


def test_resnet_loads_a_torchvision_state_dict_and_matches_the_source(tmp_path, sample_photo):
    import torchvision.models as tvm

    torch.manual_seed(0)
    src = tvm.resnet50(weights=None).eval()
    path = tmp_path / "resnet50-11ad3fa6.pth"
    torch.save(src.state_dict(), path)  # exactly what torchvision's hub download holds
    e = create_extractor("resnet50", weights=str(path), device="cpu")
    x = e.transform(sample_photo)[None]
    src.fc = torch.nn.Identity()
    with torch.no_grad():
        ref = src(x).numpy()
    assert np.allclose(e.encode(x), ref, atol=1e-5)
    assert e.num_features == ref.shape[1] == 2048


def test_unknown_model_lists_alternatives():
    with pytest.raises(UsageError, match="unknown model 'nope'.*efficientnet_lite0"):
        create_extractor("nope")


def test_input_size_override_keeps_crop_ratio():
    e = create_extractor("efficientnet_lite0", input_size=160)
    assert (e.cfg.input_size, e.cfg.resize_size) == (160, 183)
    assert e.transform(make_image(1, (400, 300))).shape == (3, 160, 160)


@pytest.mark.parametrize("name", [n for n, m in MODELS.items() if m.cfg.kind == "hash"])
def test_hashes_are_64_packed_bits_and_match_imagehash(name, sample_photo):

    from neardup.extract.models.hashes import HASHES

    e = create_extractor(name)
    code = e.encode(torch.stack([e.transform(sample_photo)]))
    assert code.shape == (1, 8) and code.dtype == np.uint8
    ref = np.packbits(np.asarray(HASHES[name][0](sample_photo, hash_size=8).hash).reshape(-1))
    assert np.array_equal(code[0], ref)


def test_onnx_engine_matches_torch(sample_photo):
    e = create_extractor("efficientnet_lite0", device="cpu")
    x = torch.stack([e.transform(sample_photo), e.transform(make_image(4, (320, 240)))])
    ref = e.encode(x)
    o = create_extractor("efficientnet_lite0", device="cpu", engine="onnx")  # the engine is chosen when built
    assert e.engine == "torch" and o.engine == "onnx" and o.describe()["engine"] == "onnx"
    assert o.onnx.max_abs_diff <= 1e-4
    assert np.abs(o.encode(x) - ref).max() <= 1e-4
