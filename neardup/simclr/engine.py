"""The training engine: one loop for every way neardup trains an encoder.

A :class:`~neardup.simclr.task.Task` supplies what differs between kinds of training: the data loader,
the head put on the encoder, the loss and the exported feature network (SimCLR's NT-Xent on two views in
:mod:`neardup.simclr.train`; labelled metric learning in :mod:`neardup.metric.train`). The engine supplies
the rest, once:
device, AMP, DDP, gradient accumulation, the warm-up + cosine schedule, NaN stop, JSONL/TensorBoard logs,
validation (retrieval on an attacked set, or a task's own), exports (best.pt, last.pt, encoders/), atomic
checkpoints and exact resume.

Pieces, each usable alone: :func:`build`, :func:`train_one_epoch`, :func:`validate`, :func:`end_epoch`
(exports + :func:`~neardup.simclr.checkpoint.save_checkpoint`) and the thin loop :func:`fit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from neardup import dist
from neardup.errors import UsageError
from neardup.extract.registry import ModelCfg
from neardup.io_utils import atomic_write_json
from neardup.progress import progress as progress_bar
from neardup.simclr.checkpoint import Progress, restore, save_checkpoint
from neardup.simclr.model import EncoderWithHead, freeze_batchnorm, freeze_stages, load_encoder
from neardup.simclr.optim import build_optimizer, build_scheduler, scaled_lr
from neardup.simclr.rundir import CHECKPOINT
from neardup.simclr.runlog import JsonlLogger
from neardup.simclr.task import Evaluator, LoaderSpec, Scores, Task
from neardup.simclr.validate import Validator


class NonFiniteLoss(UsageError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class RunConfig(Protocol):
    """The settings the engine reads (FinetuneConfig and TrainConfig have them all).

    A config may also have ``loss_lr``, the learning rate of the loss's own parameters (class proxies); without
    it (finetune: NT-Xent has none) they train at ``head_lr``.
    """

    out: str
    model: str
    weights: str | None
    epochs: int
    batch_size: int
    seed: int
    optimizer: str
    lr: float
    head_lr: float
    lr_scaling: str
    weight_decay: float
    momentum: float
    warmup_epochs: float
    freeze_bn: bool
    freeze_stages: int
    sync_bn: bool
    workers: int | None
    device: str
    amp: str
    channels_last: bool
    accumulate: int
    val_queries: str | None
    val_database: str | None
    val_distractors: list[str]
    val_every: int
    val_max_queries: int
    keep_encoders: bool
    max_steps: int


@dataclass
class TrainParts:
    """Everything :func:`build` makes for a run."""

    model: EncoderWithHead
    ddp_model: torch.nn.Module  # ``model`` itself unless distributed
    criterion: torch.nn.Module
    mcfg: ModelCfg
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    steps_per_epoch: int
    info: dist.DistInfo


@dataclass
class TrainReport:
    """What a run did; summary.json holds :meth:`to_dict`."""

    out: str
    epochs_run: int
    steps: int
    best_epoch: int | None
    best: dict[str, Any] | None
    history: list[dict[str, Any]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    from neardup.extract.base import amp_dtype, resolve_amp

    return amp_dtype(resolve_amp(amp, device))


def build(cfg: RunConfig, task: Task, info: dist.DistInfo) -> TrainParts:
    """The run's model (encoder + task head), criterion, loader, optimizer, schedule and AMP scaler, on its device.

    Seeded with ``cfg.seed`` first, so a run and its resume start from the same head.
    """
    from neardup.extract.base import resolve_device
    from neardup.extract.pipeline import default_workers

    device = resolve_device(cfg.device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(cfg.seed)
    encoder, mcfg = load_encoder(cfg.model, cfg.weights)
    fit = getattr(cfg, "fit", None)  # finetune's --fit: validation and the exported encoder see images this way
    if fit:
        mcfg = replace(mcfg, fit=fit)
    freeze_stages(encoder, cfg.freeze_stages)
    model = EncoderWithHead(encoder, task.build_head(mcfg.num_features))
    if cfg.sync_bn and info.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    amp_dtype = _amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    loader = task.make_loader(LoaderSpec(
        batch_size=cfg.batch_size, workers=default_workers() if cfg.workers is None else cfg.workers,
        seed=cfg.seed, rank=info.rank, world_size=info.world_size, pin_memory=device.type == "cuda",
        mean=tuple(mcfg.mean), std=tuple(mcfg.std)))
    steps_per_epoch = len(loader) // cfg.accumulate
    if steps_per_epoch < 1:
        raise UsageError("fewer batches than --accumulate: lower --accumulate or --batch-size")

    criterion = task.build_loss(info.enabled).to(device)
    batch = cfg.batch_size * info.world_size * cfg.accumulate
    loss_lr = getattr(cfg, "loss_lr", None)
    optimizer = build_optimizer(model.encoder, model.head, cfg.optimizer, scaled_lr(cfg.lr, batch, cfg.lr_scaling),
                                scaled_lr(cfg.head_lr, batch, cfg.lr_scaling), cfg.weight_decay, cfg.momentum,
                                loss=criterion, lr_loss=None if loss_lr is None else scaled_lr(loss_lr, batch,
                                                                                               cfg.lr_scaling))
    scheduler = build_scheduler(optimizer, round(cfg.warmup_epochs * steps_per_epoch), steps_per_epoch * cfg.epochs)
    ddp_model: torch.nn.Module = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return TrainParts(model, ddp_model, criterion, mcfg, loader, optimizer, scheduler, scaler, device, amp_dtype,
                      cfg.channels_last, steps_per_epoch, info)


@dataclass
class EpochStats:
    """One epoch's training: the step reached, mean loss, throughput."""

    epoch: int
    step: int
    loss: float
    images: int
    seconds: float

    def record(self) -> dict[str, Any]:
        """The epoch's log record (keys of log.jsonl)."""
        return {"epoch": self.epoch, "step": self.step, "epoch_loss": self.loss,
                "images_per_s": self.images / self.seconds, "epoch_seconds": self.seconds}


def train_one_epoch(parts: TrainParts, task: Task, cfg: RunConfig, epoch: int, step: int, logger: JsonlLogger,
                    show_progress: bool = True) -> EpochStats:
    """One pass over the loader from optimizer step ``step``: accumulate, step, schedule, log each step.

    Stops early at ``cfg.max_steps``.

    Raises:
        NonFiniteLoss: the loss became NaN or inf (nothing is written; the last checkpoint stays).
    """
    task.set_epoch(epoch)
    parts.ddp_model.train()
    if cfg.freeze_bn:
        freeze_batchnorm(parts.model.encoder)
    device, world, opt = parts.device, parts.info.world_size, parts.optimizer
    t_epoch, n_imgs, losses = time.perf_counter(), 0, []
    t_step, n_step = t_epoch, 0
    bar = progress_bar(total=parts.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                       disable=not (show_progress and parts.info.is_main))
    opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(parts.loader):
        if i >= parts.steps_per_epoch * cfg.accumulate:
            break
        x = task.inputs(batch).to(device, non_blocking=True)
        if parts.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=parts.amp_dtype or torch.float32, enabled=parts.amp_dtype is not None):
            loss, loss_parts = task.loss(parts.criterion, parts.ddp_model(x), batch)
        if not torch.isfinite(loss):
            ckpt = Path(cfg.out) / CHECKPOINT
            last = ckpt if ckpt.exists() else "none yet"
            raise NonFiniteLoss(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; "
                                f"stopped. The last good checkpoint is {last}; lower --lr or use --amp off")
        parts.scaler.scale(loss / cfg.accumulate).backward()
        n_imgs += x.shape[0] * world
        n_step += x.shape[0] * world
        losses.append(float(loss.detach()))
        if (i + 1) % cfg.accumulate:
            continue
        if parts.info.enabled:  # DDP averages the model's gradients; the loss's own parameters are averaged here
            dist.average_gradients(parts.criterion.parameters())
        lr_now = opt.param_groups[0]["lr"]  # the rate this step runs at (the scheduler then sets the next one's)
        parts.scaler.step(opt)
        parts.scaler.update()
        opt.zero_grad(set_to_none=True)
        parts.scheduler.step()
        step += 1
        now = time.perf_counter()
        logger.log({"epoch": epoch, "step": step, "loss": losses[-1], "lr": lr_now, **loss_parts,
                    "images_per_s": n_step / (now - t_step), "elapsed": now - t_epoch}, step)
        t_step, n_step = now, 0
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr_now:.2e}")
        bar.update(1)
        if cfg.max_steps and step >= cfg.max_steps:
            break
    bar.close()
    return EpochStats(epoch, step, float(np.mean(losses)), n_imgs, time.perf_counter() - t_epoch)


def validate(validator: Evaluator, parts: TrainParts, task: Task) -> Scores:
    """The task's feature network scored on the validation set (main process; no collectives)."""
    network, mcfg = task.feature_network(parts.model, parts.mcfg)
    return validator.evaluate(network, mcfg)


def note_scores(progress: Progress, epoch: int, scores: Scores, parts: TrainParts, task: Task, out: Path,
                keep_encoders: bool) -> None:
    """Record a validated epoch in the history; export its network, and best.pt when it ranks above the best."""
    s = scores.to_dict()
    progress.history.append({"epoch": epoch, **s})
    if keep_encoders:
        task.export(out / "encoders" / f"epoch_{epoch + 1:03d}.pt", parts.model, parts.mcfg, {"epoch": epoch + 1})
    keys = scores.rank_keys
    if progress.best is None or tuple(s[k] for k in keys) > tuple(progress.best[k] for k in keys):
        progress.best, progress.best_epoch = s, epoch + 1
        task.export(out / "best.pt", parts.model, parts.mcfg, {"epoch": epoch + 1, **s})


def end_epoch(parts: TrainParts, task: Task, progress: Progress, record: dict[str, Any], out: Path,
              logger: JsonlLogger, settings: dict[str, Any], validated: bool) -> None:
    """Main process: log the epoch, export last.pt (and best.pt without validation), then the checkpoint."""
    logger.log(record, progress.step)
    task.export(out / "last.pt", parts.model, parts.mcfg, {"epoch": progress.epoch + 1})
    if not validated:  # no validation set: the last epoch is the best we know
        task.export(out / "best.pt", parts.model, parts.mcfg, {"epoch": progress.epoch + 1})
    save_checkpoint(out / CHECKPOINT, parts, progress, settings)


def retrieval_validator(cfg: RunConfig) -> Evaluator | None:
    """recall@1 / µAP on ``--val-queries`` (an attacked folder) against ``--val-database`` (None without them)."""
    if not (cfg.val_queries and cfg.val_database):
        return None
    return Validator(cfg.val_queries, cfg.val_database, cfg.val_distractors, cfg.val_max_queries, cfg.seed)


def fit(cfg: RunConfig, task: Task, info: dist.DistInfo, state: dict[str, Any] | None, settings: dict[str, Any],
        show_progress: bool = True,
        make_validator: Callable[[RunConfig], Evaluator | None] = retrieval_validator) -> TrainReport:
    """Train ``task`` for ``cfg.epochs`` (from ``state``, a loaded checkpoint, when resuming); writes summary.json.

    ``settings`` is the run's config as recorded in each checkpoint. The caller has claimed ``cfg.out``.
    ``make_validator`` builds the validation set on the main process (None: no validation).
    """
    t_start = time.perf_counter()
    out = Path(cfg.out)
    parts = build(cfg, task, info)
    progress = Progress() if state is None else restore(state, out / CHECKPOINT, parts)
    state = None
    start_epoch = progress.epoch + 1
    logger = JsonlLogger(out, info.is_main)
    validator = make_validator(cfg) if info.is_main else None
    try:
        if validator is not None and start_epoch == 0:
            before = validate(validator, parts, task)
            logger.log({"epoch": -1, "step": 0, **before.prefixed()}, 0)
            progress.history.append({"epoch": -1, **before.to_dict()})
        for epoch in range(start_epoch, cfg.epochs):
            stats = train_one_epoch(parts, task, cfg, epoch, progress.step, logger, show_progress)
            progress.epoch, progress.step = epoch, stats.step
            record = stats.record()
            if validator is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                scores = validate(validator, parts, task)
                record.update(scores.prefixed())
                note_scores(progress, epoch, scores, parts, task, out, cfg.keep_encoders)
            dist.barrier()  # validation is rank-0 only and uses no collectives: the others wait here
            if info.is_main:
                end_epoch(parts, task, progress, record, out, logger, settings, validated=validator is not None)
            dist.barrier()
            if cfg.max_steps and progress.step >= cfg.max_steps:
                break
    finally:
        logger.close()
    report = TrainReport(str(out), progress.epoch + 1 - start_epoch, progress.step, progress.best_epoch,
                         progress.best, progress.history, time.perf_counter() - t_start)
    if info.is_main:
        atomic_write_json(out / "summary.json", report.to_dict())
    return report
