"""A run's checkpoint: everything exact resume needs, written atomically at the end of each epoch.

It holds the encoder, head, optimizer, scheduler, AMP scaler, the global RNG states, the epoch, step, best
scores, history and the run's settings (as JSON text, so ``torch.load(weights_only=True)`` reads it all).
A crash at any moment leaves the previous epoch's checkpoint whole.
"""

from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neardup.errors import UsageError
from neardup.io_utils import atomic_write
from neardup.simclr.rundir import CHECKPOINT

if TYPE_CHECKING:
    from neardup.simclr.engine import TrainParts

#: What a checkpoint must hold to be resumed from.
CHECKPOINT_KEYS = ("encoder", "head", "optimizer", "scheduler", "scaler", "rng", "epoch", "step", "config")


@dataclass
class Progress:
    """Where a run stands besides its weights: last finished epoch (-1: none), optimizer steps, best scores."""

    epoch: int = -1
    step: int = 0
    best: dict[str, Any] | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    """The global python / numpy / torch (and CUDA) generator states, as tensors and plain values."""
    np_state: Any = np.random.get_state()
    py = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(py[1]), "python_version": py[0], "python_gauss": py[2],
             "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((s["python_version"], tuple(s["python"]), s["python_gauss"]))
    np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"], s["numpy_has_gauss"],
                         s["numpy_gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save_checkpoint(path: Path, parts: TrainParts, progress: Progress, settings: dict[str, Any]) -> None:
    """Write the run's state to ``path`` atomically (the old file stays whole until the new one is complete)."""
    state = {"encoder": parts.model.encoder.state_dict(), "head": parts.model.head.state_dict(),
             "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
             "scaler": parts.scaler.state_dict(), "rng": rng_state(), "epoch": progress.epoch, "step": progress.step,
             "best": progress.best or {}, "best_epoch": progress.best_epoch, "history": json.dumps(progress.history),
             "config": json.dumps(settings)}
    criterion = parts.criterion.state_dict()
    if criterion:  # a loss with parameters (class centres...); NT-Xent has none
        state["criterion"] = criterion
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


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


def restore(state: dict[str, Any], path: Path, parts: TrainParts) -> Progress:
    """Load a checkpoint (from :func:`load_checkpoint`) into the run's objects and the global RNGs.

    Raises:
        UsageError: one line, when the checkpoint is of another model or head, or its optimizer, scheduler or
            RNG state does not fit this run.
    """
    from neardup.extract.weights import load_strict

    modules = {"encoder": parts.model.encoder, "head": parts.model.head}
    if state.get("criterion") or parts.criterion.state_dict():
        modules["criterion"] = parts.criterion
    for part, module in modules.items():
        if not isinstance(state.get(part), dict):
            raise UsageError(f"{path}: damaged checkpoint ({part} is not a state dict)")
        load_strict(module, state[part], f"{path} ({part})")
    try:
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise UsageError(f"{path}: damaged checkpoint, its optimizer/scheduler/RNG state does not fit this run "
                         f"({_short(exc)})") from None
    return Progress(epoch=state["epoch"], step=state["step"], best=state.get("best") or None,
                    best_epoch=state.get("best_epoch"), history=state["history"])
