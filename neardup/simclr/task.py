"""The pluggable part of training: what a kind of training supplies to the engine (:mod:`neardup.simclr.engine`).

SimCLR's is :class:`neardup.simclr.train.ContrastiveTask`; labelled metric learning's (``neardup train``) is
:class:`neardup.metric.train.MetricTask`, with its own loader (m images per class), head, loss and exported model.
A task also says what its product is (:meth:`Task.feature_network`, :meth:`Task.export`): SimCLR keeps only the
encoder (:class:`EncoderOnly`), metric learning keeps the encoder with its embedding head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from neardup.errors import UsageError

if TYPE_CHECKING:
    from neardup.extract.registry import ModelCfg

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
        """The criterion; its parameters (if any: class proxies...) are trained at the run's ``loss_lr`` (else
        ``head_lr``) and checkpointed.

        ``distributed``: it must use the other ranks' embeddings (NT-Xent: ``gather_distributed``;
        pytorch-metric-learning: ``DistributedLossWrapper``). The engine averages the gradients of the loss's own
        parameters over the ranks, as DDP does the model's, so they stay identical on every rank.
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

    def feature_network(self, model: torch.nn.Module, mcfg: ModelCfg) -> tuple[torch.nn.Module, ModelCfg]:
        """The network whose (B, D) outputs are the trained features, and its config: what validation scores.

        ``model`` is the run's :class:`~neardup.simclr.model.EncoderWithHead`; ``mcfg`` its encoder's config.
        """
        ...

    def export(self, path: Path, model: torch.nn.Module, mcfg: ModelCfg, extra: dict[str, Any]) -> None:
        """Write the trained feature network to ``path`` (best.pt, last.pt, encoders/), atomically, in a format
        a model registry entry loads (``--model finetuned`` / ``--model trained``)."""
        ...


class Scores(Protocol):
    """A validation result: what the log, the history and best.pt record, and how epochs are ranked.

    ``rank_keys``: keys of :meth:`to_dict` compared in order, larger is better; the epoch that ranks first is
    exported as best.pt (retrieval: recall@1 then µAP; class retrieval: precision@1 then MAP@R).
    """

    rank_keys: ClassVar[tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]: ...

    def prefixed(self, prefix: str = "val_") -> dict[str, Any]: ...


class Evaluator(Protocol):
    """A fixed validation set: ``evaluate`` extracts it with the current feature network and scores it."""

    def evaluate(self, network: torch.nn.Module, cfg: ModelCfg) -> Scores: ...


class EncoderOnly:
    """The product of self-supervised training is the encoder alone (SimCLR drops its projection head):
    validation scores the encoder's features and the exports hold the encoder (``neardup.finetuned/1``)."""

    def feature_network(self, model: torch.nn.Module, mcfg: ModelCfg) -> tuple[torch.nn.Module, ModelCfg]:
        return model.encoder, mcfg  # type: ignore[return-value]

    def export(self, path: Path, model: torch.nn.Module, mcfg: ModelCfg, extra: dict[str, Any]) -> None:
        from neardup.simclr.model import export_encoder

        export_encoder(path, model.encoder, mcfg, extra)  # type: ignore[arg-type]


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
