"""Score normalisation in dedup (``--normalize-scores``): scores by hand, planted copies found on the normalised
scale, the large path equal to the in-memory one, changed options refused, bad values one Error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neardup.dedup.find import DedupConfig, find_duplicates, knn
from neardup.dedup.normalization import Background, normalise_knn
from neardup.dedup.scan import run_scan
from neardup.dedup.scores import Draw
from neardup.errors import UsageError
from neardup.fastsearch.normalize import ScoreNormalization
from tests.dedup_fixtures import _photo
from tests.helpers import expect_error, invoke

#: scikit-image images that are none of tests/dedup_fixtures.PHOTOS: a background of copies of nothing
BACKGROUND = ("brick", "grass", "gravel", "text", "page", "moon", "checkerboard", "cell", "microaneurysms", "logo",
              "shepp_logan_phantom")
#: on the normalised scale (k 3, mean, beta 1) with efficientnet_lite0 and BACKGROUND: every planted copy scores
#: >= 0.36 against its original (lowest: the half-size star field), every pair of different photos <= 0.14
T = 0.25


@pytest.fixture(scope="module")
def background_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("background")
    for name in BACKGROUND:
        _photo(name).save(d / f"{name}.jpg", quality=95)
    return d


@pytest.fixture(scope="module")
def background_features(tmp_path_factory: pytest.TempPathFactory, background_images: Path, lite0: Any) -> Path:
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    out = tmp_path_factory.mktemp("bgf") / "features"
    extract_features(background_images, out, ExtractConfig(engine="torch"), extractor=lite0, show_progress=False)
    return out


def names(result: Any) -> list[set[str]]:
    return sorted(({Path(p).name for p in g} for g in result.path_groups()), key=sorted)


def expected(made: dict[str, str]) -> list[set[str]]:
    return sorted(({copy, orig} for copy, orig in made.items()), key=sorted)


# ---------------------------------------------------------------------------------------------------- by hand
def test_biases_and_edge_scores_by_hand() -> None:
    X = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8]], dtype=np.float32)
    B = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    bg = Background(ScoreNormalization("unused", k=2), B, "features", "-")
    # similarities to the background: x0 [1, 0, -1], x1 [.8, .6, -.8], x2 [0, 1, 0], x3 [.6, .8, -.6]
    np.testing.assert_allclose(bg.bias(X), [0.5, 0.7, 0.5, 0.7], atol=1e-6)  # mean of the 2 nearest
    kth = Background(ScoreNormalization("unused", k=2, reduction="kth"), B, "features", "-")
    np.testing.assert_allclose(kth.bias(X), [0.0, 0.6, 0.0, 0.6], atol=1e-6)  # the 2nd nearest
    sims, nbrs = knn(X, 4, exact_limit=100)
    bias = bg.bias(X)
    for beta, want in ((1.0, {(0, 1): 0.8 - 0.6, (1, 3): 0.96 - 0.7, (0, 2): 0.0 - 0.5, (2, 3): 0.8 - 0.6,
                              (0, 3): 0.6 - 0.6, (1, 2): 0.6 - 0.6}),
                       (2.0, {(0, 1): 0.8 - 1.2, (1, 3): 0.96 - 1.4, (0, 2): -1.0})):
        norm = normalise_knn(sims, nbrs, bias, beta)
        got = {(i, int(j)): float(s) for i in range(4) for j, s in zip(nbrs[i], norm[i], strict=True)}
        for (i, j), v in want.items():
            assert got[(i, j)] == pytest.approx(v, abs=1e-6) and got[(j, i)] == pytest.approx(v, abs=1e-6)
        o = Background(ScoreNormalization("unused", k=2, beta=beta), B, "features", "-").offsets(bias)
        assert (X[0] @ X[1] - o[0] - o[1]) == pytest.approx(want[(0, 1)], abs=1e-6)  # the guard's scale
    # the calibration's scores: a copy with its own bias against its source's, a decoy pair with both of theirs
    draw = Draw(pos=np.array([0.9]), source=np.array([1]), pos_bias=np.array([0.3], np.float32),
                decoys=np.array([0.4]), decoy_bias=np.array([[0.2, 0.6]], np.float32))
    pos, dec = draw.scores(bias, beta=1.0)
    assert pos[0] == pytest.approx(0.9 - (0.3 + 0.7) / 2) and dec[0] == pytest.approx(0.4 - (0.2 + 0.6) / 2)
    assert draw.scores()[0][0] == 0.9  # without normalisation: raw


# ---------------------------------------------------------------------------------------------------- scans
def test_a_normalised_scan_finds_the_planted_copies(tmp_path: Path, collection, lite0,
                                                    background_features: Path) -> None:
    import torch

    from neardup.data.images import load_image
    from neardup.dedup.features import unit_rows
    from neardup.extract.store import FeatureStore

    folder, made = collection
    out = tmp_path / "scan"
    cfg = DedupConfig(threshold=T, normalize_scores=str(background_features))
    r = run_scan([str(folder)], out, cfg, extractor=lite0)
    assert names(r) == expected(made)
    # every reported score is the hand computation on the features: cosine - (bias_a + bias_b) / 2
    paths = [f.path for f in r.files]
    X = unit_rows(lite0.encode(torch.stack([lite0.transform(load_image(p)) for p in paths])), lite0.metric)
    B = unit_rows(np.asarray(FeatureStore.open(background_features).features()), "cosine")
    top3 = np.sort(X @ B.T, axis=1)[:, -3:]
    bias = top3.mean(axis=1)
    assert r.pairs
    for a, b, s in r.pairs:
        assert s == pytest.approx(float(X[a] @ X[b] - (bias[a] + bias[b]) / 2), abs=2e-4)
    for g, m in r.groups().items():
        k = r.keepers[g]
        for i in m[1:]:
            raw = 1.0 if r.kinds[i] == "exact" else float(X[i] @ X[k])
            assert r.scores[i] == pytest.approx(raw - (bias[i] + bias[k]) / 2, abs=2e-4)
    summary = json.loads((out / "summary.json").read_text())
    norm = summary["normalization"]
    assert (norm["background"], norm["k"], norm["beta"], norm["reduction"], norm["n_background"]) == (
        str(background_features), 3, 1.0, "mean", len(BACKGROUND))
    assert norm["background_kind"] == "features"
    page = (out / "report.html").read_text()
    assert "normalised score" in page and "Score normalisation" in page
    # without normalisation the same number is a cosine, low enough to merge different photos
    raw = find_duplicates([str(folder)], tmp_path / "raw", DedupConfig(threshold=T), extractor=lite0)
    assert max(len(g) for g in raw.path_groups()) > 2


def test_the_large_path_normalises_like_the_in_memory_one(tmp_path: Path, collection, lite0,
                                                          background_features: Path) -> None:
    folder, made = collection
    out = tmp_path / "scan"
    cfg = DedupConfig(threshold=T, normalize_scores=str(background_features))
    whole = find_duplicates([str(folder)], out, cfg, extractor=lite0)
    streamed = find_duplicates([str(folder)], out, DedupConfig(**{**vars(cfg), "exact_limit": 3}), extractor=lite0)
    assert names(streamed) == names(whole) == expected(made)
    assert streamed.kinds == whole.kinds
    np.testing.assert_allclose(streamed.scores, whole.scores, atol=1e-5)


def test_a_calibrated_scan_with_a_background_of_images(tmp_path: Path, collection, background_images: Path) -> None:
    folder, made = collection
    out = tmp_path / "scan"
    res = invoke("dedup", folder, "--out", out, "--normalize-scores", background_images, "--engine", "torch",
                 "--model", "efficientnet_lite0", "--precision", "0.99",
                 "--calibration-images", "12", "--copies-per-image", "2", "--no-report")
    assert "(normalised score; calibrated: precision" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["normalization"]["background_kind"] == "images" and summary["threshold_source"] == "calibrated"
    found = [set(Path(p).name for p in g) for g in
             _groups(out / "groups.csv")]
    assert all(g in expected(made) for g in found) and {"copy_exact.jpg", made["copy_exact.jpg"]} in found
    assert len(found) >= 4  # the half-size star field is the one the calibrated threshold may miss
    cached = list((out / "background").glob("*/meta.json"))
    assert len(cached) == 1  # the background was extracted once, inside the scan folder
    with np.load(out / "calibration.npz") as z:  # the calibration ran on the normalised scale
        assert summary["threshold"] == pytest.approx(summary["calibration"]["threshold"], abs=1e-6)
        assert z["pos"].max() < 0.95 and len(z["draw_pos_bias"]) == len(z["pos"]) and z["draw_pos_bias"].min() > 0
    invoke("dedup", folder, "--out", out, "--threshold", "0.6", "--engine", "torch", "--model", "efficientnet_lite0",
           "--no-report", "--overwrite")
    assert not (out / "background").exists()  # --overwrite removed it: it is the scan's own


def _groups(path: Path) -> list[set[str]]:
    import csv

    out: dict[str, set[str]] = {}
    for row in csv.DictReader(path.read_text().splitlines()):
        out.setdefault(row["group"], set()).add(row["path"])
    return list(out.values())


def test_changed_normalisation_is_refused(tmp_path: Path, photo_source: Path, lite0,
                                          background_features: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(photo_source, a)
    from tests.dedup_fixtures import plant_copies

    plant_copies(photo_source, b)
    out = tmp_path / "scan"
    cfg = DedupConfig(threshold=T, normalize_scores=str(background_features))
    run_scan([str(a)], out, cfg, report=False, extractor=lite0)
    for other, why in ((DedupConfig(threshold=T), "no --normalize-scores"),
                       (DedupConfig(threshold=T, normalize_scores=str(background_features), norm_k=5), "--norm-k 5"),
                       (DedupConfig(threshold=T, normalize_scores=str(background_features), norm_beta=0.5),
                        "--norm-beta 0.5")):
        with pytest.raises(UsageError, match=f"earlier scan in this folder used --normalize-scores .*{why}"
                           if why != "no --normalize-scores" else "this run no --normalize-scores"):
            run_scan([str(b)], out, other, add=True, report=False, extractor=lite0)
        with pytest.raises(UsageError, match="or --overwrite to start over"):
            run_scan([str(a)], out, other, report=False, extractor=lite0)
    added = run_scan([str(b)], out, cfg, add=True, report=False, extractor=lite0)  # the same options: fine
    assert len(added.path_groups()) == 5
    again = run_scan([str(a)], out, DedupConfig(threshold=0.6), overwrite=True, report=False, extractor=lite0)
    assert again.normalization is None


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_values_are_one_error(tmp_path: Path, collection, background_images: Path) -> None:
    folder, _ = collection
    out = tmp_path / "o"
    scan = ("dedup", folder, "--out", out, "--engine", "torch", "--no-report")
    expect_error(*scan, "--norm-k", "3", message="--norm-k applies only with --normalize-scores")
    expect_error(*scan, "--normalize-scores", tmp_path / "missing", message="not found")
    expect_error(*scan, "--normalize-scores", folder, message="is the input")
    inside = folder / "background"
    shutil.copytree(background_images, inside)
    expect_error(*scan, "--normalize-scores", inside, message="is inside the input")
    shutil.rmtree(inside)
    listing = tmp_path / "list.txt"
    listing.write_text(f"{next(folder.glob('*.jpg'))}\n")
    expect_error(*scan, "--normalize-scores", listing, message="a file of the collection")
    expect_error(*scan, "--normalize-scores", background_images, "--norm-beta", "11", message="--norm-beta")
    expect_error(*scan, "--normalize-scores", background_images, "--norm-reduction", "max",
                 message="--norm-reduction")
    expect_error(*scan, "--normalize-scores", background_images, "--threshold", "2.5",
                 message="normalised score")
    expect_error(*scan, "--threshold", "1.5", message="--threshold is a cosine similarity")
    expect_error(*scan, "--normalize-scores", background_images, "--norm-k", "50", "--threshold", "0.2",
                 message=f"exceeds the {len(BACKGROUND)} vectors")
    with pytest.raises(UsageError, match="--norm-k must be"):
        DedupConfig(normalize_scores=str(background_images), norm_k=0).validate()


def test_a_background_of_another_model_is_one_error(tmp_path: Path, collection, lite0,
                                                    background_images: Path) -> None:
    from neardup.extract.config import ExtractConfig
    from neardup.extract.pipeline import extract_features

    folder, _ = collection
    hashes = tmp_path / "hashes"
    extract_features(background_images, hashes, ExtractConfig(model="phash"), show_progress=False)
    with pytest.raises(UsageError, match="phash"):
        find_duplicates([str(folder)], tmp_path / "scan", DedupConfig(threshold=T, normalize_scores=str(hashes)),
                        extractor=lite0)
