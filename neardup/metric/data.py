"""The labelled training set of ``neardup train``: which images, their classes, the views, and m images per class.

- :func:`training_labels`: IMAGES's images with their classes (from :mod:`neardup.data.labels`); with a manifest,
  whole classes (each source with all its attacked copies); without labels (``--online-attacks`` only), each image
  is its own class, BINDER's instance-level setting where the positives are attacked copies made on the fly.
- :class:`LabelledDataset`: decodes an image when asked and makes its view (optionally an online attack first,
  then the SimCLR crop/flip/jitter of :mod:`neardup.simclr.views`) from a generator seeded by (seed, epoch,
  index, draw), so a view is the same whatever the number of workers and a resumed run sees the same views.
- :class:`ClassBalancedSampler`: pytorch-metric-learning's ``MPerClassSampler`` made a function of (seed, epoch)
  and split across DDP ranks by whole groups of m.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from neardup.data.images import ImageDecodeError, load_image
from neardup.data.labels import Labels, load_labels
from neardup.errors import UsageError
from neardup.simclr.views import ViewMaker, view_rng


def _norm(p: str) -> str:
    return os.path.normpath(os.path.abspath(p))


def training_labels(images: str, labels: str | None = None, class_folders: str | None = None,
                    manifest: str | None = None) -> Labels:
    """The training images (those of ``images``: a folder, list file or manifest.csv) and their classes.

    With ``manifest``, the classes of IMAGES's images are taken whole: train on the source photos and every
    attacked copy the manifest lists joins its source's class (or the other way round). Without any label
    source, each image is its own class (for ``--online-attacks``).

    Raises:
        UsageError: an image of IMAGES without a label, or what the label reader refuses (missing files...).
    """
    from neardup.data.manifest import image_ids
    from neardup.extract.pipeline import collect_inputs

    paths, root, _ = collect_inputs(images)
    norm = [_norm(p) for p in paths]
    if not (labels or class_folders or manifest):
        return Labels(tuple(norm), tuple(image_ids(paths, root)), f"{images} (one class per image)")
    found = load_labels(labels=labels, class_folders=class_folders, manifest=manifest)
    classes = found.for_paths(norm, what="training image")
    if manifest:
        wanted = set(classes)
        return found.subset([c in wanted for c in found.classes])
    order = np.argsort(norm, kind="stable")
    return Labels(tuple(norm[i] for i in order), tuple(classes[i] for i in order), found.source)


def check_readable(paths: tuple[str, ...] | list[str]) -> None:
    """Refuse images whose header cannot be read (one line naming the first), before training starts.

    Only the header is read (fast); a file damaged further in fails when its batch is made, with its name.
    """
    bad: list[tuple[str, str]] = []
    for p in paths:
        try:
            with Image.open(p) as img:
                img.size  # noqa: B018  (reads the header)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            bad.append((p, " ".join(str(exc).split())[:120] or type(exc).__name__))
    if bad:
        raise UsageError(f"{len(bad)} labelled image(s) cannot be read, e.g. {bad[0][0]} ({bad[0][1]}); remove them "
                         f"from the labels")


class LabelledDataset(Dataset):
    """Labelled images; item ``(index, draw)`` is (a view of image ``index``, its class code).

    ``draw`` is the item's position in the epoch's sample list: the same image drawn twice in an epoch (as
    m-per-class sampling does for small classes) gets two different views, yet each view is a function of
    (seed, epoch, index, draw) only.
    """

    def __init__(self, paths: tuple[str, ...] | list[str], codes: np.ndarray, maker: ViewMaker, seed: int,
                 preload_size: int = 288):
        self.paths, self.codes = list(paths), np.asarray(codes, dtype=np.int64)
        self.maker, self.seed, self.epoch, self.preload_size = maker, seed, 0, preload_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> Image.Image:
        """The decoded image, its short side at most ``preload_size`` (attacks then run on a small image)."""
        path = self.paths[index]
        try:
            img = load_image(path, draft_size=(self.preload_size, self.preload_size))
        except ImageDecodeError as exc:
            raise UsageError(f"training image {path} cannot be read ({exc}); remove it from the labels") from None
        s = self.preload_size / min(img.size)
        if s < 1:
            img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.Resampling.BICUBIC)
        return img

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, draw = item
        view = self.maker(self.image(index), view_rng(self.seed, self.epoch, index, draw))
        return view, int(self.codes[index])


def check_class_count(n_classes: int, m: int, global_batch: int) -> None:
    """Refuse labels with fewer classes than a batch of distinct groups of m needs (global batch / m)."""
    if n_classes * m < global_batch:
        raise UsageError(f"a global batch of {global_batch} with --m-per-class {m} needs {global_batch // m} "
                         f"classes, but the labels have {n_classes}: lower --batch-size or raise --m-per-class")


class ClassBalancedSampler(Sampler):
    """m images of each of (global batch / m) classes per global batch: pytorch-metric-learning's
    ``MPerClassSampler`` (classes with fewer than m images are drawn with replacement), made deterministic and
    distributed.

    The epoch's list is a function of (seed, epoch) only: pml draws from its module's ``NUMPY_RANDOM``, which is
    pointed at a generator seeded by (seed, epoch) for the one call that builds the list (the global numpy state
    is untouched). Each global batch is cut into ``world_size`` consecutive slices of ``batch_size``, one per rank;
    as ``batch_size`` is a multiple of m, every rank gets whole groups of m. Yields ``(index, draw)`` items.

    Raises:
        UsageError: fewer classes than a global batch needs (batch / m).
    """

    def __init__(self, codes: np.ndarray, m: int, batch_size: int, samples: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        from pytorch_metric_learning.samplers import MPerClassSampler

        self.codes = np.asarray(codes, dtype=np.int64)
        self.m, self.batch_size, self.seed, self.rank, self.world = m, batch_size, seed, rank, world_size
        self.epoch = 0
        global_batch = batch_size * world_size
        check_class_count(len(np.unique(self.codes)), m, global_batch)
        samples = max(samples, global_batch)
        self.pml = MPerClassSampler(self.codes, m, batch_size=global_batch, length_before_new_iter=samples)
        self.classes = list(self.pml.labels)  # pml shuffles its list in place: each epoch restarts from this order
        self.global_batch = global_batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pml) // self.world

    def epoch_list(self) -> list[int]:
        """The whole epoch's image indices, all ranks' batches in turn."""
        from pytorch_metric_learning.utils import common_functions as c_f

        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(np.random.SeedSequence([self.seed, self.epoch]).generate_state(4))
        try:
            self.pml.labels = list(self.classes)
            return [int(i) for i in self.pml]
        finally:
            c_f.NUMPY_RANDOM = saved

    def __iter__(self) -> Iterator[tuple[int, int]]:
        full = self.epoch_list()
        gb, b = self.global_batch, self.batch_size
        for start in range(0, len(full) - gb + 1, gb):
            lo = start + self.rank * b
            for draw in range(lo, lo + b):
                yield full[draw], draw
