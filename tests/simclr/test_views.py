"""Training views: a function of (seed, epoch, index, view) only, torchvision's sampling, global RNGs untouched."""

import random

import numpy as np
import pytest
import torch

import neardup._compat  # noqa: F401  (before torchvision)
from neardup.data.attacks import AttackSpec
from neardup.data.generate import load_attack_config
from neardup.simclr.views import SimCLRViewTransform, TwoViewDataset, ViewConfig, ViewMaker
from tests.conftest import make_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("views")
    for i in range(4):
        make_image(600 + i, (80, 60)).save(d / f"v{i}.png")
    attacks: list[AttackSpec] = [s for s in load_attack_config() if s.name in ("jpeg_50", "rotation_10", "crop_40")]
    assert len(attacks) == 3
    maker = ViewMaker(ViewConfig(image_size=48, attack_prob=0.5, jitter=0.5, blur_prob=0.5, gray_prob=0.5),
                      attacks, MEAN, STD)
    return TwoViewDataset(sorted(str(p) for p in d.iterdir()), maker, seed=3)


def _global_states():
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


def test_views_depend_on_seed_epoch_index_view_only_and_leave_the_global_rngs_alone(dataset):
    dataset.set_epoch(0)
    a0, a1 = dataset[1]
    torch.manual_seed(123)  # the global generators play no part
    np.random.seed(5)
    random.seed(7)
    b0, b1 = dataset[1]
    assert torch.equal(a0, b0) and torch.equal(a1, b1)
    assert a0.shape == (3, 48, 48) and not torch.equal(a0, a1)  # the two views differ
    assert not torch.equal(dataset[2][0], a0)  # so do other images
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], a0)  # and other epochs
    dataset.set_epoch(0)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    before = _global_states()
    dataset[0]
    after = _global_states()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])


def test_views_do_not_depend_on_the_number_of_workers(dataset):
    from torch.utils.data import DataLoader

    dataset.set_epoch(2)
    inline = [dataset[i] for i in range(len(dataset))]
    batched = next(iter(DataLoader(dataset, batch_size=len(dataset), num_workers=2)))
    for i, (v0, v1) in enumerate(inline):
        assert torch.equal(batched[0][i], v0) and torch.equal(batched[1][i], v1)


@pytest.mark.parametrize("size", [(80, 60), (300, 40), (40, 300), (50, 50)])
def test_crop_box_is_torchvisions_random_resized_crop(size):
    from torchvision.transforms import RandomResizedCrop

    tail = SimCLRViewTransform(ViewConfig(min_scale=0.3), MEAN, STD)
    img = make_image(1, size)
    for seed in range(20):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(img, [0.3, 1.0], [3 / 4, 4 / 3])
        assert tail._crop_box(img.width, img.height, torch.Generator().manual_seed(seed)) == expected


@pytest.mark.parametrize("jitter, gray", [(0.5, 0.05), (1.0, 0.5), (2.5, 0.0)])
def test_view_transform_is_torchvisions_pipeline_with_an_explicit_generator(jitter, gray):
    """The same draws in the same order as torchvision's transforms on the global generator: identical views."""
    from torchvision import transforms as T

    cfg = ViewConfig(image_size=40, min_scale=0.4, jitter=jitter, gray_prob=gray, hflip_prob=0.5, blur_prob=0.0)
    tail = SimCLRViewTransform(cfg, MEAN, STD)
    cj = T.ColorJitter(brightness=0.8 * jitter, contrast=0.8 * jitter, saturation=0.8 * jitter, hue=0.2 * jitter)
    reference = T.Compose([T.RandomResizedCrop(40, scale=(0.4, 1.0)), T.RandomHorizontalFlip(0.5),
                           T.RandomApply([cj], p=0.8), T.RandomGrayscale(gray), T.ToTensor(),
                           T.Normalize(MEAN, STD)])
    img = make_image(7, (90, 70))
    for seed in range(12):
        torch.manual_seed(seed)
        expected = reference(img)
        assert torch.equal(tail(img, torch.Generator().manual_seed(seed)), expected), seed
