"""Supervised torchvision models: table vs torchvision's own weight metadata, dims, state-dict round trips."""

import numpy as np
import pytest
import torch

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.extract.models.torchvision_models import EXTRA
from neardup.extract.registry import MODELS, create_extractor
from tests.conftest import make_image

pytestmark = pytest.mark.usefixtures("one_thread")

ENUMS = {"wide_resnet50_2": "Wide_ResNet50_2_Weights", "wide_resnet101_2": "Wide_ResNet101_2_Weights",
         "inception_v3": "Inception_V3_Weights", "vit_b_16": "ViT_B_16_Weights",
         **{f"efficientnet_b{i}": f"EfficientNet_B{i}_Weights" for i in range(8)}}


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_table_matches_torchvision_weights_and_dims(name):
    import torchvision.models as tvm

    dim, crop, resize, interp, head, files, kw = EXTRA[name]
    cfg = MODELS[name].cfg
    by_file = {w.url.rsplit("/", 1)[1]: w for w in getattr(tvm, ENUMS[name])}
    w = by_file[files[0]]  # preprocessing is that of the first (preferred) file's weights
    t = w.transforms.keywords
    assert (cfg.input_size, cfg.resize_size) == (t["crop_size"], t.get("resize_size", 256))
    assert cfg.interpolation == t.get("interpolation", tvm.efficientnet.InterpolationMode.BILINEAR).value
    assert set(files) <= set(by_file)
    with torch.device("meta"):  # no allocation: counts and shapes only
        net = getattr(tvm, name)(weights=None, **kw).eval()
        assert sum(p.numel() for p in net.parameters()) == w.meta["num_params"]
        setattr(net, head, torch.nn.Identity())
        out = net(torch.empty(2, 3, crop, crop))
    assert tuple(out.shape) == (2, dim) == (2, cfg.num_features)


ROUND_TRIP_SIZE = {"inception_v3": 299, "vit_b_16": 224}  # fixed input sizes; the others run small and fast


@pytest.mark.parametrize("name,size", [(n, ROUND_TRIP_SIZE.get(n, 64)) for n in sorted(EXTRA)])
def test_state_dict_round_trip(tmp_path, name, size):
    import torchvision.models as tvm

    _, _, _, _, head, files, kw = EXTRA[name]
    torch.manual_seed(0)
    src = getattr(tvm, name)(weights=None, **kw).eval()
    path = tmp_path / files[0]
    torch.save(src.state_dict(), path)  # exactly what torchvision's hub download holds
    e = create_extractor(name, weights=str(path), device="cpu", input_size=None if size == EXTRA[name][1] else size)
    x = e.transform(make_image(1, (size + 40, size + 20)))[None]
    setattr(src, head, torch.nn.Identity())
    with torch.no_grad():
        ref = src(x).numpy()
    assert ref.shape == (1, e.num_features)
    assert np.allclose(e.encode(x), ref, atol=1e-5)
