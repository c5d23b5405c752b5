"""neardup_cd: the bundled weights load offline with a matching sha256; `make model`'s packing keeps the features."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import neardup._compat  # noqa: F401
from neardup.errors import UsageError
from neardup.extract.models import neardup_cd
from neardup.extract.pipeline import encode_paths
from neardup.extract.registry import create_extractor
from tests.helpers import assert_one_error, invoke


def test_bundled_weights_match_their_sha256_and_stay_small() -> None:
    rec = neardup_cd.record()
    data = neardup_cd.WEIGHTS.read_bytes()
    assert hashlib.sha256(data).hexdigest() == rec["sha256"]
    assert len(data) == rec["bytes"] <= 8 * 1024 * 1024
    assert rec["format"] == neardup_cd.FORMAT and rec["base_model"] == "efficientnet_lite0"
    blob = torch.load(neardup_cd.WEIGHTS, map_location="cpu", weights_only=True)
    assert blob["format"] == neardup_cd.FORMAT
    floats = [v for v in blob["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert not any(k.startswith(neardup_cd.DROPPED_PREFIX) for k in blob["state_dict"])
    assert "attacks: all" in blob["recipe"]  # the recipe that reproduces them travels with them
    assert blob["fit"] == "squash" == neardup_cd.MODEL_CFG.fit  # the listing describes the shipped file


def test_bundled_model_loads_offline_and_differs_from_its_base(photo_source: Path, lite0) -> None:
    ext = create_extractor("neardup_cd", device="cpu", engine="torch")
    assert ext.cfg.name == "neardup_cd" and ext.cfg.num_features == 1280
    assert ext.weights_path == str(neardup_cd.WEIGHTS)
    assert ext.describe()["preprocessing"]["fit"] == "squash"
    paths = sorted(str(p) for p in photo_source.glob("*.jpg"))[:4]
    feats, idx = encode_paths(ext, paths)
    base, _ = encode_paths(lite0, paths)
    assert feats.shape == (4, 1280) and list(idx) == [0, 1, 2, 3] and np.isfinite(feats).all()
    cos = np.sum(feats * base, 1) / np.linalg.norm(feats, axis=1) / np.linalg.norm(base, axis=1)
    assert (cos < 0.999).all()  # trained weights, not the pretrained ones under a new name


def test_a_damaged_bundled_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "neardup_cd.pt"
    shutil.copy(neardup_cd.WEIGHTS, bad)
    with open(bad, "r+b") as f:  # flip one byte of a weight
        f.seek(-100, 2)
        b = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([b[0] ^ 0xFF]))
    monkeypatch.setattr(neardup_cd, "WEIGHTS", bad)
    with pytest.raises(UsageError, match="do not match their sha256"):
        create_extractor("neardup_cd", device="cpu", engine="torch")


def test_pack_keeps_the_features_of_a_finetune_export(tmp_path: Path, photo_source: Path, lite0) -> None:
    """A `neardup finetune` export (format neardup.finetuned/1, the layout best.pt has) -> neardup.cd/1 float16:
    the classifier is dropped and the features stay within float16 rounding of the float32 encoder."""
    from neardup.simclr.model import export_encoder

    enc = tmp_path / "best.pt"
    export_encoder(enc, lite0.model, lite0.cfg, {"epoch": 1})
    out = tmp_path / "cd.pt"
    sha = neardup_cd.pack(enc, out, recipe="epochs: 1\n")
    assert sha == hashlib.sha256(out.read_bytes()).hexdigest()
    assert out.stat().st_size < enc.stat().st_size * 0.6  # float16, no 1000-class classifier
    packed = create_extractor("neardup_cd", weights=str(out), device="cpu", engine="torch")
    paths = sorted(str(p) for p in photo_source.glob("*.jpg"))[:3]
    a, _ = encode_paths(packed, paths)
    b, _ = encode_paths(lite0, paths)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cos > 0.9999).all(), cos
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()


def test_pack_refuses_other_files(tmp_path: Path) -> None:
    other = tmp_path / "x.pt"
    torch.save({"format": "something/1", "state_dict": {}}, other)
    with pytest.raises(UsageError, match="expected an efficientnet_lite0 encoder"):
        neardup_cd.pack(other, tmp_path / "cd.pt")
    with pytest.raises(UsageError, match="not a neardup_cd weights file"):
        neardup_cd.load_cd_file(other)


def test_cli_defaults_to_neardup_cd_and_rejects_a_wrong_weights_file(tmp_path: Path, photo_source: Path) -> None:
    from neardup.extract.config import ExtractConfig

    assert ExtractConfig().model == "neardup_cd"
    other = tmp_path / "x.pt"
    torch.save({"format": "something/1"}, other)
    res = invoke("extract", str(photo_source), "--out", str(tmp_path / "f"), "--weights", str(other), ok=False)
    assert_one_error(res, "not a neardup_cd weights file")
    assert json.loads(json.dumps(neardup_cd.record()))["model"] == "neardup_cd"


class _Payload:
    """A pickle that would run a command when unpickled without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_malicious_weights_file_is_refused_in_one_line(tmp_path: Path, photo_source: Path) -> None:
    import pickle

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": neardup_cd.FORMAT, "state_dict": _Payload(marker)}, protocol=4))
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = invoke("extract", str(photo_source), "--out", str(tmp_path / "f"), "--weights", str(evil), ok=False)
    assert_one_error(res, "safely (weights_only=True)")
    assert not [w for w in seen if "pickle" in str(w.message)]  # torch's protocol warning would print too
    assert not marker.exists()


def test_a_squash_export_packs_and_loads_as_squash(tmp_path: Path, photo_source: Path, lite0) -> None:
    """`finetune --fit squash` -> best.pt records the fit -> pack keeps it -> the loaded model resizes the whole
    image to the square (no crop), and its features record the fit (so they never mix with crop features)."""
    from dataclasses import replace

    from neardup.extract.base import build_transform
    from neardup.simclr.model import export_encoder

    enc = tmp_path / "best.pt"
    export_encoder(enc, lite0.model, replace(lite0.cfg, fit="squash"), {"epoch": 1})
    assert torch.load(enc, weights_only=True)["fit"] == "squash"
    finetuned = create_extractor("finetuned", weights=str(enc), device="cpu", engine="torch")
    assert finetuned.cfg.fit == "squash" and finetuned.describe()["preprocessing"]["fit"] == "squash"
    out = tmp_path / "cd.pt"
    neardup_cd.pack(enc, out)
    packed = create_extractor("neardup_cd", weights=str(out), device="cpu", engine="torch")
    assert packed.cfg.fit == "squash" and packed.describe()["preprocessing"]["fit"] == "squash"
    assert "fit" not in lite0.describe()["preprocessing"]  # crop models record what they always did
    path = sorted(photo_source.glob("*.jpg"))[0]
    from PIL import Image

    img = Image.open(path).convert("RGB")
    x = packed.transform(img)
    want = build_transform(replace(lite0.cfg, fit="squash"))(img)
    assert x.shape == (3, 224, 224) and torch.equal(x, want)
    a, _ = encode_paths(packed, [str(path)])
    b = lite0.encode(want[None])
    assert float(np.sum(a[0] * b[0]) / np.linalg.norm(a[0]) / np.linalg.norm(b[0])) > 0.9999


def test_a_file_with_an_unknown_fit_is_refused(tmp_path: Path, lite0) -> None:
    from dataclasses import replace

    from neardup.simclr.model import export_encoder

    enc = tmp_path / "best.pt"
    export_encoder(enc, lite0.model, replace(lite0.cfg, fit="stretch"), {"epoch": 1})
    with pytest.raises(UsageError, match="fit 'stretch'"):
        create_extractor("finetuned", weights=str(enc), device="cpu", engine="torch")
    with pytest.raises(UsageError, match="fit 'stretch'"):
        neardup_cd.pack(enc, tmp_path / "cd.pt")
    neardup_cd.pack(enc, tmp_path / "ok.pt", fit="crop")  # pack_model.py's override (the recipe's fit)
    assert create_extractor("neardup_cd", weights=str(tmp_path / "ok.pt"), device="cpu", engine="torch").cfg.fit \
        == "crop"
    blob = torch.load(tmp_path / "ok.pt", weights_only=True)
    torch.save({**blob, "fit": "stretch"}, tmp_path / "cd.pt")
    with pytest.raises(UsageError, match="unknown fit 'stretch'"):
        create_extractor("neardup_cd", weights=str(tmp_path / "cd.pt"), device="cpu", engine="torch")
