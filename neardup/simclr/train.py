"""``finetune``: SimCLR fine-tuning, one process on a laptop CPU or many under torchrun (DDP).

This module holds only what is SimCLR's: :class:`ContrastiveTask` (two attack views of each image, the
projection head, NT-Xent + KoLeo). The loop, AMP, DDP, logs, validation, checkpoints and exact resume are
the engine's (:mod:`neardup.simclr.engine`), the run folder and ``--resume`` rules :mod:`neardup.simclr.rundir`'s.

Nothing is lost on a crash: each epoch ends with an atomic checkpoint and ``--resume`` continues exactly.
A NaN/inf loss stops the run with a clear message and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch.utils.data import DataLoader

from neardup import dist
from neardup.simclr.config import FinetuneConfig, run_settings
from neardup.simclr.engine import NonFiniteLoss, TrainReport, fit
from neardup.simclr.loss import ContrastiveObjective
from neardup.simclr.model import simclr_head
from neardup.simclr.rundir import Given, open_run_on_all_ranks
from neardup.simclr.task import EncoderOnly, LoaderSpec, ModelOutput, distributed_loader
from neardup.simclr.views import TwoViewDataset, ViewConfig, ViewMaker

#: The report of a finetune run (summary.json).
FinetuneReport = TrainReport


class ContrastiveTask(EncoderOnly):
    """SimCLR on near-duplicate views: a batch is (view 0, view 1) of B images; NT-Xent pulls each pair together.

    Reference: Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020.
    """

    def __init__(self, cfg: FinetuneConfig):
        self.cfg = cfg
        self.dataset: TwoViewDataset | None = None
        self.loader: DataLoader | None = None

    def build_head(self, num_features: int) -> torch.nn.Module:
        return simclr_head(num_features, self.cfg.proj_dim, self.cfg.head_layers)

    def build_loss(self, distributed: bool) -> torch.nn.Module:
        return ContrastiveObjective(self.cfg.temperature, self.cfg.koleo, gather_distributed=distributed)

    def make_loader(self, spec: LoaderSpec) -> DataLoader:
        from neardup.data.generate import load_attack_config
        from neardup.extract.pipeline import collect_inputs

        cfg = self.cfg
        paths, _, _ = collect_inputs(cfg.images)
        attacks = load_attack_config(cfg.attacks) if cfg.attack_prob > 0 else []
        views = ViewConfig(image_size=cfg.image_size, attack_prob=cfg.attack_prob, jitter=cfg.jitter,
                           min_scale=cfg.min_scale)
        self.dataset = TwoViewDataset(paths, ViewMaker(views, attacks, spec.mean, spec.std), spec.seed)
        self.loader = distributed_loader(self.dataset, spec)
        return self.loader

    def set_epoch(self, epoch: int) -> None:
        assert self.dataset is not None and self.loader is not None, "make_loader first"
        self.loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self.dataset.set_epoch(epoch)

    def inputs(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.cat(batch)

    def loss(self, criterion: torch.nn.Module, out: ModelOutput, batch: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        h, z = out
        b = batch[0].shape[0]
        return criterion(z[:b], z[b:], h[:b], h[b:])


def finetune(cfg: FinetuneConfig, show_progress: bool = True, given: Given = None) -> TrainReport:
    """Fine-tune ``cfg.model`` with NT-Xent on attack views of the images in ``cfg.images``.

    ``cfg.out`` follows the output-folder rule (:mod:`neardup.outdir`): a new run needs a new or empty folder
    (or ``overwrite``), ``resume`` needs a finetune run folder, and the main process holds its lock throughout.
    On ``resume`` the options not in ``given`` come from the checkpoint (``None``: all were given) and the
    others must not change the result (see :func:`~neardup.simclr.rundir.resume_config`).

    Raises:
        UsageError: bad settings or inputs; NonFiniteLoss when the loss diverges.
    """
    cfg.validate()
    info = dist.init(cfg.device)
    with ExitStack() as stack:
        cfg, state = open_run_on_all_ranks(stack, cfg, given, "finetune", info)
        return fit(cfg, ContrastiveTask(cfg), info, state, run_settings(cfg), show_progress)


#: FinetuneConfig is re-exported: ``finetune(FinetuneConfig(...))`` is this module's public entry.
__all__ = ["ContrastiveTask", "FinetuneConfig", "FinetuneReport", "NonFiniteLoss", "finetune"]
