"""A folder with every kind of problematic file a real collection holds (issue: extraction under faults)."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neardup.data.images import ImageDecodeError, load_image, walk_images
from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.store import FeatureStore
from tests.conftest import make_image


def _binary_alpha(h, w, seed):
    rng = np.random.default_rng(seed)
    return np.where(rng.random((h, w)) < 0.3, 0, 255).astype(np.uint8)


def build_collection(bad: os.PathLike, clean: os.PathLike) -> dict[str, str]:
    """Write awkward-but-valid files to ``bad`` and their expected RGB pixels as PNGs to ``clean``.

    Expected pixels are computed independently (numpy), not with neardup's decoder.
    Returns {file name: expected skip reason prefix} for the unusable files.
    """
    base = np.asarray(make_image(11, (90, 60)))
    h, w = base.shape[:2]

    def expect(name, arr):
        Image.fromarray(arr.astype(np.uint8), "RGB").save(os.path.join(clean, name + ".png"))

    # EXIF orientation 6 (rotate 90° clockwise to display)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(base).save(os.path.join(bad, "exif_rot.jpg"), quality=95, exif=exif.tobytes())
    with Image.open(os.path.join(bad, "exif_rot.jpg")) as raw:
        stored = np.asarray(raw.convert("RGB"))
    expect("exif_rot", np.rot90(stored, k=-1))
    # CMYK JPEG: the canonical RGB is PIL's own CMYK->RGB conversion of the stored pixels
    Image.fromarray(base).convert("CMYK").save(os.path.join(bad, "cmyk.jpg"), quality=95)
    with Image.open(os.path.join(bad, "cmyk.jpg")) as raw:
        assert raw.mode == "CMYK"
        expect("cmyk", np.asarray(raw.convert("RGB")))
    # 16-bit grayscale PNG and TIFF: scaled to 8 bits
    g16 = (np.linspace(0, 65535, h * w).reshape(h, w)).astype(np.uint16)
    Image.fromarray(g16).save(os.path.join(bad, "gray16.png"))
    Image.fromarray(g16).save(os.path.join(bad, "gray16.tif"))
    g8 = np.floor(g16.astype(np.float64) / 65535 * 255 + 0.5).astype(np.uint8)
    expect("gray16", np.repeat(g8[..., None], 3, -1))
    # 8-bit grayscale
    Image.fromarray(base[..., 0]).save(os.path.join(bad, "gray8.png"))
    expect("gray8", np.repeat(base[..., :1], 3, -1))
    # RGBA and LA with transparency: composited on white
    alpha = _binary_alpha(h, w, 1)
    Image.fromarray(np.dstack([base, alpha]), "RGBA").save(os.path.join(bad, "rgba.png"))
    expect("rgba", np.where(alpha[..., None] == 0, 255, base))
    Image.fromarray(np.dstack([base[..., 1], alpha]), "LA").save(os.path.join(bad, "la.png"))
    expect("la", np.where(alpha[..., None] == 0, 255, np.repeat(base[..., 1:2], 3, -1)))
    # palette image with a transparent index
    pal = Image.fromarray(base).quantize(16)
    p_arr = np.asarray(pal).copy()
    p_arr[: h // 3] = 0
    pimg = Image.fromarray(p_arr, "P")
    pimg.putpalette(pal.getpalette())
    pimg.info["transparency"] = 0
    pimg.save(os.path.join(bad, "palette_t.png"), transparency=0)
    colours = np.asarray(pal.getpalette()[: 16 * 3], dtype=np.uint8).reshape(16, 3)
    expect("palette_t", np.where(p_arr[..., None] == 0, 255, colours[p_arr]))
    # animated GIF: the first frame
    frames = [Image.fromarray(base).quantize(32), Image.fromarray(255 - base).quantize(32)]
    frames[0].save(os.path.join(bad, "anim.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(os.path.join(bad, "anim.gif")) as raw:
        assert raw.n_frames == 2
        raw.seek(0)
        expect("anim", np.asarray(raw.convert("RGB")))
    # unusable files
    jpg = Path(bad, "exif_rot.jpg").read_bytes()
    Path(bad, "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    png = Path(bad, "rgba.png").read_bytes()
    Path(bad, "truncated.png").write_bytes(png[: len(png) // 2])
    Path(bad, "empty.jpg").write_bytes(b"")
    Path(bad, "readme.png").write_text("not an image at all")
    Path(bad, "garbage.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(200))
    Image.new("1", (5000, 4000)).save(os.path.join(bad, "bomb.png"))  # 20 MP of zeros, a few KB on disk
    return {"truncated.jpg": "truncated", "truncated.png": "", "empty.jpg": "empty file", "readme.png": "not an image",
            "garbage.jpg": "", "bomb.png": "too many pixels"}


def test_every_problem_file_is_decoded_right_or_skipped_with_its_reason(tmp_path):
    bad, clean = tmp_path / "bad", tmp_path / "clean"
    bad.mkdir()
    clean.mkdir()
    expected_skips = build_collection(bad, clean)
    common = dict(model="efficientnet_lite0", workers=1, batch_size=4, engine="torch", max_pixels=10_000_000)
    rep = extract_features(bad, tmp_path / "f_bad", ExtractConfig(**common), show_progress=False)
    extract_features(clean, tmp_path / "f_clean", ExtractConfig(**common), show_progress=False)
    reasons = {os.path.basename(s["path"]): s["reason"] for s in rep.skipped}
    assert set(reasons) == set(expected_skips), reasons
    for name, prefix in expected_skips.items():
        assert reasons[name].startswith(prefix), (name, reasons[name])
    got = FeatureStore.open(tmp_path / "f_bad")
    ref = FeatureStore.open(tmp_path / "f_clean")
    ref_by_name = dict(zip([os.path.basename(p).rsplit(".", 1)[0] for p in ref.paths], ref.features(), strict=True))
    assert len(got) == 9  # exif, cmyk, gray16 png+tif, gray8, rgba, la, palette, gif
    for path, feat in zip(got.paths, got.features(), strict=True):
        stem = os.path.basename(path).rsplit(".", 1)[0]
        np.testing.assert_allclose(feat, ref_by_name[stem], atol=1e-5, err_msg=stem)


def test_load_image_modes_directly(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGBA", (4, 4), (10, 20, 30, 0)).save(p)
    assert np.asarray(load_image(p)).tolist()[0][0] == [255, 255, 255]
    Image.new("1", (3000, 3000)).save(p)
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        load_image(p, max_pixels=1_000_000)


def test_walk_reports_symlink_loops_and_unreadable_folders(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    make_image(0).save(root / "a" / "one.png")
    make_image(1).save(root / "a" / "b" / "two.jpg")
    os.symlink(root / "a", root / "a" / "b" / "loop")  # a -> b -> loop -> a
    locked = root / "locked"
    locked.mkdir()
    make_image(2).save(locked / "hidden.png")
    real_scandir = os.scandir

    def scandir(path="."):  # root reads any folder, so deny this one the way the OS would
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listing = walk_images(root)
    assert sorted(p.name for p in listing.paths) == ["one.png", "two.jpg"]
    reasons = {p.path: p.reason for p in listing.problems}
    assert reasons[str(locked)] == "unreadable folder: Permission denied"
    assert any("symlink loop" in r for r in reasons.values())
    only = walk_images(root, globs=("**/*.jpg", "*.jpg"))
    assert [p.name for p in only.paths] == ["two.jpg"]
