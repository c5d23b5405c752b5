"""The pluggable part of training: what a kind of training supplies to the engine (:mod:`neardup.simclr.engine`).

SimCLR's is :class:`neardup.simclr.train.ContrastiveTask`; a labelled metric-learning task (the coming
``neardup train``) supplies its own loader (e.g. m images per class), head and loss, and reuses the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from neardup.errors import UsageError

#: (h, z): the encoder's features (B, D) and the head's embeddings (B, P).
ModelOutput = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LoaderSpec:
    """What a task's loader must follow: per-process batch, workers, seed, this rank, the encoder's normalisation."""

    batch_size: int
    workers: int
    seed: int
    rank: int
    world_size: int
    pin_memory: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Task(Protocol):
    """The pluggable part of training: data, head and loss. Everything else is the engine's."""

    def build_head(self, num_features: int) -> torch.nn.Module:
        """The head on the encoder's (B, num_features) features; built under the run's seed."""
        ...

    def build_loss(self, distributed: bool) -> torch.nn.Module:
        """The criterion; its parameters (if any: class proxies...) are trained with the head and checkpointed.

        ``distributed``: it must use the other ranks' embeddings (NT-Xent: ``gather_distributed``;
        pytorch-metric-learning: ``DistributedLossWrapper``, which also keeps a loss's own parameters in sync).
        """
        ...

    def make_loader(self, spec: LoaderSpec) -> DataLoader:
        """This rank's loader (see :func:`distributed_loader`); every batch must be full (drop_last)."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Reseed the epoch's order and augmentations (called before each epoch, on every rank)."""
        ...

    def inputs(self, batch: Any) -> torch.Tensor:
        """The (N, 3, H, W) images of a batch, fed to the encoder in one pass."""
        ...

    def loss(self, criterion: torch.nn.Module, out: ModelOutput, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of a batch and its parts for the log."""
        ...


def distributed_loader(ds: Dataset, spec: LoaderSpec) -> DataLoader:
    """A loader over this rank's share of ``ds``, reshuffled each epoch by ``loader.sampler.set_epoch``.

    Raises:
        UsageError: fewer items than one global batch.
    """
    global_batch, n = spec.batch_size * spec.world_size, len(ds)  # type: ignore[arg-type]
    if n < global_batch:
        raise UsageError(f"{n} readable images but a global batch of {global_batch}: lower --batch-size")
    sampler: DistributedSampler[Any] = DistributedSampler(ds, num_replicas=spec.world_size, rank=spec.rank,
                                                          shuffle=True, seed=spec.seed, drop_last=True)
    return DataLoader(ds, batch_size=spec.batch_size, sampler=sampler, num_workers=spec.workers, drop_last=True,
                      pin_memory=spec.pin_memory, persistent_workers=False)
