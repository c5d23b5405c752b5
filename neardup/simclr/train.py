"""The fine-tuning loop: one process on a laptop CPU or many under torchrun (DDP).

Nothing is lost on a crash: each epoch ends with an atomic checkpoint
(encoder, head, optimizer, scheduler, AMP scaler, RNG states, epoch, step) and
``--resume`` continues exactly. A NaN/inf loss stops the run with a clear
message and leaves the last good checkpoint untouched.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import shutil
import time
from contextlib import ExitStack
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
from neardup.io_utils import atomic_write, atomic_write_json, atomic_write_text
from neardup.outdir import claim_out_dir, owner
from neardup.progress import progress
from neardup.simclr.loss import ContrastiveObjective
from neardup.simclr.model import SimCLRModel, export_encoder, freeze_batchnorm, freeze_stages, load_encoder
from neardup.simclr.optim import build_optimizer, build_scheduler, scaled_lr
from neardup.simclr.views import TwoViewDataset, ViewConfig, ViewMaker

CHECKPOINT = "checkpoint.pt"


class NonFiniteLoss(UsageError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric option: [lo, hi], either end open or unbounded (None)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"


def _opt(default: Any = dataclasses.MISSING, lo: float | None = None, hi: float | None = None, *,
         lo_open: bool = False, hi_open: bool = False, choices: tuple[Any, ...] | None = None,
         resume_safe: bool = False, why: str = "", default_factory: Any = dataclasses.MISSING) -> Any:
    """A FinetuneConfig field with its allowed values: the one place both validate() and the CLI read them.

    ``resume_safe``: the option may differ on --resume, because it does not change the trained weights.
    """
    meta: dict[str, Any] = {"resume_safe": resume_safe, "why": why}
    if lo is not None or hi is not None:
        meta["range"] = Range(lo, hi, lo_open, hi_open)
    if choices is not None:
        meta["choices"] = choices
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class FinetuneConfig:
    """Every knob of a run (CLI flags / YAML keys map 1:1). Defaults: the small-batch CPU recipe.

    Each field's allowed values live in its metadata (``range``, ``choices``) and are checked by
    :meth:`validate`; the CLI builds its option types from the same metadata.
    """

    images: str
    out: str
    model: str = "efficientnet_lite0"
    weights: str | None = None
    epochs: int = _opt(30, 1)
    batch_size: int = _opt(32, 2, why="NT-Xent needs negatives")  # per process
    image_size: int = _opt(160, 32, 2048)
    optimizer: str = _opt("adamw", choices=("adamw", "lars", "adam"))  # lars for large-batch GPU runs
    lr: float = _opt(1e-4, 0, lo_open=True)  # encoder learning rate before scaling
    head_lr: float = _opt(1e-3, 0, lo_open=True)
    lr_scaling: str = _opt("none", choices=("none", "linear", "sqrt"))  # linear (x B/256), sqrt (x sqrt(B))
    weight_decay: float = _opt(1e-4, 0)
    momentum: float = _opt(0.9, 0, 1, hi_open=True)
    warmup_epochs: float = _opt(1.0, 0)
    temperature: float = _opt(0.1, 0, 10, lo_open=True)
    koleo: float = _opt(0.0, 0)
    head_layers: int = _opt(2, 2, 3)
    proj_dim: int = _opt(128, 1, 65536)
    freeze_bn: bool = True
    freeze_stages: int = _opt(3, 0)  # stem + this many stages get no gradient (0 = train everything)
    sync_bn: bool = False
    attacks: str = "default"
    attack_prob: float = _opt(0.5, 0, 1)
    jitter: float = _opt(0.5, 0, 2.5)  # colour-jitter strength; hue jitter is 0.2 x this and must stay <= 0.5
    min_scale: float = _opt(0.5, 0, 1, lo_open=True)
    seed: int = _opt(0, 0, 2**32 - 1)
    workers: int | None = _opt(None, 0, 256, resume_safe=True)
    device: str = _opt("auto", resume_safe=True)
    amp: str = _opt("auto", choices=("auto", "off", "bf16", "fp16"))  # auto: bf16 on GPU, off on CPU
    channels_last: bool = _opt(True, resume_safe=True)  # 2x faster training on CPU too (depthwise convs)
    accumulate: int = _opt(1, 1)
    val_queries: str | None = None  # an attacked folder with manifest.csv
    val_database: str | None = None  # the originals of those queries
    val_distractors: list[str] = _opt(default_factory=list)
    val_every: int = _opt(1, 1, resume_safe=True)
    val_max_queries: int = _opt(0, 0)  # 0 = all
    keep_encoders: bool = _opt(True, resume_safe=True)  # export the encoder at each validated epoch
    resume: bool = _opt(False, resume_safe=True)
    overwrite: bool = _opt(False, resume_safe=True)  # replace the run in --out (its own files only)
    max_steps: int = _opt(0, 0, resume_safe=True)  # stop after this many optimizer steps (0 = no limit)

    def __post_init__(self) -> None:
        # paths may be given as Path objects; the run records them as text (config.yaml, checkpoint)
        for name in ("images", "out", "weights", "attacks", "val_queries", "val_database"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if isinstance(self.val_distractors, (list, tuple)):
            self.val_distractors = [os.fspath(d) if isinstance(d, os.PathLike) else d for d in self.val_distractors]

    def validate(self) -> None:
        """Refuse any value out of its field's range or choices (nan/inf included), with one line."""
        types = field_types()
        for f in dataclasses.fields(self):
            _check_field(f, types[f.name], getattr(self, f.name))
        if bool(self.val_queries) != bool(self.val_database):
            raise UsageError("validation needs both --val-queries and --val-database")
        if self.resume and self.overwrite:
            raise UsageError("--resume continues the run in --out and --overwrite replaces it: give one of them")


def flag(name: str) -> str:
    """The CLI flag of a FinetuneConfig field."""
    return "IMAGES" if name == "images" else "--" + name.replace("_", "-")


def field_types() -> dict[str, Any]:
    """Each field's base type (int, float, bool, str or list), Optional unwrapped."""
    import typing

    out = {}
    for name, hint in typing.get_type_hints(FinetuneConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is list:
            out[name] = list
        else:
            out[name] = args[0] if args else hint
    return out


def _check_field(f: dataclasses.Field, base: Any, value: Any) -> None:
    name = flag(f.name)
    optional = f.default is None
    if value is None and optional:
        return
    meta = f.metadata
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif base is list:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UsageError(f"{name} must be {'a ' + base.__name__ if base is not list else 'a list of paths'}, "
                         f"got {value!r}")
    if base is float and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    why = f" ({meta['why']})" if meta.get("why") else ""
    if "range" in meta and value not in meta["range"]:
        raise UsageError(f"{name} must be in {meta['range']}, got {value}{why}")
    if "choices" in meta and value not in meta["choices"]:
        raise UsageError(f"{name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")


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


#: Everything a run writes in --out (removed by --overwrite, and only these).
OWNED = (CHECKPOINT, "config.yaml", "config.json", "log.jsonl", "summary.json", "best.pt", "last.pt", "encoders",
         "tensorboard", "evaluation")
#: What a checkpoint must hold to be resumed from.
CHECKPOINT_KEYS = ("encoder", "head", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "config")
#: Fields never compared on --resume: where the run is, and how this invocation treats it.
_NOT_COMPARED = ("out", "resume", "overwrite")


def _is_legacy_run(out: Path) -> bool:
    """A run folder written before output markers existed: a checkpoint beside config.json."""
    return (out / CHECKPOINT).is_file() and (out / "config.json").is_file()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A run's checkpoint.pt, read with ``weights_only=True``; damaged or foreign files give one UsageError line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--resume: no {CHECKPOINT} in {path.parent} (the run stopped before its first epoch "
                         f"ended: start it again without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip: RuntimeError; foreign pickle: UnpicklingError; garbage: EOFError...
        if "Weights only load failed" in str(exc):
            why = "it holds Python objects other than tensors, which weights_only=True refuses"
        else:
            why = _short(exc).split(". ")[0]
        raise UsageError(f"cannot read the checkpoint {path}: damaged, truncated or not a neardup checkpoint "
                         f"({why})") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} is not a neardup finetune checkpoint (it holds a {type(state).__name__})")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise UsageError(f"{path} is not a neardup finetune checkpoint (it lacks {', '.join(missing)})")
    try:
        config = json.loads(state["config"])
        history = json.loads(state.get("history", "[]"))
        epoch, step = int(state["epoch"]), int(state["step"])
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: damaged run record in the checkpoint ({_short(exc)})") from None
    if not isinstance(config, dict) or not isinstance(history, list) or epoch < 0 or step < 0:
        raise UsageError(f"{path}: damaged run record in the checkpoint (config, history, epoch or step)")
    return {**state, "config": config, "history": history, "epoch": epoch, "step": step}


def _same_path(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _same(name: str, old: Any, new: Any) -> bool:
    if name in ("images", "weights", "val_queries", "val_database"):
        return _same_path(old, new)
    if name == "val_distractors":
        old, new = list(old or []), list(new or [])
        return len(old) == len(new) and all(_same_path(a, b) for a, b in zip(old, new, strict=True))
    return old == new


def resume_config(cfg: FinetuneConfig, recorded: dict[str, Any], given: set[str] | frozenset[str] | None = None,
                  source: str = CHECKPOINT) -> FinetuneConfig:
    """The config to resume with: ``cfg``, with the options not in ``given`` taken from the run's ``recorded`` config.

    ``given=None`` means every option was given (library callers). Options that change the trained weights must
    equal the recorded ones; only the ``resume_safe`` ones (workers, device, channels_last, val_every,
    keep_encoders, max_steps) may differ.

    Raises:
        UsageError: listing every changed option, old -> new.
    """
    values = {}
    changed = []
    for f in dataclasses.fields(FinetuneConfig):
        new = getattr(cfg, f.name)
        if f.name in _NOT_COMPARED or f.name not in recorded:
            values[f.name] = new
            continue
        old = recorded[f.name]
        if given is not None and f.name not in given:
            values[f.name] = old
        else:
            values[f.name] = new
            if not f.metadata.get("resume_safe") and not _same(f.name, old, new):
                changed.append(f"{flag(f.name)} {old!r} -> {new!r}")
    if changed:
        raise UsageError(f"--resume: options that would change the result differ from the run's ({source}): "
                         f"{', '.join(changed)}; resume with the run's values (or leave them out), or start a new "
                         f"run in another --out")
    out = FinetuneConfig(**values)
    out.validate()
    return out


def _trim_log(path: Path, last_epoch: int) -> None:
    """Drop log records of epochs after ``last_epoch`` (a killed epoch that resume runs again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if isinstance(record, dict) and int(record.get("epoch", -1)) <= last_epoch:
            keep.append(line)
    atomic_write_text(path, "".join(f"{x}\n" for x in keep))


def run_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    """The run's settings as recorded in config.yaml and the checkpoint: all but how this invocation treats --out
    (resume, overwrite), so a saved config.yaml fed back with --config never carries them over."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("resume", "overwrite")}


def _remove(out: Path, names: tuple[str, ...]) -> None:
    """Remove these entries of ``out`` (files or folders); called with the folder's lock held."""
    for name in names:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _write_config(out: Path, cfg: FinetuneConfig) -> None:
    """config.yaml, once per run, in the layout every command writes (``--config`` reads it back)."""
    import yaml

    from neardup import __version__

    atomic_write_text(out / "config.yaml", yaml.safe_dump(
        {"command": "finetune", "neardup_version": __version__, **run_settings(cfg)}, sort_keys=False))


def _open_run(stack: ExitStack, cfg: FinetuneConfig, given: set[str] | frozenset[str] | None
              ) -> tuple[FinetuneConfig, dict[str, Any] | None]:
    """Main process: claim --out (lock held by ``stack``), check --resume, write config.yaml for a new run."""
    out = Path(cfg.out)
    if cfg.resume:
        if not out.is_dir():
            raise UsageError(f"--resume: {out} does not exist" if not out.exists() else f"--resume: {out} is a file")
        who = owner(out)
        if who != "finetune" and not (who is None and _is_legacy_run(out)):
            held = f" (it holds the output of `neardup {who}`)" if who else ""
            raise UsageError(f"--resume: {out} is not a neardup finetune run folder{held}")
    own = stack.enter_context(claim_out_dir(out, "finetune", overwrite=cfg.overwrite, owned=OWNED,
                                            recognise=_is_legacy_run))
    if not cfg.resume:
        if own and (out / CHECKPOINT).exists():
            raise UsageError(f"--out {out} already holds a finetune run; pass --resume to continue it, --overwrite "
                             f"to replace it, or choose another --out")
        if own:  # a run that stopped before its first checkpoint (e.g. bad input): nothing trained to keep
            _remove(out, OWNED)
        _write_config(out, cfg)
        return cfg, None
    state = load_checkpoint(out / CHECKPOINT)
    cfg = resume_config(cfg, state["config"], given, str(out / CHECKPOINT))
    _trim_log(out / "log.jsonl", state["epoch"])
    return cfg, state


def _restore(state: dict[str, Any], path: Path, model: SimCLRModel, optimizer: Any, scheduler: Any,
             scaler: Any) -> None:
    """Load a checkpoint into the run's objects; a checkpoint of another model or head gives one line."""
    from neardup.extract.weights import load_strict

    for part in ("encoder", "head"):
        if not isinstance(state[part], dict):
            raise UsageError(f"{path}: damaged checkpoint ({part} is not a state dict)")
        load_strict(getattr(model, part), state[part], f"{path} ({part})")
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise UsageError(f"{path}: damaged checkpoint, its optimizer/scheduler/RNG state does not fit this run "
                         f"({_short(exc)})") from None


def finetune(cfg: FinetuneConfig, show_progress: bool = True,
             given: set[str] | frozenset[str] | None = None) -> FinetuneReport:
    """Fine-tune ``cfg.model`` with NT-Xent on attack views of the images in ``cfg.images``.

    ``cfg.out`` follows the output-folder rule (:mod:`neardup.outdir`): a new run needs a new or empty folder
    (or ``overwrite``), ``resume`` needs a finetune run folder, and the main process holds its lock throughout.
    On ``resume`` the options not in ``given`` come from the checkpoint (``None``: all were given) and the
    others must not change the result (see :func:`resume_config`).

    Raises:
        UsageError: bad settings or inputs; NonFiniteLoss when the loss diverges.
    """
    cfg.validate()
    info = dist.init(cfg.device)
    with ExitStack() as stack:
        error, state = None, None
        if info.is_main:
            try:
                cfg, state = _open_run(stack, cfg, given)
            except Exception as exc:  # any failure: the other ranks must not wait for a verdict forever
                error = exc
        # the other ranks wait for the main process' verdict, so a refused folder stops every rank
        message = dist.broadcast_object(None if error is None else (str(error) or type(error).__name__))
        if error is not None:
            raise error
        if message is not None:
            raise UsageError(str(message))
        cfg = dist.broadcast_object(cfg)  # type: ignore[assignment]
        if cfg.resume and state is None:
            state = load_checkpoint(Path(cfg.out) / CHECKPOINT)
        return _train(cfg, info, state, show_progress)


def _train(cfg: FinetuneConfig, info: dist.DistInfo, state: dict[str, Any] | None,
           show_progress: bool) -> FinetuneReport:
    t_start = time.perf_counter()
    from neardup.extract.base import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", torch.cuda.current_device())
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT

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
    amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    paths, _, _ = collect_inputs(cfg.images)
    attacks = load_attack_config(cfg.attacks) if cfg.attack_prob > 0 else []
    views = ViewConfig(image_size=cfg.image_size, attack_prob=cfg.attack_prob, jitter=cfg.jitter,
                       min_scale=cfg.min_scale)
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
    if state is not None:
        _restore(state, ckpt_path, model, optimizer, scheduler, scaler)
        start_epoch, step = state["epoch"] + 1, state["step"]
        best, best_epoch = state.get("best") or None, state.get("best_epoch")
        history = state["history"]
        del state
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
                    last = ckpt_path if ckpt_path.exists() else "none yet"
                    raise NonFiniteLoss(f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; "
                                        f"stopped. The last good checkpoint is {last}; lower --lr or use --amp off")
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
                    export_encoder(out / "encoders" / f"epoch_{epoch + 1:03d}.pt", model.encoder, mcfg,
                                   {"epoch": epoch + 1})
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
                    "config": json.dumps(run_settings(cfg))})
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


__all__ = ["FinetuneConfig", "FinetuneReport", "NonFiniteLoss", "Range", "field_types", "finetune", "load_checkpoint",
           "resume_config"]
