"""Every path that extracts builds its extractor the same way: `extract`, `query`, `index add` (and finetune
validation) get the engine from create_extractor and a progress bar; a fine-tuned index can be queried."""

from __future__ import annotations

import pytest
import torch

from neardup.errors import UsageError
from neardup.extract import onnx_engine
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.registry import MODELS, builder_name, create_extractor, get_model_cfg
from neardup.fastsearch.persist import add_images, build_index_dir, query_index
from tests.conftest import make_image
from tests.helpers import expect_error, invoke

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finetuned_index(tmp_path_factory):
    """An index of 6 images extracted with a fine-tuned EfficientNet-Lite0 (random weights) at a 32-pixel crop."""
    from neardup.simclr.model import export_encoder

    d = tmp_path_factory.mktemp("ft")
    images = d / "images"
    images.mkdir()
    for i in range(6):
        make_image(i).save(images / f"img{i}.png")
    cfg = get_model_cfg("efficientnet_lite0")
    torch.manual_seed(0)
    export_encoder(d / "best.pt", MODELS["efficientnet_lite0"].arch(cfg), cfg)
    extract_features(images, d / "f", ExtractConfig("finetuned", weights=str(d / "best.pt"), input_size=32,
                                                     engine="torch", workers=0), show_progress=False)
    build_index_dir(d / "f", "Flat", d / "idx")
    return d


def test_stored_names_map_to_their_builder():
    assert builder_name("finetuned:efficientnet_lite0") == "finetuned" and builder_name("phash") == "phash"


def test_a_finetuned_index_is_queried_with_its_weights(finetuned_index, capsys):
    d = finetuned_index
    with pytest.raises(UsageError, match=r"fine-tuned encoder \(finetuned:efficientnet_lite0\): pass --weights"):
        query_index(d / "idx", [str(d / "images" / "img1.png")], k=2)
    res = query_index(d / "idx", [str(d / "images" / "img1.png")], k=2, weights=str(d / "best.pt"), workers=0,
                      show_progress=True)
    top = res.results[0]["neighbours"][0]
    assert top["path"].endswith("img1.png") and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert "encode finetuned:efficientnet_lite0" in capsys.readouterr().err  # the progress bar


def test_cli_query_and_add_of_a_finetuned_index(finetuned_index, tmp_path):
    d = finetuned_index
    expect_error("query", d / "idx", d / "images" / "img2.png", message="fine-tuned encoder")
    res = invoke("query", d / "idx", d / "images" / "img2.png", "-k", "1", "--weights", d / "best.pt",
                 "--workers", "0")
    assert '"query"' in res.stdout and "img/s" in res.stderr  # JSON on stdout, the progress bar on stderr
    new = tmp_path / "new"
    new.mkdir()
    make_image(50).save(new / "n.png")
    n, skipped = add_images(d / "idx", new, weights=str(d / "best.pt"), workers=0)
    assert n == 1 and skipped == []


@pytest.mark.skipif(not onnx_engine.available(), reason="onnxruntime not installed")
def test_query_runs_the_engine_extract_runs(finetuned_index, tmp_path, monkeypatch):
    """`auto` picks ONNX Runtime on CPU for queries too (they used to run eager PyTorch, 3.6x slower)."""
    monkeypatch.setenv("NEARDUP_CACHE", str(tmp_path / "cache"))
    d = finetuned_index
    query_index(d / "idx", [str(d / "images" / "img3.png")], k=1, weights=str(d / "best.pt"), workers=0)
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))  # exported and run, as `neardup extract` does
    e = create_extractor("finetuned", weights=str(d / "best.pt"), input_size=32, engine="auto")
    assert e.engine == "onnx" and e.describe()["engine"] == "onnx"
    with pytest.raises(UsageError, match="--engine onnx applies to networks"):
        create_extractor("phash", engine="onnx")
