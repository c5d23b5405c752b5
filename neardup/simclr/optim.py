"""Optimizer parameter groups, LARS / AdamW, and the per-iteration warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch

import neardup._compat  # noqa: F401
from neardup.errors import UsageError


def split_decay(module: torch.nn.Module) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(decayed, not decayed): BatchNorm/LayerNorm weights and every bias get no weight decay.

    With lightly's LARS, a group with weight_decay=0 is also excluded from the
    layer-wise trust-ratio adaptation, as SimCLR does for BN and bias.
    """
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)
    no_decay_ids: set[int] = set()
    for m in module.modules():
        if isinstance(m, norm_types):
            no_decay_ids.update(id(p) for p in m.parameters(recurse=False))
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if id(p) in no_decay_ids or name.endswith("bias") or p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """SimCLR's scaling: linear (lr x B/256) or sqrt (lr x sqrt(B)); 'none' keeps base_lr."""
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return base_lr
    raise UsageError(f"unknown lr scaling {rule!r}; use linear, sqrt or none")


def build_optimizer(encoder: torch.nn.Module, head: torch.nn.Module, name: str, lr_encoder: float, lr_head: float,
                    weight_decay: float, momentum: float = 0.9, loss: torch.nn.Module | None = None,
                    lr_loss: float | None = None) -> torch.optim.Optimizer:
    """LARS (lightly), AdamW or Adam, with encoder, head and loss parameters at their own learning rates.

    ``loss``: a criterion with parameters (class proxies, centres: ProxyAnchor, SoftTriple, ArcFace), trained
    at ``lr_loss`` (default: ``lr_head``); proxy losses usually want a far larger rate than the encoder.
    """
    groups = []
    parts = [(encoder, lr_encoder), (head, lr_head)]
    if loss is not None:
        parts.append((loss, lr_head if lr_loss is None else lr_loss))
    for mod, lr in parts:
        decay, no_decay = split_decay(mod)
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "base_lr": lr})
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "base_lr": lr})
    groups = [g for g in groups if g["params"]]
    if name == "lars":
        from lightly.utils.lars import LARS

        return LARS(groups, lr=lr_encoder, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr_encoder, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr_encoder)
    raise UsageError(f"unknown optimizer {name!r}; use lars, adamw or adam")


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay (lightly's CosineWarmupScheduler), stepped once per iteration.

    Optimizer step ``k`` (0-based) runs at the schedule's value ``k``, so the run's steps are 0 .. total-1.
    lightly's schedule reaches its floor (0) at its last index, ``max_epochs - 1``: given ``total_steps``
    it would run the final step at lr 0, a wasted step. With ``total_steps + 1`` the floor falls just after
    the last step, and every step trains.
    """
    from lightly.utils.scheduler import CosineWarmupScheduler

    return CosineWarmupScheduler(optimizer, warmup_epochs=warmup_steps,
                                 max_epochs=max(total_steps, warmup_steps) + 1, end_value=0.0)
