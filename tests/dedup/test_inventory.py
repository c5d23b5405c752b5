"""Byte hashes cached by (size, mtime), exact groups, pixel digests that see through a lossless re-encode."""

from __future__ import annotations

import os

import neardup.dedup.inventory as inv
from tests.conftest import make_image


def test_hashes_are_cached_and_exact_copies_grouped(tmp_path, monkeypatch) -> None:
    d = tmp_path / "img"
    d.mkdir()
    make_image(0).save(d / "a.png")
    (d / "a_copy.png").write_bytes((d / "a.png").read_bytes())
    make_image(1).save(d / "b.png")
    paths = [str(d / n) for n in ("a.png", "a_copy.png", "b.png")]
    infos = inv.scan_files(paths, tmp_path)
    assert inv.exact_groups(infos).tolist() == [0, 0, 2]
    assert infos[0].sha256 == infos[1].sha256 != infos[2].sha256
    calls = []
    real = inv.sha256_file
    monkeypatch.setattr(inv, "sha256_file", lambda p, chunk=1 << 20: calls.append(p) or real(p))
    again = inv.scan_files(paths, tmp_path)
    assert again == infos and calls == []  # all from the cache
    make_image(2).save(d / "b.png")  # changed: hashed again
    os.utime(d / "b.png", ns=(1, 1))
    third = inv.scan_files(paths, tmp_path)
    assert calls == [str(d / "b.png")] and third[2].sha256 != infos[2].sha256


def test_pixel_digest_sees_a_lossless_reencode(tmp_path) -> None:
    img = make_image(3)
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "a.bmp")
    img.save(tmp_path / "a.jpg", quality=90)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    png, bmp, jpg = (inv.pixel_digest(tmp_path / f"a.{e}") for e in ("png", "bmp", "jpg"))
    assert png == bmp and png != jpg
    assert inv.pixel_digest(tmp_path / "bad.png") is None
    assert inv.image_size(tmp_path / "a.png") == img.size and inv.image_size(tmp_path / "bad.png") == (0, 0)
