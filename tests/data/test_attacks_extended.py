"""The extended attack families and the ``extended`` / ``all`` sets (issue 14, item 1)."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

import neardup.data.generate as gen
from neardup.data import canvas
from neardup.data.attacks import ATTACKS, AttackSpec
from neardup.data.attacks_extended import CHAIN_POOL, plan_chain
from neardup.data.generate import attack_rng, load_attack_config
from neardup.data.manifest import load_ground_truth, read_manifest
from neardup.errors import UsageError
from tests.conftest import make_image
from tests.helpers import expect_error, invoke

NEW = {"overlay_onto_screenshot", "overlay_onto_background", "overlay_image", "overlay_emoji", "pad", "frame",
       "meme", "stripes", "grid", "blend", "pixelate", "chain"}
NO_RANDOMNESS = {"pixelate", "gaussian_blur"}  # same output whatever the generator
EXTENDED = load_attack_config("extended")


def fn(name: str):
    return ATTACKS[name].fn


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


def where(big: Image.Image, small: Image.Image) -> list[tuple[int, int]]:
    """Every (x, y) at which ``small`` appears pixel for pixel inside ``big``."""
    s = arr(small)
    win = sliding_window_view(arr(big), s.shape)[..., 0, :, :, :]
    ys, xs = np.nonzero((win == s).all(axis=(2, 3, 4)))
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


# --------------------------------------------------------------------------- the sets
def test_extended_set_covers_every_new_family_and_all_is_the_sum():
    assert {s.family for s in EXTENDED} >= NEW
    assert 30 <= len(EXTENDED) <= 45
    for fam in {s.family for s in EXTENDED}:
        assert 2 <= sum(s.family == fam for s in EXTENDED) <= 4, fam
    parts = [load_attack_config(c) for c in ("default", "biomedical", "extended")]
    everything = load_attack_config("all")
    assert [s.name for s in everything] == [s.name for p in parts for s in p]
    assert len(everything) == 58 + 13 + len(EXTENDED)
    assert {s.attack for s in everything} == set(ATTACKS), "every registered attack is in a built-in set"
    out = invoke("attack", "--attacks", "all", "--list").output
    assert f"{len(everything)} attacks" in out
    assert f"all ({len(everything)}), biomedical (13), default (58), extended ({len(EXTENDED)})" in out


@pytest.mark.parametrize("spec", EXTENDED, ids=lambda s: s.name)
def test_every_extended_attack_is_deterministic_rgb_and_seeded(spec: AttackSpec):
    img = make_image(3, (192, 128))  # big enough for 2-pixel blocks at pixelate 0.015
    a = spec(img, attack_rng(7, "x", spec.name))
    b = spec(img, attack_rng(7, "x", spec.name))
    assert a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    if a.size == img.size:
        assert a.tobytes() != img.tobytes(), f"{spec.name} left the image unchanged"
    if spec.family not in NO_RANDOMNESS:
        others = [spec(img, attack_rng(s, "x", spec.name)).tobytes() for s in (8, 9, 10)]
        assert any(o != a.tobytes() for o in others), f"{spec.name} ignores its generator"


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("name", ["overlay_onto_screenshot", "overlay_onto_background"])
@pytest.mark.parametrize("scale", [0.3, 0.5])
def test_overlay_onto_pastes_the_shrunk_image_at_the_recorded_scale(name, scale):
    img = make_image(1, (90, 60))
    for seed in range(3):
        out = fn(name)(img, np.random.default_rng(seed), scale=scale)
        assert out.size == img.size
        shrunk = img.resize((round(90 * scale), round(60 * scale)), Image.Resampling.BICUBIC)
        assert len(where(out, shrunk)) == 1
    places = {where(fn(name)(img, np.random.default_rng(s), scale=scale), shrunk)[0] for s in range(6)}
    assert len(places) > 1, "the place is drawn from the generator"


def test_pad_grows_by_the_fraction_and_keeps_the_image():
    img = make_image(2, (40, 26))
    for fraction, size in ((0.5, (60, 39)), (2, (120, 78)), (0, (40, 26))):
        out = fn("pad")(img, np.random.default_rng(1), fraction=fraction)
        assert out.size == size
        [(x, y)] = where(out, img)
        o = arr(out).reshape(-1, 3)
        mask = np.ones(out.size[::-1], bool)
        mask[y:y + 26, x:x + 40] = False
        assert len(np.unique(o[mask.reshape(-1)], axis=0)) <= 1, "one padding colour"


def test_frame_keeps_the_size_and_shrinks_the_image_inside():
    img = make_image(4, (100, 80))
    out = fn("frame")(img, np.random.default_rng(0), width=0.25)
    assert out.size == img.size
    t = 20  # 0.25 * 80
    assert where(out, img.resize((100 - 2 * t, 80 - 2 * t), Image.Resampling.BICUBIC)) == [(t, t)]


def test_meme_adds_a_caption_bar_of_the_given_height():
    img = make_image(5, (120, 80))
    tops = set()
    for seed in range(8):
        out = fn("meme")(img, np.random.default_rng(seed), bar=0.5)
        assert out.size == (120, 120)
        [(x, y)] = where(out, img)
        assert x == 0 and y in (0, 40)
        tops.add(y)
        bar = arr(out)[:40] if y == 40 else arr(out)[80:]
        assert len(np.unique(bar.reshape(-1, 3), axis=0)) > 2, "the bar holds text"
    assert tops == {0, 40}


def test_overlays_cover_at_most_their_size_and_vanish_at_opacity_0():
    img = make_image(6, (100, 60))
    for name, size in (("overlay_image", 0.4), ("overlay_emoji", 0.5)):
        rng = np.random.default_rng(2)
        assert arr(fn(name)(img, rng, size=size, opacity=0.0)).tobytes() == img.tobytes()
        out = fn(name)(img, np.random.default_rng(2), size=size)
        ys, xs = np.nonzero((arr(out) != arr(img)).any(axis=2))
        side = (40, 24) if name == "overlay_image" else (30, 30)
        assert 0 < xs.max() - xs.min() + 1 <= side[0] and 0 < ys.max() - ys.min() + 1 <= side[1], name


def test_stripes_and_grid_cover_the_requested_share():
    img = Image.new("RGB", (300, 200), (128, 128, 128))
    for name, density, share in (("stripes", 0.3, 0.3), ("grid", 0.2, 1 - 0.8 ** 2)):
        out = fn(name)(img, np.random.default_rng(3), density=density, count=10)
        changed = (arr(out) != 128).any(axis=2).mean()
        assert abs(changed - share) < 0.04, (name, changed)
        full = arr(fn(name)(img, np.random.default_rng(3), density=1.0))
        assert len(np.unique(full.reshape(-1, 3), axis=0)) == 1
        assert fn(name)(img, np.random.default_rng(3), density=0.5, opacity=0.0).tobytes() == img.tobytes()


def test_blend_weights_the_other_image():
    a, b = make_image(7, (64, 48)), make_image(8, (64, 48))
    assert fn("blend")(a, np.random.default_rng(0), alpha=0.0).tobytes() == a.tobytes()
    assert fn("blend")(a, np.random.default_rng(0), alpha=1.0).tobytes() == \
        fn("blend")(b, np.random.default_rng(0), alpha=1.0).tobytes(), "alpha 1 is the other image alone"
    half = arr(fn("blend")(a, np.random.default_rng(0), alpha=0.5)).astype(int)
    other = arr(fn("blend")(a, np.random.default_rng(0), alpha=1.0)).astype(int)
    assert np.abs(half - (arr(a).astype(int) + other) / 2).max() <= 1


def test_pixelate_blocks_are_constant_means():
    img = make_image(9, (100, 70))
    out = arr(fn("pixelate")(img, None, block=0.1))  # 7-pixel blocks; the last row and column are narrower
    assert out.shape == (70, 100, 3)
    for y0 in range(0, 70, 7):
        for x0 in range(0, 100, 7):
            blk = out[y0:y0 + 7, x0:x0 + 7].reshape(-1, 3)
            assert (blk == blk[0]).all()
    assert np.array_equal(out[0, 0], np.round(arr(img)[:7, :7].reshape(-1, 3).mean(axis=0)).astype(np.uint8))
    assert np.array_equal(out[-1, -1], np.round(arr(img)[63:, 98:].reshape(-1, 3).mean(axis=0)).astype(np.uint8))
    assert fn("pixelate")(img, None, block=0.001).tobytes() == img.tobytes()  # 1-pixel blocks


# --------------------------------------------------------------------------- chains
def test_chain_records_the_attacks_it_applied_and_the_same_seed_gives_the_same_chain():
    img = make_image(10, (96, 64))
    plans = set()
    for seed in range(6):
        out = fn("chain")(img, attack_rng(seed, "x", "chain_3"), n=3)
        steps = plan_chain(attack_rng(seed, "x", "chain_3"), 3)
        assert json.loads(out.info["neardup_chain"]) == [[a, p] for a, p in steps]
        assert len({a for a, _ in steps}) == 3
        replay = img
        rng = attack_rng(seed, "x", "chain_3")
        plan_chain(rng, 3)
        for a, p in steps:
            replay = fn(a)(replay, rng, **p)
        assert replay.tobytes() == out.tobytes()
        plans.add(out.info["neardup_chain"])
    assert len(plans) == 6


def test_chain_pool_draws_every_entry_within_its_declared_ranges():
    rng = np.random.default_rng(0)
    seen = {a for _ in range(300) for a, _ in plan_chain(rng, 2)}  # plan_chain checks every drawn value
    assert seen == {a for a, _ in CHAIN_POOL}
    assert all(a in ATTACKS for a, _ in CHAIN_POOL)


# --------------------------------------------------------------------------- offline content
def test_second_images_need_no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network used")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    canvas.photo.cache_clear()
    for name in canvas.PHOTOS:
        p = canvas.photo(name)
        assert p.mode == "RGB" and min(p.size) >= 256
    rng = np.random.default_rng(0)
    for make in (canvas.screenshot, canvas.shapes, canvas.background):
        assert make(rng, (50, 30)).size == (50, 30)
    assert canvas.sticker(rng, 40).mode == "RGBA"


# --------------------------------------------------------------------------- errors and the CLI
@pytest.mark.parametrize("entry, message", [
    ("{attack: overlay_onto_screenshot, params: {scale: 1.5}}", "'scale' = 1.5 is outside its range [0.05, 1]"),
    ("{attack: pad, params: {fraction: -1}}", "'fraction' = -1 is outside its range [0, 3]"),
    ("{attack: pixelate, params: {block: 0}}", "'block' = 0 is outside its range [0.001, 0.5]"),
    ("{attack: stripes, params: {density: 0.3, count: 2.5}}", "'count' = 2.5 is not an integer in [1, 100]"),
    ("{attack: chain, params: {n: 5}}", "'n' = 5 is outside its range [1, 4]"),
    ("{attack: meme, params: {bar: big}}", "'bar' = 'big' is not a number"),
    ("{attack: overlay_emoji, params: {opacity: 1}}", "attack 'overlay_emoji' needs parameter 'size'"),
], ids=["scale", "pad", "block", "count", "chain", "meme", "missing"])
def test_out_of_range_parameters_are_one_error_line(tmp_path, image_dir, entry, message):
    cfg = tmp_path / "set.yaml"
    cfg.write_text(f"attacks:\n  - {entry}\n")
    expect_error("attack", "--attacks", cfg, "--list", message=message)
    expect_error("attack", image_dir, tmp_path / "q", "--attacks", cfg, "--workers", "1", message=message)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("content, message", [
    ("include: [nope]\n", "'include' names 'nope', not a built-in set"),
    ("include: [../default]\n", "not a built-in set"),
    ("include: biomedical\n", "'include' must be a non-empty list"),
    ("include: []\n", "'include' must be a non-empty list"),
    ("include: [biomedical]\nattacks: [{attack: invert}]\n", "duplicate attack names 'invert' and 'invert'"),
    ("include: [default, default]\n", "duplicate attack names"),
], ids=["unknown", "path", "not-a-list", "empty", "collision", "twice"])
def test_bad_includes(tmp_path, content, message):
    cfg = tmp_path / "set.yaml"
    cfg.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_attack_config(cfg)


def test_includes_combine_and_a_circular_include_is_refused(tmp_path, monkeypatch):
    cfg = tmp_path / "set.yaml"
    cfg.write_text("include: [biomedical]\nattacks: [{attack: pad, params: {fraction: 0.5}}]\n")
    assert [s.name for s in load_attack_config(cfg)] == [s.name for s in load_attack_config("biomedical")] + \
        ["pad"]
    real = gen._builtin_text
    monkeypatch.setattr(gen, "_builtin_text", lambda n: "include: [all]\n" if n == "extended" else real(n))
    with pytest.raises(UsageError, match=r"'include' of 'all' is circular \(all -> extended -> all\)"):
        load_attack_config("all")


def test_attack_extended_writes_every_copy_and_a_valid_manifest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        make_image(i, (72, 48)).save(src / f"p{i}.png")
    out = invoke("attack", src, tmp_path / "q", "--attacks", "extended", "--workers", "1").output
    n = len(EXTENDED)
    assert f"{2 * n} queries from 2 images x {n} attacks" in out
    rows = read_manifest(tmp_path / "q")
    assert len(rows) == 2 * n
    assert len([p for p in (tmp_path / "q").iterdir() if p.suffix == ".jpg"]) == 2 * n
    by_name = {s.name: s for s in EXTENDED}
    for r in rows:
        assert (tmp_path / "q" / r.query).is_file()
        assert r.family == by_name[r.attack].family and json.loads(r.params) == by_name[r.attack].params
    assert {r.source for r in rows} == {"p0", "p1"}
    # without the manifest, the names still give each built-in instance its family
    (tmp_path / "q" / "manifest.csv").unlink()
    assert {(r.attack, r.family) for r in load_ground_truth(tmp_path / "q")} == {(r.attack, r.family) for r in rows}
