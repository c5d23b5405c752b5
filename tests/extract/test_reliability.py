"""Issue 10, extraction and the feature store: no data loss, no mixed resumes, no ignored options,
bounded memory, and one clear error for every damaged input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from neardup.errors import UsageError
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.registry import create_extractor, get_model_cfg
from neardup.extract.store import FeatureStore
from neardup.outdir import MARKER
from tests.conftest import make_image
from tests.extract.tiny import CORRUPTIONS, TinyExtractor, tiny_store

FAST = dict(workers=0)  # ExtractConfig fields; calls pass show_progress=False


# --------------------------------------------------------------------------- 1. --overwrite never loses data
def test_overwrite_into_a_foreign_folder_removes_nothing(image_dir, tmp_path):
    out = tmp_path / "theirs"
    (out / "shards").mkdir(parents=True)
    (out / "shards" / "precious.npy").write_bytes(b"their data")
    (out / "meta.json").write_text("{}")
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty and was not written by `neardup extract`"):
        extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)
    with pytest.raises(UsageError, match="meta.json exists and was not written by neardup"):
        extract_features(image_dir, out, ExtractConfig("phash", overwrite=True, **FAST), show_progress=False)
    assert (out / "shards" / "precious.npy").read_bytes() == b"their data"
    assert (out / "meta.json").read_text() == "{}" and (out / "notes.txt").read_text() == "keep me"
    # with none of extract's names taken, --overwrite writes beside the user's files
    (out / "meta.json").unlink()
    shutil.rmtree(out / "shards")
    rep = extract_features(image_dir, out, ExtractConfig("phash", overwrite=True, **FAST), show_progress=False)
    assert rep.count == 6 and (out / "notes.txt").read_text() == "keep me"


def test_overwrite_of_its_own_output_removes_only_its_files(image_dir, tmp_path):
    out = tmp_path / "f"
    extract_features(image_dir, out, ExtractConfig("phash", normalize=False, **FAST), show_progress=False)
    (out / "mine.txt").write_text("user notes")
    extract_features(image_dir, out, ExtractConfig("dhash", overwrite=True, **FAST), show_progress=False)
    assert FeatureStore.open(out).model == "dhash" and (out / "mine.txt").read_text() == "user notes"
    assert json.loads((out / MARKER).read_text())["command"] == "extract"


def test_legacy_extraction_is_recognised_but_not_resumed(image_dir, tmp_path):
    """A folder from before output markers: --overwrite may replace it; a plain re-run cannot trust it."""
    out = tmp_path / "old"
    extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)
    (out / MARKER).unlink()
    job = json.loads((out / "job.json").read_text())
    for key in ("job_schema", "weights_sha256", "amp", "max_pixels", "globs"):
        job.pop(key)
    (out / "job.json").write_text(json.dumps(job))
    with pytest.raises(UsageError, match="older neardup.*--overwrite"):
        extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)
    assert extract_features(image_dir, out, ExtractConfig("phash", overwrite=True, **FAST),
                            show_progress=False).count == 6


def test_shards_without_a_job_record_are_not_trusted(image_dir, tmp_path):
    out = tmp_path / "f"
    extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)
    (out / "job.json").unlink()
    with pytest.raises(UsageError, match="shards but no job.json"):
        extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)


# --------------------------------------------------------------------------- 2. a resume never mixes jobs
@pytest.fixture(scope="module")
def two_encoders(tmp_path_factory):
    """Two fine-tuned EfficientNet-Lite0 files with different (random) weights."""
    from neardup.extract.registry import MODELS
    from neardup.simclr.model import export_encoder

    d = tmp_path_factory.mktemp("encoders")
    cfg = get_model_cfg("efficientnet_lite0")
    for seed, name in ((0, "A.pt"), (1, "B.pt")):
        torch.manual_seed(seed)
        export_encoder(d / name, MODELS["efficientnet_lite0"].arch(cfg), cfg)  # random weights
    return d


def _interrupt(out: Path) -> None:
    """What a kill after the first shard leaves: the later shards' commit records are missing."""
    for rec in sorted((out / "shards").glob("*.json"))[1:]:
        rec.unlink()
    (out / "meta.json").unlink()


def test_resume_with_other_weights_is_refused(image_dir, tmp_path, two_encoders, one_thread):
    common = dict(model="finetuned", engine="torch", shard_size=2, input_size=32, **FAST)
    out = tmp_path / "f"
    extract_features(image_dir, out, ExtractConfig(weights=str(two_encoders / "A.pt"), **common), show_progress=False)
    clean = FeatureStore.open(out).features().copy()
    _interrupt(out)
    with pytest.raises(UsageError, match=r"different weights \(--weights \(file content\): sha256 \w+ -> sha256 \w+\)"
                                         r".*new --out.*--overwrite"):
        extract_features(image_dir, out, ExtractConfig(weights=str(two_encoders / "B.pt"), **common),
                         show_progress=False)
    # the same file under another name is the same job: the resume goes on, identically
    shutil.copy(two_encoders / "A.pt", tmp_path / "copy_of_A.pt")
    rep = extract_features(image_dir, out, ExtractConfig(weights=str(tmp_path / "copy_of_A.pt"), **common),
                           show_progress=False)
    assert rep.resumed_shards == 1
    np.testing.assert_array_equal(FeatureStore.open(out).features(), clean)


@pytest.mark.parametrize("change, message", [
    (dict(max_pixels=1_000_000), "max_pixels (--max-pixels: 178956970 -> 1000000)"),
    (dict(globs=("*.png",)), "globs (--glob: [] -> ['*.png'])"),
    (dict(shard_size=3), "shard_size (--shard-size: 2 -> 3)"),
    (dict(model="dhash"), "model (--model: phash -> dhash)"),
], ids=["max-pixels", "glob", "shard-size", "model"])
def test_resume_with_a_changed_option_names_it(image_dir, tmp_path, change, message):
    out = tmp_path / "f"
    base = dict(model="phash", shard_size=2, **FAST)
    extract_features(image_dir, out, ExtractConfig(**base), show_progress=False)
    _interrupt(out)
    with pytest.raises(UsageError) as err:
        extract_features(image_dir, out, ExtractConfig(**{**base, **change}), show_progress=False)
    assert message in str(err.value) and "--overwrite" in str(err.value)
    assert extract_features(image_dir, out, ExtractConfig(**base),
                            show_progress=False).resumed_shards == 1  # unchanged options still resume


def test_input_size_and_input_list_are_part_of_the_job(image_dir, tmp_path, one_thread):
    out = tmp_path / "f"
    extract_features(image_dir, out, ExtractConfig("efficientnet_lite0", engine="torch", input_size=32, **FAST),
                     show_progress=False)
    with pytest.raises(UsageError, match=r"preprocessing \(--input-size \(preprocessing\): crop 32, resize 37 bicubic "
                                         r"-> crop 48, resize 55 bicubic\)"):
        extract_features(image_dir, out, ExtractConfig("efficientnet_lite0", engine="torch", input_size=48, **FAST),
                         show_progress=False)
    make_image(99).save(image_dir / "new.png")
    with pytest.raises(UsageError, match=r"different input list \(IMAGES \(the input list\): 6 -> 7\)"):
        extract_features(image_dir, out, ExtractConfig("efficientnet_lite0", engine="torch", input_size=32, **FAST),
                         show_progress=False)


def test_weights_digest_is_cached_and_follows_the_file(tmp_path, monkeypatch):
    import hashlib

    from neardup.extract import weights as W

    monkeypatch.setenv("NEARDUP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(W, "_DIGESTS", {})
    path = tmp_path / "w.pt"
    path.write_bytes(os.urandom(17 << 20))  # above the size worth a disk cache entry
    assert W.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    cached = json.loads((tmp_path / "cache" / "weights-sha256.json").read_text())
    assert cached[os.path.realpath(path)]["sha256"] == W.file_sha256(path)
    path.write_bytes(b"other weights")  # rewritten: new size and mtime, never the stale digest
    assert W.file_sha256(path) == hashlib.sha256(b"other weights").hexdigest()


# --------------------------------------------------------------------------- 3. no option silently ignored
def test_finetuned_honours_input_size(image_dir, tmp_path, two_encoders, one_thread):
    weights = str(two_encoders / "A.pt")
    ext = create_extractor("finetuned", weights=weights, device="cpu", input_size=64)
    assert ext.cfg.input_size == 64 and ext.cfg.resize_size == 73  # the base model's 256/224 ratio
    assert tuple(ext.transform(make_image(0)).shape) == (3, 64, 64)
    default = create_extractor("finetuned", weights=weights, device="cpu")
    assert tuple(default.transform(make_image(0)).shape) == (3, 224, 224)  # the file's own crop
    rep = extract_features(image_dir, tmp_path / "f", ExtractConfig("finetuned", weights=weights, input_size=64,
                           engine="torch", **FAST), show_progress=False)
    meta = FeatureStore.open(tmp_path / "f").meta
    assert rep.count == 6 and meta["preprocessing"]["input_size"] == 64


@pytest.mark.parametrize("kwargs, flags", [
    (dict(input_size=64), "--input-size"),
    (dict(amp="fp16"), "--amp"),
    (dict(compile=True), "--compile"),
    (dict(layer="head0"), "--layer"),
], ids=["input-size", "amp", "compile", "layer"])
def test_hashes_refuse_network_options(kwargs, flags):
    with pytest.raises(UsageError, match=f"{flags} does not apply to phash"):
        create_extractor("phash", **kwargs)


def test_hashes_refuse_float_options(image_dir, tmp_path):
    with pytest.raises(UsageError, match="--dtype float16 applies to float features"):
        extract_features(image_dir, tmp_path / "f", ExtractConfig("phash", dtype="float16", **FAST),
                         show_progress=False)
    with pytest.raises(UsageError, match="--engine onnx applies to networks"):
        extract_features(image_dir, tmp_path / "f", ExtractConfig("phash", engine="onnx", **FAST), show_progress=False)
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("model, size, message", [
    ("vit_b_16", 64, "only runs at 224 pixels"),
    ("inception_v3", 64, "needs at least 75 pixels"),
    ("efficientnet_lite0", 8, "use an integer from 16 to 2048"),
    ("efficientnet_lite0", 5000, "use an integer from 16 to 2048"),
])
def test_crops_a_network_cannot_run_at_are_refused(model, size, message):
    with pytest.raises(UsageError, match=message):
        create_extractor(model, input_size=size, weights="/never/read.pth")


# --------------------------------------------------------------------------- 4. bounded work per image
def test_extreme_aspect_ratio_runs_in_bounded_memory(tmp_path):
    """A 1 x 150000 strip used to ask PIL for a 256 x 38-million-pixel resize (tens of GB).

    Run in a child process whose address space is capped at its size after the model is built plus
    1.5 GB: without the aspect limit the resize fails there (and the image would be skipped) instead of
    taking the machine down; with it, both strips are extracted with little extra memory.
    """
    from PIL import Image

    images = tmp_path / "strips"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (150_000, 1, 3), dtype=np.uint8)).save(images / "tall.png")
    Image.fromarray(rng.integers(0, 255, (1, 20_000, 3), dtype=np.uint8)).save(images / "wide.png")
    script = textwrap.dedent(f"""
        import json, resource
        from neardup.extract.pipeline import extract_features
        from neardup.extract.config import ExtractConfig
        from neardup.extract.registry import create_extractor
        ext = create_extractor("efficientnet_lite0", device="cpu")
        vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (3 << 29), resource.RLIM_INFINITY))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rep = extract_features({str(images)!r}, {str(tmp_path / 'f')!r}, ExtractConfig(workers=0), extractor=ext,
                               show_progress=False)
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        print(json.dumps({{"count": rep.count, "skipped": rep.skipped, "grew": grew}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["skipped"] == [] and got["count"] == 2, got
    assert got["grew"] < 400 << 20, got


def test_aspect_limit_keeps_the_centre_and_leaves_normal_images_alone():
    from PIL import Image

    from neardup.extract.base import MAX_ASPECT, LimitAspect

    limit = LimitAspect()
    normal = make_image(0, (96, 64))
    assert limit(normal) is normal
    strip = Image.fromarray(np.arange(1000, dtype=np.uint8).reshape(1000, 1).repeat(3, 1)[:, None, :] % 251)
    cut = limit(strip)
    assert cut.size == (1, MAX_ASPECT)
    mid = np.asarray(strip)[(1000 - MAX_ASPECT) // 2:(1000 + MAX_ASPECT) // 2]
    assert np.array_equal(np.asarray(cut), mid)


# --------------------------------------------------------------------------- 5. bad input: one clear error
def test_list_files_mixing_paths_or_not_utf8(image_dir, tmp_path):
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"{image_dir / 'img0.png'}\nimages/img1.png\n")
    with pytest.raises(UsageError, match=r"mixed.txt mixes absolute paths \(line 1: .*\) and relative ones \(line 2"):
        extract_features(mixed, tmp_path / "o", ExtractConfig("phash", **FAST), show_progress=False)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(f"{image_dir / 'img0.png'}\n".encode() + b"caf\xe9.png\n")
    with pytest.raises(UsageError, match="latin.txt is not UTF-8 text"):
        extract_features(latin, tmp_path / "o", ExtractConfig("phash", **FAST), show_progress=False)
    with pytest.raises(UsageError, match="img0.png is an image; give a folder"):
        extract_features(image_dir / "img0.png", tmp_path / "o", ExtractConfig("phash", **FAST), show_progress=False)
    assert not (tmp_path / "o").exists()
    ok = tmp_path / "ok.txt"
    ok.write_text(f"# absolute paths only\n{image_dir / 'img0.png'}\n\n{image_dir / 'img1.png'}\n")
    assert extract_features(ok, tmp_path / "o", ExtractConfig("phash", **FAST), show_progress=False).count == 2


@pytest.fixture
def tiny(image_dir, tmp_path):
    return tiny_store(image_dir, tmp_path / "good")


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_damaged_stores_give_one_error_naming_the_file(tiny, tmp_path, name):
    damage, words = CORRUPTIONS[name]
    bad = tmp_path / name
    shutil.copytree(tiny, bad)
    damage(bad)
    with pytest.raises(UsageError) as err:
        store = FeatureStore.open(bad)
        assert len(store.paths) == len(store.features())
    assert words in str(err.value) and str(bad) in str(err.value)


def test_finite_check_is_on_load_not_on_open(tiny, tmp_path):
    """Opening reads headers only; NaN is found when the features are loaded (raw or transformed)."""
    bad = tmp_path / "nan"
    shutil.copytree(tiny, bad)
    CORRUPTIONS["nan"][0](bad)
    store = FeatureStore.open(bad)  # cheap: no feature read
    assert len(store.paths) == 6
    with pytest.raises(UsageError, match="NaN or infinite features"):
        store.raw_features()


def test_damaged_transform_is_one_error(image_dir, tmp_path):
    out = tiny_store(image_dir, tmp_path / "w", whiten=4, whiten_sample=6)
    assert FeatureStore.open(out).features().shape == (6, 4)
    (out / "transform.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UsageError, match="cannot read the transform .*transform.npz"):
        FeatureStore.open(out).features()
    with pytest.raises(UsageError, match="cannot read the transform .*w/transform.npz"):
        tiny_store(image_dir, tmp_path / "q", transform_from=str(out))
    assert not (tmp_path / "q").exists()  # refused before any extraction


_BAD_LEAVES = pickle.dumps({"online_params": {"res_net50/~/initial_conv": "w"},
                            "online_state": {"res_net50/~/initial_batchnorm/~/mean_ema": {"average": [0.0]}}},
                           protocol=2)


@pytest.mark.parametrize("content, message", [
    (b"\x80\x02" + b"]" * 200_000 + b"a" * 199_999 + b".", "nested deeper than 64 levels"),
    (b"\x80\x02" + b"}" + b"X\x01\x00\x00\x00k}" * 50_000 + b"s" * 50_000 + b".", "nested deeper than 64 levels"),
    (_BAD_LEAVES, "res_net50/~/initial_conv is a str, not a mapping of arrays"),
    (pickle.dumps({"a": [1, 2]}, protocol=2), "no Haiku tree"),
    (b"not a pickle", "cannot read"),
], ids=["deep-lists", "deep-dicts", "bad-leaves", "no-tree", "garbage"])
def test_convert_byol_on_hostile_pickles(tmp_path, content, message):
    from neardup.extract.convert import convert_byol

    src = tmp_path / "x.pkl"
    src.write_bytes(content)
    with pytest.raises(UsageError, match=message) as err:
        convert_byol(src, tmp_path / "out.pth")
    assert str(src) in str(err.value)
    assert not (tmp_path / "out.pth").exists()


def test_shared_references_are_walked_once():
    from neardup.extract.convert import _walk

    node: object = {"leaf": 1}
    for _ in range(60):
        node = [node, node]  # 2**60 paths, 61 distinct containers
    assert len(list(_walk(node))) == 1


# --------------------------------------------------------------------------- 6. temp files and a full disk
def test_resume_removes_stale_temp_files(image_dir, tmp_path):
    out = tmp_path / "f"
    extract_features(image_dir, out, ExtractConfig("phash", shard_size=2, **FAST), show_progress=False)
    _interrupt(out)
    stale = [out / ".meta.json.abc123.tmp", out / "shards" / ".00001.npy.xyz.tmp"]
    for p in stale:
        p.write_bytes(b"half a write")
    (out / "shards" / "notes.tmp").write_text("not ours: no leading dot")
    assert extract_features(image_dir, out, ExtractConfig("phash", shard_size=2, **FAST),
                            show_progress=False).resumed_shards == 1
    assert not any(p.exists() for p in stale) and (out / "shards" / "notes.tmp").exists()


def test_stored_tiny_extractor_is_deterministic(image_dir, tmp_path):
    a = FeatureStore.open(tiny_store(image_dir, tmp_path / "a")).features()
    b = TinyExtractor().encode(torch.stack([TinyExtractor().transform(make_image(i)) for i in range(6)]))
    np.testing.assert_array_equal(a, b)


def test_a_second_writer_gets_one_clear_error(image_dir, tmp_path):
    from neardup.outdir import folder_lock

    out = tmp_path / "f"
    extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)
    with folder_lock(out), pytest.raises(UsageError, match="another neardup process is writing"):
        extract_features(image_dir, out, ExtractConfig("phash", **FAST), show_progress=False)
    assert extract_features(image_dir, out, ExtractConfig("phash", **FAST),
                            show_progress=False).resumed_shards == 1  # the lock is released after
