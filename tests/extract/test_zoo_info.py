"""zoo_info rows for `neardup models`: every registry entry, parameter counts on the meta device."""

import pytest

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
