"""``neardup train``: supervised deep metric learning of any registry encoder, on the shared training engine.

This module holds only what is metric learning's: :class:`MetricTask` (labelled images drawn m per class, an
L2-normalised embedding head, a pytorch-metric-learning loss and miner) and :class:`MetricCriterion`. The loop,
AMP, DDP, logs, checkpoints, exact resume and validation are the engine's (:mod:`neardup.simclr.engine`); the
run folder and ``--resume`` rules :mod:`neardup.simclr.rundir`'s. The product, best.pt, is the encoder with its
head (``neardup.trained/1``), used everywhere as ``--model trained --weights RUN/best.pt``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from neardup import dist
from neardup.data.labels import Labels
from neardup.extract.models.trained import EmbeddingHead, EmbeddingNet, export_trained
from neardup.extract.registry import ModelCfg, scaled_resize
from neardup.metric.config import TrainConfig
from neardup.metric.data import (
    ClassBalancedSampler,
    LabelledDataset,
    check_class_count,
    check_readable,
    training_labels,
)
from neardup.metric.objectives import LOSSES, MINERS, NO_MINER
from neardup.simclr.config import run_settings
from neardup.simclr.engine import Evaluator, RunConfig, TrainReport, fit, retrieval_validator
from neardup.simclr.rundir import Given, open_run_on_all_ranks
from neardup.simclr.task import LoaderSpec, ModelOutput
from neardup.simclr.views import ViewConfig, ViewMaker


class MetricCriterion(torch.nn.Module):
    """A pytorch-metric-learning loss, with its miner: ``forward(embeddings, labels) -> (loss, parts)``.

    ``world_size > 1`` (DDP): pml's ``DistributedMinerWrapper`` / ``DistributedLossWrapper`` mine and compute the
    loss over every rank's embeddings. The wrapper multiplies the loss by the world size (so that DDP's gradient
    average over ranks gives the full batch's gradient for the model); the loss's own parameters (proxies) get
    that factor too, which a gradient hook removes. The engine then averages their gradients over the ranks.
    """

    def __init__(self, loss: Any, miner: Any = None, name: str = "loss", world_size: int = 1):
        super().__init__()
        self.name, self.world_size = name, world_size
        self.loss, self.miner = loss, miner  # registered as is: the state dict is the same in every world size
        self._run: tuple[Any, Any] = (loss, miner)  # what forward calls (not registered: no second state dict key)
        if world_size > 1:
            from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

            for p in loss.parameters():
                p.register_hook(lambda g: g / world_size)
            self._run = (DistributedLossWrapper(loss), None if miner is None else DistributedMinerWrapper(miner))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """embeddings: (B, P) float; labels: (B,) int64 class codes. Returns the loss and its log entries
        (the loss under its own name; ``mined``: the tuples the miner kept)."""
        loss_fn, miner = self._run
        indices = None if miner is None else miner(embeddings, labels)
        loss = loss_fn(embeddings, labels, indices)
        parts = {self.name: float(loss.detach()) / self.world_size}
        if indices is not None:
            parts["mined"] = float(len(indices[0]))
        return loss, parts


def build_criterion(cfg: TrainConfig, num_classes: int, world_size: int = 1) -> MetricCriterion:
    """The configured loss (and miner), options checked against their registry entries."""
    spec = LOSSES[cfg.loss]
    loss = spec.build(spec.options(cfg.loss_options, "--loss-options"), num_classes, cfg.embed_dim)
    miner = None
    if cfg.miner != NO_MINER:
        mspec = MINERS[cfg.miner]
        miner = mspec.build(mspec.options(cfg.miner_options, "--miner-options"), num_classes, cfg.embed_dim)
    return MetricCriterion(loss, miner, cfg.loss.replace("-", "_"), world_size)


def eval_cfg(mcfg: ModelCfg, input_size: int | None) -> ModelCfg:
    """The encoder's config at the crop validation and the exported model use (``--input-size``; default its own)."""
    if input_size is None:
        return mcfg
    return replace(mcfg, input_size=input_size, resize_size=scaled_resize(mcfg, input_size))


class MetricTask:
    """Labelled metric learning: batches of m images of each of B/m classes, an embedding head, a pml loss.

    References: BINDER (triplet loss with the hardest negatives on manipulated copies), FaceNet (Schroff et al.,
    CVPR 2015), and the losses' papers listed by ``neardup train --help``.
    """

    def __init__(self, cfg: TrainConfig, labels: Labels):
        self.cfg, self.labels = cfg, labels
        self.codes = labels.codes()
        self.num_classes = len(labels.names)
        self.dataset: LabelledDataset | None = None
        self.sampler: ClassBalancedSampler | None = None

    def build_head(self, num_features: int) -> torch.nn.Module:
        return EmbeddingHead(num_features, self.cfg.embed_dim, self.cfg.head_layers)

    def build_loss(self, distributed: bool) -> torch.nn.Module:
        return build_criterion(self.cfg, self.num_classes, dist.env_info().world_size if distributed else 1)

    def make_loader(self, spec: LoaderSpec) -> DataLoader:
        from neardup.data.generate import load_attack_config

        cfg = self.cfg
        attacks = load_attack_config(cfg.online_attacks) if cfg.online_attacks else []
        views = ViewConfig(image_size=cfg.image_size, attack_prob=cfg.attack_prob if attacks else 0.0,
                           jitter=cfg.jitter, min_scale=cfg.min_scale, hflip_prob=cfg.hflip_prob)
        self.dataset = LabelledDataset(self.labels.paths, self.codes, ViewMaker(views, attacks, spec.mean, spec.std),
                                       spec.seed, views.preload_size)
        self.sampler = ClassBalancedSampler(self.codes, cfg.m_per_class, spec.batch_size,
                                            cfg.epoch_samples or len(self.labels), spec.seed, spec.rank,
                                            spec.world_size)
        return DataLoader(self.dataset, batch_size=spec.batch_size, sampler=self.sampler, num_workers=spec.workers,
                          drop_last=True, pin_memory=spec.pin_memory, persistent_workers=False)

    def set_epoch(self, epoch: int) -> None:
        assert self.dataset is not None and self.sampler is not None, "make_loader first"
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def inputs(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return batch[0]

    def loss(self, criterion: torch.nn.Module, out: ModelOutput, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        _, z = out
        return criterion(z.float(), batch[1].to(z.device))

    def feature_network(self, model: torch.nn.Module, mcfg: ModelCfg) -> tuple[torch.nn.Module, ModelCfg]:
        net = EmbeddingNet(model.encoder, model.head)  # type: ignore[arg-type]
        net.train(model.training)
        return net, replace(eval_cfg(mcfg, self.cfg.input_size), num_features=self.cfg.embed_dim, stages=())

    def export(self, path: Path, model: torch.nn.Module, mcfg: ModelCfg, extra: dict[str, Any]) -> None:
        export_trained(path, model.encoder, model.head, eval_cfg(mcfg, self.cfg.input_size),  # type: ignore[arg-type]
                       {**extra, "loss": self.cfg.loss, "miner": self.cfg.miner, "classes": self.num_classes})


def load_training_labels(cfg: TrainConfig) -> Labels:
    """The run's labelled images, checked: every class big enough for the loss and miner, every image readable,
    and the validation labels (--val-labels) usable.

    Raises:
        UsageError: one line, naming what is wrong (a missing file, a single-image class a miner cannot use...).
    """
    found = training_labels(cfg.images, cfg.labels, cfg.class_folders, cfg.labels_from_manifest)
    if cfg.needs_pairs and not cfg.online_attacks:  # online attacks make the second image of a class
        found.check(2, why=cfg.pair_reason())
    else:
        found.check(1)
    check_class_count(len(found.names), cfg.m_per_class, cfg.batch_size * dist.env_info().world_size)
    check_readable(found.paths)
    if cfg.val_labels:
        from neardup.metric.validate import read_labels

        read_labels(cfg.val_labels).check(2, why="leave-one-out validation (--val-labels) needs")
    return found


def validator_for(cfg: TrainConfig) -> Any:
    """The run's validation: class retrieval on --val-labels, else near-duplicate retrieval (or none)."""
    def make(run: RunConfig) -> Evaluator | None:
        if cfg.val_labels:
            from neardup.metric.validate import LabelledValidator

            return LabelledValidator(cfg.val_labels, cfg.val_max_queries, cfg.seed)
        return retrieval_validator(run)

    return make


def train(cfg: TrainConfig, show_progress: bool = True, given: Given = None) -> TrainReport:
    """Train ``cfg.model`` with ``cfg.loss`` on the labelled images of ``cfg.images``; best.pt is the encoder with
    its embedding head.

    ``cfg.out`` follows the output-folder rule (:mod:`neardup.outdir`); ``resume`` continues the run in it with
    its recorded options (those not in ``given`` come from the checkpoint; see
    :func:`~neardup.simclr.rundir.resume_config`).

    Raises:
        UsageError: bad settings, labels or inputs; NonFiniteLoss when the loss diverges.
    """
    cfg.validate()
    labels = None if cfg.resume else load_training_labels(cfg)  # a new run's bad labels leave nothing behind
    info = dist.init(cfg.device)
    with ExitStack() as stack:
        cfg, state = open_run_on_all_ranks(stack, cfg, given, "train", info)
        if labels is None:  # resumed: the labels are the run's recorded ones
            labels = load_training_labels(cfg)
        return fit(cfg, MetricTask(cfg, labels), info, state, run_settings(cfg), show_progress, validator_for(cfg))


__all__ = ["MetricCriterion", "MetricTask", "TrainConfig", "TrainReport", "build_criterion", "train"]
