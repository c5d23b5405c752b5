"""``generate_attacks``: output folder rule, unique query names, resume, stale queries, disk full (issue 10)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
from PIL import Image

import neardup.data.generate as gen
from neardup.data.attacks import AttackSpec
from neardup.data.generate import check_query_name, generate_attacks, load_attack_config
from neardup.data.manifest import load_ground_truth, read_manifest
from neardup.errors import UsageError
from neardup.outdir import MARKER, owner
from tests.conftest import make_image

SPECS = [AttackSpec("invert", "invert"), AttackSpec("jpeg_50", "jpeg", {"quality": 50}),
         AttackSpec("noise", "gaussian_noise", {"var": 0.01})]


def run(src, dst, specs=SPECS, **kw):
    kw.setdefault("workers", 1)
    return generate_attacks(src, dst, specs, show_progress=False, **kw)


def pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def queries(d) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.suffix in (".jpg", ".png", ".webp"))


# --------------------------------------------------------------------------- item 1: no path escapes DST
@pytest.mark.parametrize("name", ["../victim.jpg", "a/b.jpg", "..", "", "x" * 256 + ".jpg"])
def test_query_names_must_stay_inside_dst(tmp_path, name):
    with pytest.raises(UsageError, match="not a plain file name inside DST"):
        check_query_name(tmp_path.resolve(), name, "src/a.png x invert")


def test_unusual_source_names_stay_inside_dst(tmp_path):
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    make_image(0).save(src / "sub dir" / "photo (1) ü.png")
    run(src, tmp_path / "q", SPECS[:1])
    assert queries(tmp_path / "q") == ["sub dir__photo (1) ü_invert.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q", "src"]


# --------------------------------------------------------------------------- item 2: the out-folder rule
def test_foreign_dst_is_refused_and_untouched(tmp_path, image_dir):
    dst = tmp_path / "mine"
    dst.mkdir()
    (dst / "img0_invert.jpg").write_bytes(b"my own photo")
    with pytest.raises(UsageError, match="not empty and was not written by `neardup attack`"):
        run(image_dir, dst)
    with pytest.raises(UsageError, match="img0_invert.jpg exists and was not written by neardup"):
        run(image_dir, dst, overwrite=True)
    assert (dst / "img0_invert.jpg").read_bytes() == b"my own photo" and len(list(dst.iterdir())) == 1
    (dst / "img0_invert.jpg").rename(dst / "notes.jpg")
    run(image_dir, dst, overwrite=True)  # writes beside the user's file
    assert (dst / "notes.jpg").read_bytes() == b"my own photo"
    assert len(read_manifest(dst)) == 18 and owner(dst) == "attack"


def test_rerun_into_own_dst_is_fine_and_other_commands_folders_are_refused(tmp_path, image_dir):
    dst = tmp_path / "q"
    first = run(image_dir, dst)
    before = {n: (dst / n).read_bytes() for n in queries(dst)}
    again = run(image_dir, dst)
    assert again.n_queries == first.n_queries == 18 and again.n_kept == 6
    assert {n: (dst / n).read_bytes() for n in queries(dst)} == before
    other = tmp_path / "feats"
    other.mkdir()
    (other / MARKER).write_text('{"command": "extract"}')
    (other / "meta.json").write_text("{}")
    with pytest.raises(UsageError, match="holds the output of `neardup extract`"):
        run(image_dir, other, overwrite=True)


def test_a_user_file_in_own_dst_is_never_replaced(tmp_path, image_dir):
    dst = tmp_path / "q"
    run(image_dir, dst, SPECS[:1])
    (dst / "img0_jpeg_50.jpg").write_bytes(b"placed by hand")
    with pytest.raises(UsageError, match="img0_jpeg_50.jpg exists and was not written by `neardup attack`"):
        run(image_dir, dst)
    assert (dst / "img0_jpeg_50.jpg").read_bytes() == b"placed by hand"


def test_legacy_query_set_without_marker_is_recognised(tmp_path, image_dir):
    dst = tmp_path / "q"
    run(image_dir, dst, SPECS[:1])
    (dst / MARKER).unlink()
    (dst / gen.STATE_NAME).unlink()
    run(image_dir, dst, SPECS[:1], fmt="png")  # its own manifest header identifies it
    assert queries(dst) == [f"img{i}_invert.png" for i in range(6)]


def test_dst_inside_src_is_refused(image_dir):
    with pytest.raises(UsageError, match="must not be SRC or inside it"):
        run(image_dir, image_dir / "queries")
    with pytest.raises(UsageError, match="must not be SRC or inside it"):
        run(image_dir, image_dir)


# --------------------------------------------------------------------------- item 3: same stem, other extension
def test_same_stem_different_extension_get_distinct_queries_and_right_ground_truth(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_image(1).save(src / "cat.jpg", quality=100)
    make_image(2).save(src / "cat.png")
    make_image(3).save(src / "dog.png")
    run(src, tmp_path / "q", SPECS[:1], fmt="png")
    rows = {r.query: r for r in read_manifest(tmp_path / "q")}
    assert sorted(rows) == ["cat.jpg_invert.png", "cat.png_invert.png", "dog_invert.png"]
    for r in rows.values():
        assert r.source == ("dog" if r.source_path.endswith("dog.png") else os.path.basename(r.source_path))
        assert np.array_equal(pixels(tmp_path / "q" / r.query), 255 - pixels(r.source_path))


def test_colliding_ids_are_refused(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    make_image(1).save(src / "a" / "b.png")
    make_image(2).save(src / "a__b.png")
    with pytest.raises(UsageError, match="both get the image id 'a__b.png'"):
        run(src, tmp_path / "q")


def test_colliding_query_names_are_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_image(1).save(src / "cat.png")
    make_image(2).save(src / "cat_inv.png")
    specs = [AttackSpec("inv_x", "invert"), AttackSpec("x", "hflip")]
    with pytest.raises(UsageError, match="query file cat_inv_x.jpg would be written for both"):
        run(src, tmp_path / "q", specs)


def test_rerun_with_another_format_leaves_no_stale_queries(tmp_path, image_dir):
    dst = tmp_path / "q"
    run(image_dir, dst, fmt="jpg")
    (dst / "notes.txt").write_text("mine")
    run(image_dir, dst, fmt="png")
    assert queries(dst) == sorted(r.query for r in read_manifest(dst))
    assert all(n.endswith(".png") for n in queries(dst)) and len(queries(dst)) == 18
    assert (dst / "notes.txt").read_text() == "mine"
    # fewer attacks and a source gone: their queries go too
    (image_dir / "img5.png").unlink()
    run(image_dir, dst, SPECS[:1], fmt="png")
    assert queries(dst) == [f"img{i}_invert.png" for i in range(5)]


# --------------------------------------------------------------------------- item 5: disk full, resume
def _fail_after(monkeypatch, n: int) -> list[str]:
    """Make the (n+1)-th query write hit a full disk, like a real write (no file name on the error)."""
    real, written = gen.atomic_write, []

    def fake(path, write):
        if len(written) >= n:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(str(path))
        real(path, write)

    monkeypatch.setattr(gen, "atomic_write", fake)
    return written


def test_disk_full_names_the_file_and_a_rerun_resumes(tmp_path, image_dir, monkeypatch):
    dst = tmp_path / "q"
    _fail_after(monkeypatch, 7)  # sources img0, img1 done; img2 half written
    with pytest.raises(OSError) as exc:
        run(image_dir, dst)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(dst / "img2_jpeg_50.jpg")
    assert not (dst / "manifest.csv").exists()
    with pytest.raises(UsageError, match="unfinished `neardup attack` output"):
        load_ground_truth(dst)
    monkeypatch.undo()
    decoded = []
    real_load = gen.load_image
    monkeypatch.setattr(gen, "load_image", lambda p, *a, **k: decoded.append(os.path.basename(p)) or real_load(p))
    rep = run(image_dir, dst)
    assert rep.n_kept == 2 and decoded == ["img2.png", "img3.png", "img4.png", "img5.png"]
    fresh = tmp_path / "fresh"
    run(image_dir, fresh)
    assert (dst / "manifest.csv").read_bytes() == (fresh / "manifest.csv").read_bytes()
    assert queries(dst) == queries(fresh)
    for n in queries(dst):
        assert (dst / n).read_bytes() == (fresh / n).read_bytes(), n


def test_interrupted_rerun_with_other_settings_never_mixes(tmp_path, image_dir, monkeypatch):
    dst = tmp_path / "q"
    run(image_dir, dst, seed=0)
    _fail_after(monkeypatch, 7)
    with pytest.raises(OSError):
        run(image_dir, dst, seed=1)
    monkeypatch.undo()
    run(image_dir, dst, seed=1)
    fresh = tmp_path / "fresh"
    run(image_dir, fresh, seed=1)
    for n in queries(fresh):
        assert (dst / n).read_bytes() == (fresh / n).read_bytes(), n


def test_changed_source_is_redone(tmp_path, image_dir):
    dst = tmp_path / "q"
    run(image_dir, dst, SPECS[:1], fmt="png")
    make_image(40).save(image_dir / "img3.png")
    rep = run(image_dir, dst, SPECS[:1], fmt="png")
    assert rep.n_kept == 5
    assert np.array_equal(pixels(dst / "img3_invert.png"), 255 - np.asarray(make_image(40)))


def test_disk_full_in_a_worker_process_is_the_same_oserror(tmp_path, image_dir, monkeypatch):
    """Worker processes (forked, so they inherit the patch) pass the error on unchanged, with the file name."""
    real = gen.atomic_write

    def fake(path, write):
        if "img3_" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, write)

    monkeypatch.setattr(gen, "atomic_write", fake)
    with pytest.raises(OSError) as exc:
        run(image_dir, tmp_path / "q", workers=2)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "q" / "img3_invert.jpg")


def test_bad_settings_for_api_callers(image_dir, tmp_path):
    for kw, msg in (({"seed": -1}, "seed"), ({"quality": 0}, "quality"), ({"workers": 0}, "workers"),
                    ({"fmt": "bmp"}, "unknown format")):
        with pytest.raises(UsageError, match=msg):
            run(image_dir, tmp_path / "q", **kw)
    with pytest.raises(UsageError, match="duplicate attack names"):
        run(image_dir, tmp_path / "q", SPECS + SPECS[:1])
    with pytest.raises(UsageError, match="no attacks"):
        run(image_dir, tmp_path / "q", [])
    assert not (tmp_path / "q").exists()


def test_default_set_names_are_unchanged(tmp_path, image_dir):
    """The common case keeps the documented <source>_<attack>.<ext> names."""
    specs = [s for s in load_attack_config() if s.name in ("rotation_20", "gaussian_noise_0.01")]
    run(image_dir, tmp_path / "q", specs)
    assert queries(tmp_path / "q") == sorted(f"img{i}_{s.name}.jpg" for i in range(6) for s in specs)


def test_overwrite_on_own_output_redoes_everything_and_removes_the_old_queries(tmp_path, image_dir):
    dst = tmp_path / "q"
    run(image_dir, dst, SPECS[:1])
    rep = run(image_dir, dst, SPECS[:1], fmt="webp", overwrite=True)
    assert rep.n_kept == 0 and queries(dst) == [f"img{i}_invert.webp" for i in range(6)]
    assert run(image_dir, dst, SPECS[:1], fmt="webp", overwrite=True).n_kept == 0
