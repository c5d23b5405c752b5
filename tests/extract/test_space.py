"""FeatureSpace: what makes vectors comparable, read from feature folders and indexes, and the one check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neardup.errors import UsageError
from neardup.extract.postprocess import FILE, FeatureTransform, fit_transform
from neardup.extract.space import FeatureSpace, require_same_space
from neardup.extract.store import FeatureStore
from tests.fastsearch.conftest import make_store

FEATS = np.abs(np.random.default_rng(0).normal(size=(20, 16))).astype(np.float32)


def store(root: Path, transform: FeatureTransform | None = None, weights: str | None = None, **kw) -> FeatureStore:
    """A feature folder, optionally with a stored transform and a job record naming its weights."""
    make_store(root, FEATS, [f"i{i}.jpg" for i in range(len(FEATS))], **kw)
    if transform is not None:
        transform.save(root / FILE)
        meta = json.loads((root / "meta.json").read_text())
        meta["output_dim"] = transform.out_dim(FEATS.shape[1])
        (root / "meta.json").write_text(json.dumps(meta))
    if weights is not None:
        (root / "job.json").write_text(json.dumps({"model": kw.get("model", "toy"), "weights_sha256": weights}))
    return FeatureStore.open(root)


def test_of_store_reads_meta_transform_and_job_record(tmp_path):
    plain = store(tmp_path / "a")
    assert plain.space == FeatureSpace("toy", 16, "cosine", {"input_size": 8}, None, None)
    tf = FeatureTransform(l2=True)
    s = store(tmp_path / "b", tf, weights="ab" * 32)
    assert s.space.transform == tf.digest() and s.space.weights == "ab" * 32
    whitened = store(tmp_path / "c", fit_transform(FEATS, whiten_dim=4))
    assert whitened.space.dim == 4 and whitened.space.transform is not None
    (tmp_path / "b" / "job.json").write_text("{not json")
    with pytest.raises(UsageError, match="job.json"):
        _ = FeatureStore.open(tmp_path / "b").space


def test_round_trip_and_hash():
    s = FeatureSpace("toy", 16, "cosine", {"input_size": 8}, "t" * 16, "w" * 64)
    assert FeatureSpace.from_dict({**s.to_dict(), "added_later": 1}) == s
    assert hash(s) == hash(FeatureSpace.from_dict(s.to_dict()))


@pytest.mark.parametrize("other, message", [
    (dict(model="toy2"), "B holds toy2 (16-d) but A holds toy (16-d); extract with --model toy"),
    (dict(dim=8), "B holds toy (8-d) but A holds toy (16-d)"),
    (dict(metric="hamming"), "B holds hamming features but A holds cosine features"),
    (dict(preprocessing={"input_size": 9}), "B uses preprocessing {'input_size': 9} but A uses {'input_size': 8}"),
    (dict(transform="f" * 16), "B and A use different stored transforms (L2/whitening: digest ffff"),
    (dict(transform="f" * 16, dim=8), "different stored transforms"),  # whitening changes the dimension too
    (dict(weights="9" * 64), "B was extracted with other weights (sha256 999999999999) than A (sha256 000000000000)"),
])
def test_require_same_space_names_the_first_difference(other, message):
    ref = dict(model="toy", dim=16, metric="cosine", preprocessing={"input_size": 8}, transform=None, weights="0" * 64)
    a, b = FeatureSpace(**ref), FeatureSpace(**{**ref, **other})
    assert require_same_space([a, a], ["A", "A again"]) is a
    with pytest.raises(UsageError) as err:
        require_same_space([a, a, b], ["A", "A again", "B"])
    assert str(err.value).startswith("feature spaces disagree: ") and message in str(err.value)


def test_unknown_weights_and_preprocessing_are_not_held_against_a_folder():
    """Folders written before the job record existed know neither: they still mix with newer ones."""
    a = FeatureSpace("toy", 16, "cosine", {"input_size": 8}, None, "0" * 64)
    require_same_space([a, FeatureSpace("toy", 16, "cosine", None, None, None)], ["new", "old"])


def test_of_index_uses_the_recorded_space_or_the_fields_of_older_folders():
    from neardup.fastsearch.persist import IndexMeta

    recorded = FeatureSpace("toy", 16, "cosine", {}, "t" * 16, "w" * 64)
    meta = IndexMeta("toy", 16, "l2", {}, "Flat", "Flat", 0, False, space=recorded.to_dict())
    assert FeatureSpace.of_index(meta) == recorded  # the search metric (l2) is not the vectors' kind (cosine)
    old = IndexMeta("phash", 64, "hamming", {"bits": 64}, "BFlat", "BFlat", 0, True)
    assert FeatureSpace.of_index(old) == FeatureSpace("phash", 64, "hamming", {"bits": 64}, None, None)
