import json
from pathlib import Path

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.store import FeatureStore
from tests.conftest import make_image


def _bad_files(d):
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image")
    good = d / "img0.png"
    data = good.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    make_image(9, (200, 150)).save(d / "big.jpg", quality=90)
    jpg = (d / "big.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])


def test_extract_skips_bad_files_and_reports_reasons(image_dir, tmp_path):
    _bad_files(image_dir)
    rep = extract_features(image_dir, tmp_path / "f", ExtractConfig("phash", workers=0), show_progress=False)
    assert rep.count == 7  # 6 generated + big.jpg
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in rep.skipped}
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["notes.png"] == "not an image"
    assert reasons["truncated.png"].startswith(("truncated", "decode error"))
    assert reasons["truncated.jpg"].startswith("truncated")
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    assert meta["count"] == 7 and len(meta["skipped"]) == 4 and meta["metric"] == "hamming"
    store = FeatureStore.open(tmp_path / "f")
    assert store.features().shape == (7, 8)
    assert [p.rsplit("/", 1)[1] for p in store.paths] == ["big.jpg"] + [f"img{i}.png" for i in range(6)]


def test_features_reproducible_and_resumable(image_dir, tmp_path):
    a = extract_features(image_dir, tmp_path / "a", ExtractConfig("efficientnet_lite0", workers=0, batch_size=4,
                         shard_size=4, engine="torch"), show_progress=False)
    fa = FeatureStore.open(tmp_path / "a").features()
    assert fa.shape == (6, 1280) and a.count == 6
    # a second run with the same arguments finds every shard committed and redoes nothing
    b = extract_features(image_dir, tmp_path / "a", ExtractConfig("efficientnet_lite0", workers=0, batch_size=4,
                         shard_size=4, engine="torch"), show_progress=False)
    assert b.resumed_shards == 2
    # drop the last shard's commit record: only that shard is recomputed, identically
    (tmp_path / "a" / "shards" / "00001.json").unlink()
    c = extract_features(image_dir, tmp_path / "a", ExtractConfig("efficientnet_lite0", workers=1, batch_size=3,
                         shard_size=4, engine="torch"), show_progress=False)
    assert c.resumed_shards == 1
    assert np.array_equal(FeatureStore.open(tmp_path / "a").features(), fa)


def test_changed_model_on_existing_output_fails_clearly(image_dir, tmp_path):
    extract_features(image_dir, tmp_path / "o", ExtractConfig("phash", workers=0), show_progress=False)
    with pytest.raises(UsageError, match="different model.*--overwrite"):
        extract_features(image_dir, tmp_path / "o", ExtractConfig("dhash", workers=0), show_progress=False)
    rep = extract_features(image_dir, tmp_path / "o", ExtractConfig("dhash", workers=0, overwrite=True),
                           show_progress=False)
    assert rep.model == "dhash" and FeatureStore.open(tmp_path / "o").model == "dhash"


def test_empty_and_missing_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        extract_features(tmp_path / "empty", tmp_path / "o", ExtractConfig("phash"), show_progress=False)
    with pytest.raises(UsageError, match="not found"):
        extract_features(tmp_path / "missing", tmp_path / "o", ExtractConfig("phash"), show_progress=False)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"junk")
    with pytest.raises(UsageError, match="no readable images"):
        extract_features(only_bad, tmp_path / "o2", ExtractConfig("phash", workers=0), show_progress=False)


def test_float16_storage_and_stored_whitening_applied_to_queries(image_dir, tmp_path):
    from neardup.extract.postprocess import fit_transform

    common = dict(model="efficientnet_lite0", workers=0, engine="torch")
    extract_features(image_dir, tmp_path / "raw", ExtractConfig(**common), show_progress=False)
    extract_features(image_dir, tmp_path / "half", ExtractConfig(dtype="float16", **common), show_progress=False)
    raw = FeatureStore.open(tmp_path / "raw")
    half = FeatureStore.open(tmp_path / "half")
    assert half.raw_features().dtype == np.float16
    shard = Path("shards") / "00000.npy"
    assert (tmp_path / "half" / shard).stat().st_size < 0.55 * (tmp_path / "raw" / shard).stat().st_size
    np.testing.assert_allclose(half.features().astype(np.float32), raw.features(), rtol=2e-3, atol=2e-3)

    extract_features(image_dir, tmp_path / "db", ExtractConfig(whiten=4, whiten_sample=6, **common),
                     show_progress=False)
    db = FeatureStore.open(tmp_path / "db")
    assert db.dim == 4 and db.features().shape == (6, 4) and db.meta["transform"]["whiten_dim"] == 4
    np.testing.assert_allclose(np.linalg.norm(db.features(), axis=1), 1.0, rtol=1e-5)
    # the stored transform is exactly the one fitted on the raw features
    ref = fit_transform(raw.raw_features(), l2=True, whiten_dim=4).apply(raw.raw_features())
    np.testing.assert_allclose(db.features(), ref, atol=1e-5)
    # queries get the same transform, and a mismatch is refused
    extract_features(image_dir, tmp_path / "q", ExtractConfig(transform_from=str(tmp_path / "db"), **common),
                     show_progress=False)
    q = FeatureStore.open(tmp_path / "q")
    np.testing.assert_allclose(q.features(), db.features(), atol=1e-6)
    from neardup.fastsearch.dataset import load_retrieval_set

    with pytest.raises(UsageError, match="different stored transforms"):
        load_retrieval_set(tmp_path / "db", tmp_path / "raw")
    with pytest.raises(UsageError, match="float features, not to hashes"):
        extract_features(image_dir, tmp_path / "h", ExtractConfig("phash", normalize=True, workers=0),
                         show_progress=False)
