"""Labels from a CSV, class folders and an attack manifest; bad labels refused with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neardup.data.labels import Labels, labels_from_csv, labels_from_folders, labels_from_manifest, load_labels
from neardup.data.manifest import ManifestRow, write_manifest
from neardup.errors import UsageError
from tests.conftest import make_image


def _img(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_image(seed, (24, 16)).save(path)
    return path


def test_csv_relative_to_its_folder(tmp_path: Path) -> None:
    for i, name in enumerate(["a.png", "b.png", "sub/c.png"]):
        _img(tmp_path / "imgs" / name, i)
    (tmp_path / "imgs" / "labels.csv").write_text("path,label\na.png,cat\nsub/c.png,dog\nb.png,cat\n")
    lab = labels_from_csv(tmp_path / "imgs" / "labels.csv")
    assert [Path(p).name for p in lab.paths] == ["a.png", "b.png", "c.png"]
    assert lab.classes == ("cat", "cat", "dog")
    assert lab.names == ["cat", "dog"]
    assert lab.codes().tolist() == [0, 0, 1]
    assert all(Path(p).is_absolute() for p in lab.paths)
    # matched from a relative spelling of the same file
    assert lab.for_paths([str(tmp_path / "imgs" / "sub" / ".." / "b.png")]) == ["cat"]


def test_csv_class_column_and_errors(tmp_path: Path) -> None:
    _img(tmp_path / "a.png", 0)
    (tmp_path / "ok.csv").write_text("path,class\na.png,x\n")
    assert labels_from_csv(tmp_path / "ok.csv").classes == ("x",)
    bad = {
        "cols.csv": ("file,label\na.png,x\n", "needs a 'path' column"),
        "empty.csv": ("path,label\na.png,\n", "empty path or label"),
        "missing.csv": ("path,label\na.png,x\nnope.png,y\n", "do not exist, e.g."),
        "twice.csv": ("path,label\na.png,x\na.png,y\n", "labelled both"),
        "none.csv": ("path,label\n", "lists no images"),
    }
    for name, (text, msg) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(UsageError, match=msg):
            labels_from_csv(tmp_path / name)
    (tmp_path / "bin.csv").write_bytes(b"path,label\n\xff\xfe,x\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        labels_from_csv(tmp_path / "bin.csv")


def test_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "classes"
    _img(root / "cat" / "1.png", 1)
    _img(root / "cat" / "deep" / "2.png", 2)
    _img(root / "dog" / "3.png", 3)
    lab = labels_from_folders(root)
    assert sorted(lab.counts().items()) == [("cat", 2), ("dog", 1)]
    (root / "bird").mkdir()
    with pytest.raises(UsageError, match="empty class"):
        labels_from_folders(root)
    (root / "bird").rmdir()
    _img(root / "loose.png", 4)
    with pytest.raises(UsageError, match="directly in"):
        labels_from_folders(root)


def test_manifest_classes_are_sources_with_their_copies(tmp_path: Path) -> None:
    src = _img(tmp_path / "src" / "s1.png", 1)
    _img(tmp_path / "src" / "s2.png", 2)
    q = tmp_path / "q"
    rows = []
    for s in ("s1", "s2"):
        for a in ("jpeg_10", "crop_5"):
            _img(q / f"{s}_{a}.png", hash((s, a)) % 1000)
            rows.append(ManifestRow(f"{s}_{a}.png", s, str(tmp_path / "src" / f"{s}.png"), a, a.split("_")[0],
                                    json.dumps({})))
    write_manifest(rows, q / "manifest.csv")
    lab = labels_from_manifest(q)
    assert len(lab) == 6 and lab.counts() == {"s1": 3, "s2": 3}
    assert str(src) in lab.paths
    assert len(labels_from_manifest(q, include_sources=False)) == 4
    (q / "s2_crop_5.png").unlink()
    with pytest.raises(UsageError, match="do not exist"):
        labels_from_manifest(q)


def test_check_and_one_source_rule(tmp_path: Path) -> None:
    lab = Labels(("/a", "/b", "/c"), ("x", "x", "y"), "t")
    assert lab.check(1) is lab
    with pytest.raises(UsageError, match=r"class 'y' in t has 1 image\(s\); the miner needs at least 2"):
        lab.check(2, why="the miner needs")
    with pytest.raises(UsageError, match="no labelled images"):
        Labels((), (), "t").check()
    assert lab.subset(np.array([True, False, True])).classes == ("x", "y")
    with pytest.raises(UsageError, match="1 feature path"):
        lab.for_paths(["/a", "/zzz"])
    with pytest.raises(UsageError, match="exactly one of"):
        load_labels()
    with pytest.raises(UsageError, match="got --labels, --class-folders"):
        load_labels(labels="x.csv", class_folders="d")
