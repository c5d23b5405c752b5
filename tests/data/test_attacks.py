import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from neardup.data.attacks import ATTACKS, AttackSpec, expand_config
from neardup.data.generate import attack_rng, generate_attacks, load_attack_config
from neardup.data.manifest import load_ground_truth, parse_query_name, read_manifest
from neardup.errors import UsageError
from tests.conftest import make_image


def test_default_config_is_the_studys_58_attacks():
    specs = load_attack_config("default")
    assert len(specs) == 58
    fams = {s.family for s in specs}
    assert fams == {"gaussian_noise", "salt_pepper_noise", "speckle_noise", "gaussian_blur", "median_blur", "jpeg",
                    "scale", "crop", "rotation", "shear", "contrast", "color", "brightness", "sharpness", "text"}
    assert sum(s.family == "text" for s in specs) == 5
    assert {s.params["factor"] for s in specs if s.family == "contrast"} == {0.5, 0.66, 1.5, 2.0}
    bio = {s.family for s in load_attack_config("biomedical")}
    assert {"hflip", "vflip", "invert", "perspective", "affine", "gamma", "grayscale"} <= bio


@pytest.mark.parametrize("spec", load_attack_config("default") + load_attack_config("biomedical"), ids=lambda s: s.name)
def test_every_attack_is_deterministic_and_changes_the_image(spec: AttackSpec):
    img = make_image(3, (120, 80))
    a = spec(img, attack_rng(7, "x", spec.name))
    b = spec(img, attack_rng(7, "x", spec.name))
    assert a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    if a.size == img.size:
        assert not np.array_equal(np.asarray(a), np.asarray(img)), f"{spec.name} left the image unchanged"


def test_random_attacks_depend_on_seed():
    img = make_image(1)
    spec = next(s for s in load_attack_config() if s.name == "gaussian_noise_0.05")
    a = spec(img, attack_rng(0, "x", spec.name))
    b = spec(img, attack_rng(1, "x", spec.name))
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_geometry():
    img = make_image(2, (200, 100))
    rng = np.random.default_rng(0)
    assert ATTACKS["scale"].fn(img, rng, ratio=0.4).size == (80, 40)
    assert ATTACKS["scale"].fn(img, rng, ratio=1.6).size == (320, 160)
    for name, p in (("crop", {"percent": 40}), ("rotation", {"angle": 40}), ("shear", {"angle": 10}),
                    ("perspective", {"distortion": 0.3})):
        assert ATTACKS[name].fn(img, rng, **p).size == (200, 100), name
    # crop 50 % without resize keeps the central half of each side
    c = ATTACKS["crop"].fn(img, rng, percent=50, resize=False)
    assert c.size == (100, 50)
    assert np.array_equal(np.asarray(c), np.asarray(img)[25:75, 50:150])
    # a 40° rotation of an expanded canvas leaves black corners; 0° is the identity
    r = np.asarray(ATTACKS["rotation"].fn(img, rng, angle=40))
    assert r[0, 0].sum() == 0 and r[-1, -1].sum() == 0
    assert np.array_equal(np.asarray(ATTACKS["rotation"].fn(img, rng, angle=0)), np.asarray(img))
    assert np.array_equal(np.asarray(ATTACKS["hflip"].fn(img, rng)), np.asarray(ImageOps.mirror(img)))
    assert np.array_equal(np.asarray(ATTACKS["invert"].fn(img, rng)), 255 - np.asarray(img))
    # shear 0 is the identity; shear moves the bottom row sideways relative to the top row
    assert np.array_equal(np.asarray(ATTACKS["shear"].fn(img, rng, angle=0)), np.asarray(img))
    g = np.asarray(ATTACKS["grayscale"].fn(img, rng))
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])


def test_noise_statistics():
    img = Image.new("RGB", (200, 200), (128, 128, 128))
    rng = np.random.default_rng(0)
    x = np.asarray(ATTACKS["gaussian_noise"].fn(img, rng, var=0.01), dtype=np.float64) / 255
    assert abs(x.std() - 0.1) < 0.005
    sp = np.asarray(ATTACKS["salt_pepper_noise"].fn(img, rng, amount=0.1))
    assert abs(np.mean((sp == 0) | (sp == 255)) - 0.1) < 0.01


def test_jpeg_quality_orders_error():
    img = make_image(5, (128, 128))
    err = [np.abs(np.asarray(ATTACKS["jpeg"].fn(img, None, quality=q), dtype=float) - np.asarray(img)).mean()
           for q in (10, 50, 90)]
    assert err[0] > err[1] > err[2] > 0


def test_config_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown attack"):
        expand_config([{"attack": "nope"}])
    with pytest.raises(UsageError, match="only one parameter"):
        expand_config([{"attack": "affine", "params": {"scale": [1, 2], "angle": [1, 2]}}])
    with pytest.raises(UsageError, match="unknown attack config"):
        load_attack_config("nonexistent")
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [unclosed")
    with pytest.raises(UsageError, match="bad YAML"):
        load_attack_config(bad)


def test_generate_writes_deterministic_queries_and_right_manifest(image_dir, tmp_path):
    specs = [s for s in load_attack_config() if s.name in ("gaussian_noise_0.01", "rotation_20", "text_10", "jpeg_10")]
    r1 = generate_attacks(image_dir, tmp_path / "q1", specs, seed=3, workers=2, show_progress=False)
    r2 = generate_attacks(image_dir, tmp_path / "q2", specs, seed=3, workers=1, show_progress=False)
    assert r1.n_queries == r2.n_queries == 6 * 4
    rows = read_manifest(tmp_path / "q1")
    assert len(rows) == 24
    assert {(r.source, r.attack) for r in rows} == {(f"img{i}", s.name) for i in range(6) for s in specs}
    for r in rows:
        assert r.query == f"{r.source}_{r.attack}.jpg"
        assert (tmp_path / "q1" / r.query).is_file()
        assert r.source_path.endswith(f"{r.source}.png")
        assert json.loads(r.params) == next(s.params for s in specs if s.name == r.attack)
        a = np.asarray(Image.open(tmp_path / "q1" / r.query))
        b = np.asarray(Image.open(tmp_path / "q2" / r.query))
        assert np.array_equal(a, b), "output must not depend on the number of workers"
    # without a manifest, ground truth comes from the names
    (tmp_path / "q1" / "manifest.csv").unlink()
    parsed = {(r.query, r.source, r.attack, r.family) for r in load_ground_truth(tmp_path / "q1")}
    assert parsed == {(r.query, r.source, r.attack, r.family) for r in rows}


def test_parse_query_name_handles_underscores():
    names = [s.name for s in load_attack_config()]
    assert parse_query_name("my_photo_1_gaussian_noise_0.01", names, list(ATTACKS)) == \
        ("my_photo_1", "gaussian_noise_0.01", "gaussian_noise")
    assert parse_query_name("plainname", names, list(ATTACKS)) is None


def test_bad_sources_are_skipped(image_dir, tmp_path):
    (image_dir / "broken.jpg").write_bytes(b"not an image")
    spec = [s for s in load_attack_config() if s.name == "jpeg_50"]
    rep = generate_attacks(image_dir, tmp_path / "q", spec, workers=1, show_progress=False)
    assert rep.n_queries == 6
    assert [s.reason for s in rep.skipped] == ["not an image"]
