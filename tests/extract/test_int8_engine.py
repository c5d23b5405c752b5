"""The onnx-int8 engine: features close to fp32 on photos, a cached graph keyed by its calibration set, and a
feature space of its own (int8 and fp32 features are never mixed silently)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from neardup.errors import UsageError
from neardup.extract import onnx_engine
from neardup.extract.config import ExtractConfig
from neardup.extract.registry import create_extractor
from neardup.extract.space import FeatureSpace, require_same_space
from tests.conftest import make_image
from tests.helpers import expect_error, invoke

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not onnx_engine.available(), reason="onnxruntime not installed")]

#: per-image cosine int8 vs fp32 on photos the graph was not calibrated on; measured (efficientnet_lite0,
#: bundled calibration, default recipe): BSDS val min 0.989 / mean 0.996 (100 photos), mirrored crops of the
#: bundled photos min 0.956 (gravel, a texture) / mean 0.988
MIN_COSINE, MEAN_COSINE = 0.93, 0.98


@pytest.fixture(scope="module")
def engines():
    """efficientnet_lite0 on PyTorch (fp32) and on the int8 engine with the bundled calibration (~15 s once)."""
    torch.set_num_threads(1)
    return (create_extractor("efficientnet_lite0", device="cpu", engine="torch"),
            create_extractor("efficientnet_lite0", device="cpu", engine="onnx-int8"))


def _cosines(fp32, int8, images: list[Image.Image]) -> np.ndarray:
    batch = torch.stack([fp32.transform(im) for im in images])
    return onnx_engine._cosines(int8.encode(batch), fp32.encode(batch))


def test_int8_features_close_to_fp32_on_unseen_crops(engines):
    """Mirrored 70 % crops of the bundled photos: other pixels than the calibration saw."""
    fp32, int8 = engines
    assert int8.engine == "onnx-int8" and int8.quantization.startswith("int8-")
    crops = []
    for im in onnx_engine.bundled_photos():
        w, h = im.size
        crops.append(ImageOps.mirror(im.crop((w // 10, h // 5, w // 10 + 7 * w // 10, h // 5 + 7 * h // 10))))
    cos = _cosines(fp32, int8, crops)
    assert cos.min() >= MIN_COSINE and cos.mean() >= MEAN_COSINE, cos
    assert cos.mean() < 0.99999  # really quantised: not the fp32 graph


def test_int8_features_close_to_fp32_on_bsds(engines, bsds_val):
    fp32, int8 = engines
    images = [Image.open(p).convert("RGB") for p in sorted(bsds_val.glob("*.jpg"))[:12]]
    cos = _cosines(fp32, int8, images)
    assert cos.min() >= MIN_COSINE and cos.mean() >= MEAN_COSINE, cos


def test_the_quantised_graph_is_cached(engines, monkeypatch):
    _, int8 = engines
    path, mtime = int8.onnx.path, int8.onnx.path.stat().st_mtime_ns

    def no_quantisation(*a, **k):
        raise AssertionError("quantised again")

    monkeypatch.setattr(onnx_engine, "quantize_graph", no_quantisation)
    again = create_extractor("efficientnet_lite0", device="cpu", engine="onnx-int8")
    assert again.onnx.path == path and path.stat().st_mtime_ns == mtime
    assert again.quantization == int8.quantization


def test_another_calibration_set_gives_another_graph(engines, tmp_path, monkeypatch):
    """The key holds the calibration digest: other images -> another file (quantisation replaced by a copy)."""
    _, int8 = engines
    calls = []

    def copy_fp32(fp32_path, out, batch, recipe):
        calls.append((out, batch.shape))
        shutil.copyfile(fp32_path, out)

    monkeypatch.setattr(onnx_engine, "quantize_graph", copy_fp32)
    cal = tmp_path / "cal"
    cal.mkdir()
    for i in range(3):
        make_image(i, (120, 90)).save(cal / f"c{i}.png")
    other = create_extractor("efficientnet_lite0", device="cpu", engine="onnx-int8", calibration=str(cal))
    assert other.quantization != int8.quantization and other.onnx.path != int8.onnx.path
    assert calls == [(other.onnx.path, (3, 3, 224, 224))]
    make_image(9, (120, 90)).save(cal / "c3.png")  # one more image: another digest again
    third = create_extractor("efficientnet_lite0", device="cpu", engine="onnx-int8", calibration=str(cal))
    assert third.quantization not in (other.quantization, int8.quantization) and len(calls) == 2


def test_calibration_digest_follows_the_pixels():
    a = np.zeros((2, 3, 4, 4), np.float32)
    b = a.copy()
    b[1, 0, 0, 0] = 1e-3
    assert onnx_engine.calibration_digest(a) == onnx_engine.calibration_digest(a.copy())
    assert onnx_engine.calibration_digest(a) != onnx_engine.calibration_digest(b)
    assert onnx_engine.calibration_digest(a) != onnx_engine.calibration_digest(a[:1])


def test_a_broken_quantisation_is_refused(engines, tmp_path, monkeypatch):
    """A graph whose features are far from fp32 (here: weights of another network) is never used."""
    cal = tmp_path / "cal"
    cal.mkdir()
    make_image(3, (120, 90)).save(cal / "c.png")
    other = onnx_engine.OnnxEncoder(torch.nn.Sequential(torch.nn.Conv2d(3, 1280, 3), torch.nn.AdaptiveAvgPool2d(1),
                                                        torch.nn.Flatten()), "other", 224)

    def wrong_graph(fp32_path, out, batch, recipe):
        shutil.copyfile(other.fp32_path, out)

    monkeypatch.setattr(onnx_engine, "quantize_graph", wrong_graph)
    with pytest.raises(UsageError, match="int8 graph's features differ from fp32"):
        create_extractor("efficientnet_lite0", device="cpu", engine="onnx-int8", calibration=str(cal))


def test_options_are_checked(tmp_path, image_dir):
    with pytest.raises(UsageError, match="--calibration applies to --engine onnx-int8"):
        ExtractConfig(engine="onnx", calibration=str(image_dir)).validate()
    with pytest.raises(UsageError, match="unknown --engine 'int4'; use auto, torch, onnx, onnx-int8"):
        ExtractConfig(engine="int4").validate()
    with pytest.raises(UsageError, match="--compile runs PyTorch"):
        ExtractConfig(engine="onnx-int8", compile=True).validate()
    with pytest.raises(UsageError, match="--engine onnx-int8 applies to networks"):
        create_extractor("phash", engine="onnx-int8")
    with pytest.raises(UsageError, match="--calibration applies to --engine onnx-int8"):
        create_extractor("efficientnet_lite0", engine="torch", calibration=str(image_dir))
    empty = tmp_path / "empty.txt"
    (tmp_path / "bad.png").write_bytes(b"not a png")
    empty.write_text(str(tmp_path / "bad.png") + "\n")
    with pytest.raises(UsageError, match="no readable image"):
        onnx_engine.calibration_batch(create_extractor("efficientnet_lite0", engine="torch").cfg, empty)


def test_int8_is_its_own_feature_space():
    fp32 = FeatureSpace("efficientnet_lite0", 1280, "cosine")
    int8 = FeatureSpace("efficientnet_lite0", 1280, "cosine", quantization="int8-aaa-bbb")
    other = FeatureSpace("efficientnet_lite0", 1280, "cosine", quantization="int8-ccc-bbb")
    assert require_same_space([int8, FeatureSpace.from_dict(int8.to_dict())], ["a", "b"]) == int8
    for a, b in ((fp32, int8), (int8, fp32), (int8, other)):
        with pytest.raises(UsageError, match="same --engine"):
            require_same_space([a, b], ["a", "b"])


def test_cli_round_trip(engines, image_dir, tmp_path):
    """extract --engine onnx-int8 records the quantisation; resuming with fp32 and mixing with fp32 are refused."""
    _, int8 = engines
    lite0 = ("--model", "efficientnet_lite0")  # the fixture's model (its quantization id names its calibration)
    invoke("extract", image_dir, "--out", tmp_path / "q8", *lite0, "--engine", "onnx-int8", "--workers", 0)
    meta = json.loads((tmp_path / "q8" / "meta.json").read_text())
    job = json.loads((tmp_path / "q8" / "job.json").read_text())
    assert meta["engine"] == "onnx-int8" and meta["quantization"] == job["quantization"] == int8.quantization
    expect_error("extract", image_dir, "--out", tmp_path / "q8", *lite0, "--engine", "onnx", "--workers", 0,
                 message="quantization (--engine onnx-int8/--calibration: int8-")
    invoke("extract", image_dir, "--out", tmp_path / "f32", *lite0, "--engine", "onnx", "--workers", 0)
    assert json.loads((tmp_path / "f32" / "job.json").read_text())["quantization"] is None
    invoke("index", "build", tmp_path / "f32", "--out", tmp_path / "idx")
    expect_error("index", "add", tmp_path / "idx", tmp_path / "q8", message="int8")
    # an int8 index is queried with the int8 engine (the bundled calibration is reproducible)
    invoke("index", "build", tmp_path / "q8", "--out", tmp_path / "idx8")
    res = invoke("query", tmp_path / "idx8", Path(image_dir) / "img2.png", "-k", 1, "--workers", 0)
    top = json.loads(res.stdout[res.stdout.index("{"):])["results"][0]["neighbours"][0]
    assert top["path"].endswith("img2.png") and top["score"] > 0.999
    expect_error("extract", image_dir, "--out", tmp_path / "x", "--engine", "onnx", "--calibration", image_dir,
                 message="--calibration applies to --engine onnx-int8")
