"""The fine-tuning loop: one process on a laptop CPU or many under torchrun (DDP).

Nothing is lost on a crash: each epoch ends with an atomic checkpoint
(encoder, head, optimizer, scheduler, AMP scaler, RNG states, epoch, step) and
``--resume`` continues exactly. A NaN/inf loss stops the run with a clear
message and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import io
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from neardup import dist
from neardup.data.generate import load_attack_config
from neardup.errors import UsageError
from neardup.extract.pipeline import collect_inputs, default_workers
from neardup.io_utils import atomic_write, atomic_write_json
from neardup.progress import progress
from neardup.simclr.loss import ContrastiveObjective
from neardup.simclr.model import SimCLRModel, export_encoder, freeze_batchnorm, freeze_stages, load_encoder
from neardup.simclr.optim import build_optimizer, build_scheduler, scaled_lr
from neardup.simclr.views import TwoViewDataset, ViewConfig, ViewMaker

CHECKPOINT = "checkpoint.pt"


class NonFiniteLoss(UsageError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass
class FinetuneConfig:
    """Every knob of a run (CLI flags / YAML keys map 1:1). Defaults: the small-batch CPU recipe."""

    images: str
    out: str
    model: str = "efficientnet_lite0"
    weights: str | None = None
    epochs: int = 30
    batch_size: int = 32  # per process
    image_size: int = 160
    optimizer: str = "adamw"  # lars for large-batch GPU runs
    lr: float = 1e-4  # encoder learning rate before scaling
    head_lr: float = 1e-3
    lr_scaling: str = "none"  # none | linear (x B/256) | sqrt (x sqrt(B)); applied to both lrs
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    temperature: float = 0.1
    koleo: float = 0.0
    head_layers: int = 2
    proj_dim: int = 128
    freeze_bn: bool = True
    freeze_stages: int = 3  # stem + this many stages get no gradient (0 = train everything)
    sync_bn: bool = False
    attacks: str = "default"
    attack_prob: float = 0.5
    jitter: float = 0.5
    min_scale: float = 0.5
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 on GPU, off on CPU
    channels_last: bool = True  # 2x faster training on CPU too (depthwise convs)
    accumulate: int = 1
    val_queries: str | None = None  # an attacked folder with manifest.csv
    val_database: str | None = None  # the originals of those queries
    val_distractors: list[str] = field(default_factory=list)
    val_every: int = 1
    val_max_queries: int = 0  # 0 = all
    keep_encoders: bool = True  # export the encoder at each validated epoch (for evaluate-finetuning)
    resume: bool = False
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit); for smoke tests

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise UsageError("--epochs must be >= 1 and --batch-size >= 2 (NT-Xent needs negatives)")
        if not 0 < self.temperature <= 10:
            raise UsageError("--temperature must be in (0, 10]")
        if self.accumulate < 1:
            raise UsageError("--accumulate must be >= 1")
        if not 0 <= self.attack_prob <= 1:
            raise UsageError("--attack-prob must be in [0, 1]")
        if bool(self.val_queries) != bool(self.val_database):
            raise UsageError("validation needs both --val-queries and --val-database")


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], s["numpy_has_gauss"],
                         s["numpy_gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


@dataclass
class FinetuneReport:
    out: str
    epochs_run: int
    steps: int
    best_epoch: int | None
    best: dict[str, float] | None
    history: list[dict[str, Any]]
    seconds: float


class JsonlLogger:
    """log.jsonl (always) + TensorBoard (when installed), main process only."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.path = out / "log.jsonl"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self.tb = None

    def log(self, record: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def finetune(cfg: FinetuneConfig, show_progress: bool = True) -> FinetuneReport:
    """Fine-tune ``cfg.model`` with NT-Xent on attack views of the images in ``cfg.images``.

    Raises:
        UsageError: bad settings or inputs; NonFiniteLoss when the loss diverges.
    """
    cfg.validate()
    t_start = time.perf_counter()
    info = dist.init(cfg.device)
    from neardup.extract.base import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", torch.cuda.current_device())
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt_path.exists() and not cfg.resume:
            raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        if cfg.resume and not ckpt_path.exists():
            raise UsageError(f"--resume: no {CHECKPOINT} in {out}")
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    dist.barrier()

    torch.manual_seed(cfg.seed)
    encoder, mcfg = load_encoder(cfg.model, cfg.weights)
    freeze_stages(encoder, cfg.freeze_stages)
    model = SimCLRModel(encoder, mcfg.num_features, cfg.proj_dim, cfg.head_layers)
    if cfg.sync_bn and info.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = cfg.channels_last
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if device.type == "cuda" else "off")
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, "bad")
    if amp_dtype == "bad":
        raise UsageError(f"unknown --amp {cfg.amp!r}; use auto, off, bf16 or fp16")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    paths, _, _ = collect_inputs(cfg.images)
    attacks = load_attack_config(cfg.attacks) if cfg.attack_prob > 0 else []
    views = ViewConfig(image_size=cfg.image_size, attack_prob=cfg.attack_prob, jitter=cfg.jitter, min_scale=cfg.min_scale)
    ds = TwoViewDataset(paths, ViewMaker(views, attacks, mcfg.mean, mcfg.std), cfg.seed)
    global_batch = cfg.batch_size * info.world_size
    if len(ds) < global_batch:
        raise UsageError(f"{len(ds)} readable images but a global batch of {global_batch}: lower --batch-size")
    sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    workers = default_workers() if cfg.workers is None else cfg.workers
    loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    steps_per_epoch = len(loader) // cfg.accumulate
    if steps_per_epoch < 1:
        raise UsageError("fewer batches than --accumulate: lower --accumulate or --batch-size")
    total_steps = steps_per_epoch * cfg.epochs

    lr_enc = scaled_lr(cfg.lr, global_batch * cfg.accumulate, cfg.lr_scaling)
    lr_head = scaled_lr(cfg.head_lr, global_batch * cfg.accumulate, cfg.lr_scaling)
    optimizer = build_optimizer(model.encoder, model.head, cfg.optimizer, lr_enc, lr_head, cfg.weight_decay,
                                cfg.momentum)
    scheduler = build_scheduler(optimizer, round(cfg.warmup_epochs * steps_per_epoch), total_steps)
    objective = ContrastiveObjective(cfg.temperature, cfg.koleo, gather_distributed=info.enabled)
    ddp_model: torch.nn.Module = model
    if info.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    start_epoch, step, best, best_epoch, history = 0, 0, None, None, []
    if cfg.resume:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.encoder.load_state_dict(state["encoder"])
        model.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch, step = int(state["epoch"]) + 1, int(state["step"])
        best, best_epoch = state.get("best") or None, state.get("best_epoch")
        history = json.loads(state.get("history", "[]"))
    logger = JsonlLogger(out, info.is_main)
    validator = None
    if cfg.val_queries and info.is_main:
        from neardup.simclr.validate import Validator

        validator = Validator(cfg.val_queries, cfg.val_database, cfg.val_distractors, cfg.val_max_queries, cfg.seed)
        if start_epoch == 0:
            before = validator.evaluate(model.encoder, mcfg)
            logger.log({"epoch": -1, "step": 0, **{f"val_{k}": v for k, v in before.items()}}, 0)
            history.append({"epoch": -1, **before})

    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            ddp_model.train()
            if cfg.freeze_bn:
                freeze_batchnorm(model.encoder)
            t_epoch, n_imgs, losses = time.perf_counter(), 0, []
            t_step, n_step = t_epoch, 0
            bar = progress(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                           disable=not (show_progress and info.is_main))
            optimizer.zero_grad(set_to_none=True)
            for i, (x0, x1) in enumerate(loader):
                if i >= steps_per_epoch * cfg.accumulate:
                    break
                x = torch.cat([x0, x1]).to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    h, z = ddp_model(x)
                    b = x0.shape[0]
                    loss, parts = objective(z[:b], z[b:], h[:b], h[b:])
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; stopped. "
                                        f"The last good checkpoint is {ckpt_path if ckpt_path.exists() else 'none yet'}; "
                                        f"lower --lr or use --amp off")
                scaler.scale(loss / cfg.accumulate).backward()
                n_imgs += 2 * b * info.world_size
                n_step += 2 * b * info.world_size
                losses.append(float(loss.detach()))
                if (i + 1) % cfg.accumulate:
                    continue
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                lr_now = optimizer.param_groups[0]["lr"]
                now = time.perf_counter()
                logger.log({"epoch": epoch, "step": step, "loss": losses[-1], "lr": lr_now, **parts,
                            "images_per_s": n_step / (now - t_step), "elapsed": now - t_epoch}, step)
                t_step, n_step = now, 0
                bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr_now:.2e}")
                bar.update(1)
                if cfg.max_steps and step >= cfg.max_steps:
                    break
            bar.close()
            secs = time.perf_counter() - t_epoch
            record: dict[str, Any] = {"epoch": epoch, "step": step, "epoch_loss": float(np.mean(losses)),
                                      "images_per_s": n_imgs / secs, "epoch_seconds": secs}
            validate_now = validator is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
            if validate_now:
                scores = validator.evaluate(model.encoder, mcfg)
                record.update({f"val_{k}": v for k, v in scores.items()})
                history.append({"epoch": epoch, **scores})
                if cfg.keep_encoders:
                    export_encoder(out / "encoders" / f"epoch_{epoch + 1:03d}.pt", model.encoder, mcfg, {"epoch": epoch + 1})
                if best is None or (scores["recall@1"], scores["muAP"]) > (best["recall@1"], best["muAP"]):
                    best, best_epoch = scores, epoch + 1
                    export_encoder(out / "best.pt", model.encoder, mcfg, {"epoch": epoch + 1, **scores})
            dist.barrier()  # validation is rank-0 only and uses no collectives: the others wait here
            if info.is_main:
                logger.log(record, step)
                export_encoder(out / "last.pt", model.encoder, mcfg, {"epoch": epoch + 1})
                if validator is None:  # no validation set: the last epoch is the best we know
                    export_encoder(out / "best.pt", model.encoder, mcfg, {"epoch": epoch + 1})
                _save_checkpoint(ckpt_path, {
                    "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "rng": _rng_state(), "epoch": epoch, "step": step,
                    "best": best or {}, "best_epoch": best_epoch, "history": json.dumps(history),
                    "config": json.dumps(asdict(cfg))})
            dist.barrier()
            if cfg.max_steps and step >= cfg.max_steps:
                break
    finally:
        logger.close()
    report = FinetuneReport(str(out), epoch + 1 - start_epoch, step, best_epoch, best, history,
                            time.perf_counter() - t_start)
    if info.is_main:
        atomic_write_json(out / "summary.json", asdict(report))
    return report


__all__ = ["FinetuneConfig", "FinetuneReport", "NonFiniteLoss", "finetune"]
