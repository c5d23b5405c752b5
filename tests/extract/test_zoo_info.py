"""zoo_info rows for `neardup models` and the adaptive batch-size helper."""

import numpy as np
import pytest
import torch

from neardup.errors import UsageError
from neardup.extract.batching import AdaptiveEncoder
from neardup.extract.registry import list_models
from neardup.extract.zoo_info import build_architecture, count_params, model_rows


def test_model_rows_cover_the_registry(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "r50_1x_sk1.pth").write_bytes(b"x")
    rows = {r["name"]: r for r in model_rows(with_params=False)}
    assert set(rows) == {c.name for c in list_models()}
    assert rows["simclr_v2_r50_1x_sk1"]["found_locally"] and not rows["simclr_v2_r50_1x_sk0"]["found_locally"]
    assert rows["phash"]["found_locally"] and rows["phash"]["params"] == 0.0
    assert rows["simclr_v2_r50_1x_sk0"]["preprocessing"] == "resize 256 bicubic, crop 224, no normalisation"
    assert rows["inception_v3"]["preprocessing"].startswith("resize 342 bilinear, crop 299, mean (0.485")


@pytest.mark.parametrize("name,millions", [("simclr_v2_r152_3x_sk1", 794.7), ("simclr_v1_r50_4x", 375.4),
                                           ("byol_r50_1x", 23.5), ("vit_b_16", 85.8)])
def test_params_are_counted_on_the_meta_device(name, millions):
    net = build_architecture(name)
    assert next(net.parameters()).device.type == "meta"
    assert round(count_params(net) / 1e6, 1) == millions


def test_adaptive_encoder_halves_on_oom_and_keeps_the_size():
    calls = []

    def encode(x):
        calls.append(len(x))
        if len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return x.numpy() * 2

    enc = AdaptiveEncoder(encode, name="m")
    x = torch.arange(10, dtype=torch.float32)[:, None]
    assert np.array_equal(enc(x), x.numpy() * 2)
    assert enc.batch == 2 and enc.halvings == 2 and calls[:3] == [10, 5, 2]
    enc(x)
    assert max(calls[-5:]) == 2  # the smaller size is kept


def test_adaptive_encoder_fails_clearly_at_batch_one():
    def encode(x):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(UsageError, match="m runs out of GPU memory even at batch size 1"):
        AdaptiveEncoder(encode, 4, name="m")(torch.zeros(4, 1))
