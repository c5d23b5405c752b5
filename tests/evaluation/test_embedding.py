"""``neardup embed-map``: t-SNE (openTSNE) and UMAP maps, deterministic, coloured by class, with thumbnails."""

from __future__ import annotations

import csv
import sys
import types

import numpy as np
import pytest
from matplotlib.offsetbox import AnnotationBbox

from neardup.errors import UsageError
from neardup.evaluation.embedding import EMBEDDERS, EmbedConfig, draw_map, embed, spread_points
from neardup.outdir import FIGURE_TAG
from tests.helpers import expect_error, invoke

from .conftest import clustered, labelled_store


def test_tsne_is_deterministic_and_separates_classes() -> None:
    X, y = clustered(n_classes=3, sizes=(15, 20), noise=0.3, seed=1)
    a = embed(X, EmbedConfig(seed=3), "cosine")
    b = embed(X, EmbedConfig(seed=3), "cosine")
    assert a.shape == (len(X), 2) and np.array_equal(a, b)
    # classes stay apart in the map: every point's nearest map neighbour has its class
    d = np.linalg.norm(a[:, None] - a[None], axis=2)
    np.fill_diagonal(d, np.inf)
    assert np.mean(y[d.argmin(axis=1)] == y) > 0.95


def test_tsne_lowers_perplexity_for_few_images() -> None:
    X, _ = clustered(n_classes=2, sizes=(5, 5), seed=0)
    cfg = EmbedConfig(perplexity=30)
    assert embed(X, cfg, "cosine").shape == (10, 2)
    assert cfg.applied == {"perplexity": pytest.approx(3.0)}
    with pytest.raises(UsageError, match="at least 5 images"):
        embed(X[:4], EmbedConfig(), "cosine")


def test_umap_absent_is_one_error_naming_the_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError, as when it is not installed
    X, y = clustered(n_classes=2, sizes=(5, 6))
    store, root = labelled_store(tmp_path, X, [f"c{c}" for c in y])
    expect_error("embed-map", store, "--class-folders", root, "--method", "umap", "--out", tmp_path / "m",
                 message="--method umap needs the umap-learn package, which is not installed: pip install umap-learn")
    assert not (tmp_path / "m").exists()


def test_umap_present_is_called_with_the_seed_and_metric(monkeypatch) -> None:
    calls = []

    class UMAP:  # the umap-learn interface neardup uses: UMAP(**params).fit_transform(X)
        def __init__(self, **params):
            calls.append(params)

        def fit_transform(self, X):
            return np.asarray(X)[:, :2] * 2.0

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=UMAP))
    X, _ = clustered(n_classes=2, sizes=(5, 5), dim=4)
    cfg = EmbedConfig(method="umap", seed=9, n_neighbors=15)
    xy = embed(X, cfg, "l2")
    np.testing.assert_allclose(xy, X[:, :2] * 2.0)
    assert calls == [{"n_components": 2, "n_neighbors": 9, "metric": "euclidean", "random_state": 9}]
    assert cfg.applied == {"n_neighbors": 9}  # lowered to n - 1 for 10 images


def test_cli_map_files_with_classes_and_thumbnails(tmp_path) -> None:
    X, y = clustered(n_classes=3, sizes=(6, 8), seed=2)
    classes = [f"cls{c}" for c in y]
    store, root = labelled_store(tmp_path, X, classes, images=True)
    out = tmp_path / "map"
    res = invoke("embed-map", store, "--class-folders", root, "--out", out, "--thumbnails", 5, "--seed", 1)
    assert "tsne map of" in res.output and "3 classes" in res.output
    png, pdf = (out / "map.png").read_bytes(), (out / "map.pdf").read_bytes()
    assert png.startswith(b"\x89PNG") and FIGURE_TAG.encode() in png and pdf.startswith(b"%PDF")
    with open(out / "embedding.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == classes and len({(r["x"], r["y"]) for r in rows}) == len(X)
    first = (out / "embedding.csv").read_text()
    invoke("embed-map", store, "--class-folders", root, "--out", out, "--thumbnails", 5, "--seed", 1)
    assert (out / "embedding.csv").read_text() == first  # same seed, same map
    assert (out / "map.pdf").read_bytes() == pdf
    invoke("embed-map", store, "--out", tmp_path / "nolabels")  # labels are optional
    with open(tmp_path / "nolabels" / "embedding.csv", newline="", encoding="utf-8") as f:
        assert {r["class"] for r in csv.DictReader(f)} == {""}


def test_legend_up_to_twenty_classes_then_a_colour_map() -> None:
    xy = np.random.default_rng(0).standard_normal((60, 2))
    few = draw_map(xy, [f"c{i % 5}" for i in range(60)], "t")
    assert len(few.axes[0].get_legend().get_texts()) == 5
    many = draw_map(xy, [f"c{i % 30}" for i in range(60)], "t")
    assert many.axes[0].get_legend() is None and "30 classes" in many.axes[0].get_title()
    colours = many.axes[0].collections[0].get_facecolors()
    assert len({tuple(np.round(c, 4)) for c in colours}) == 30  # one colour per class


def test_thumbnails_are_drawn_from_the_paths(tmp_path) -> None:
    X, y = clustered(n_classes=2, sizes=(6, 6), seed=0)
    classes = [f"t{c}" for c in y]
    store, root = labelled_store(tmp_path, X, classes, images=True)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    (root / "t0" / "broken.png").write_bytes(b"not an image")
    xy = np.random.default_rng(0).standard_normal((len(paths) + 1, 2))
    fig = draw_map(xy, classes + ["t0"], "t", paths + [str(root / "t0" / "broken.png")], thumbnails=len(xy))
    boxes = [a for a in fig.axes[0].artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == len(paths)  # every readable image, the broken one skipped


def test_spread_points_are_distinct_and_spread() -> None:
    xy = np.concatenate([np.zeros((50, 2)), np.array([[10.0, 0], [0, 10.0], [10.0, 10.0]])])
    idx = spread_points(xy, 4, seed=0)
    assert len(set(idx.tolist())) == 4 and {50, 51, 52} <= set(idx.tolist())
    assert len(spread_points(xy, 100)) == len(xy)


def test_hashes_and_bad_input(tmp_path) -> None:
    bits = np.random.default_rng(0).integers(0, 2, (12, 64)).astype(np.uint8)
    xy = embed(np.packbits(bits, axis=1), EmbedConfig(), "hamming")
    assert xy.shape == (12, 2) and np.isfinite(xy).all()
    with pytest.raises(UsageError, match="binary hashes"):
        embed(np.packbits(bits, axis=1), EmbedConfig(metric="cosine"), "hamming")
    with pytest.raises(UsageError, match="unknown embedding method"):
        EmbedConfig(method="pca").validate()
    with pytest.raises(UsageError, match="--perplexity"):
        EmbedConfig(perplexity=float("nan")).validate()
    assert set(EMBEDDERS) == {"tsne", "umap"}
    X, y = clustered(n_classes=2, sizes=(5, 5))
    store, root = labelled_store(tmp_path, X, [f"c{c}" for c in y])
    lab = tmp_path / "few.csv"
    some = sorted(root.rglob("*.png"))[:4]
    lab.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in some))
    expect_error("embed-map", store, "--labels", lab, "--out", tmp_path / "m",
                 message="6 feature path(s) have no label")
    expect_error("embed-map", store, "--method", "pca", "--out", tmp_path / "m", message="Invalid value for '--method'")
