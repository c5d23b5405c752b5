"""The training set: IMAGES with their labels (whole classes from a manifest), m-per-class batches that are a function
of (seed, epoch) split across ranks, and views that are a function of (seed, epoch, index, draw)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from neardup.data.generate import load_attack_config
from neardup.errors import UsageError
from neardup.metric.data import ClassBalancedSampler, LabelledDataset, check_readable, training_labels
from neardup.simclr.views import ViewConfig, ViewMaker
from tests.helpers import invoke
from tests.metric.conftest import make_class_folders, write_labels_csv

SMALL_ATTACKS = "attacks:\n  - {attack: hflip}\n  - {attack: grayscale}\n  - {attack: invert}\n"


def test_images_take_their_labels_and_unlabelled_images_are_refused(tmp_path):
    folders = make_class_folders(tmp_path / "cls", 3, 2)
    csv_path = write_labels_csv(folders, tmp_path / "labels.csv")
    lab = training_labels(str(folders / "c1"), labels=str(csv_path))  # IMAGES picks part of the labelled set
    assert lab.classes == ("c1", "c1") and all(Path(p).parent.name == "c1" for p in lab.paths)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "new.png").write_bytes((folders / "c0" / "0.png").read_bytes())
    with pytest.raises(UsageError, match="1 training image path.* have no label in .*labels.csv, e.g. .*new.png"):
        training_labels(str(tmp_path / "extra"), labels=str(csv_path))


def test_without_labels_each_image_is_its_own_class(tmp_path):
    folders = make_class_folders(tmp_path / "cls", 2, 2)
    lab = training_labels(str(folders))
    assert len(lab.names) == 4 and lab.classes == ("c0__0", "c0__1", "c1__0", "c1__1")


def test_a_manifest_gives_whole_classes_from_the_sources_or_the_copies(tmp_path):
    src = make_class_folders(tmp_path / "src", 3, 1)
    (tmp_path / "small.yaml").write_text(SMALL_ATTACKS)
    invoke("attack", src, tmp_path / "q", "--attacks", tmp_path / "small.yaml", "--format", "png", "--workers", 1)
    from_sources = training_labels(str(src), manifest=str(tmp_path / "q"))
    assert len(from_sources) == 3 * 4 and sorted(Counter(from_sources.classes).values()) == [4, 4, 4]
    from_copies = training_labels(str(tmp_path / "q"), manifest=str(tmp_path / "q"))
    assert from_copies == from_sources


def test_unreadable_images_are_refused_before_training(tmp_path):
    good = make_class_folders(tmp_path / "cls", 1, 1) / "c0" / "0.png"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    check_readable([str(good)])
    with pytest.raises(UsageError, match="1 labelled image.* cannot be read, e.g. .*bad.png"):
        check_readable([str(good), str(bad)])


CODES = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 9])  # unequal classes, one of a single image


def test_batches_hold_m_images_of_each_class_and_depend_only_on_seed_and_epoch():
    s = ClassBalancedSampler(CODES, m=2, batch_size=6, samples=24, seed=3)
    assert len(s) == 24
    a = list(s)
    assert a == list(ClassBalancedSampler(CODES, m=2, batch_size=6, samples=24, seed=3))  # a fresh sampler: same
    assert list(s) == a  # the same epoch again: same (pml's in-place shuffle does not leak into the next list)
    assert [d for _, d in a] == list(range(24))  # draw = position in the epoch
    for start in range(0, 24, 6):
        counts = Counter(int(CODES[i]) for i, _ in a[start:start + 6])
        assert sorted(counts.values()) == [2, 2, 2], counts  # 3 classes x m=2 (the single image drawn twice)
    s.set_epoch(1)
    assert list(s) != a
    assert list(ClassBalancedSampler(CODES, 2, 6, 24, seed=4)) != a


def test_ranks_share_each_global_batch_in_whole_groups():
    whole = ClassBalancedSampler(CODES, m=2, batch_size=8, samples=32, seed=0)
    ranks = [list(ClassBalancedSampler(CODES, m=2, batch_size=4, samples=32, seed=0, rank=r, world_size=2))
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 16
    merged = [x for g in range(4) for r in (0, 1) for x in ranks[r][g * 4:(g + 1) * 4]]
    assert merged == list(whole)  # rank r takes slice r of every global batch
    for r in (0, 1):
        for g in range(4):
            counts = Counter(int(CODES[i]) for i, _ in ranks[r][g * 4:(g + 1) * 4])
            assert sorted(counts.values()) == [2, 2]


def test_too_few_classes_for_a_batch_is_refused():
    with pytest.raises(UsageError, match="needs 8 classes, but the labels have 6: lower --batch-size"):
        ClassBalancedSampler(CODES, m=2, batch_size=16, samples=32, seed=0)


def test_online_attack_views_depend_only_on_seed_epoch_index_and_draw(tmp_path):
    folders = make_class_folders(tmp_path / "cls", 1, 2)
    paths = sorted(str(p) for p in folders.rglob("*.png"))
    maker = ViewMaker(ViewConfig(image_size=32, attack_prob=1.0), load_attack_config("default"), (0.5,) * 3,
                      (0.5,) * 3)
    ds = LabelledDataset(paths, np.zeros(2, np.int64), maker, seed=0)
    v, code = ds[(1, 5)]
    assert v.shape == (3, 32, 32) and code == 0
    assert torch.equal(ds[(1, 5)][0], v)
    assert not torch.equal(ds[(1, 6)][0], v)  # the same image drawn twice: two different copies
    ds.set_epoch(1)
    assert not torch.equal(ds[(1, 5)][0], v)
    (tmp_path / "cls" / "c0" / "1.png").write_bytes(b"damaged")
    with pytest.raises(UsageError, match="training image .*1.png cannot be read"):
        ds[(1, 0)]
