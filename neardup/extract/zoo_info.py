"""What ``neardup models`` shows beyond the config: parameter counts and whether weights are on this machine.

Everything comes from the registry entries: :func:`build_architecture` calls an
entry's ``arch`` (its network without weights) and :func:`count_params` counts
the parameters its forward uses. On the meta device (the default) nothing is
allocated, so even the 795M-parameter SimCLR v2 R152 3x counts in well under a
second. Benchmarks build the same architectures on the CPU with random weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import neardup._compat  # noqa: F401  (before torchvision/timm)
from neardup.extract.registry import ModelCfg, get_entry, list_models, weights_found_locally

__all__ = ["build_architecture", "count_params", "model_rows", "weights_found_locally"]


def build_architecture(name: str, device: str = "meta") -> nn.Module | None:
    """The feature network of model ``name`` with untrained weights (forward -> (B, num_features)).

    Returns None for models whose entry has no bare architecture (hashes, ``finetuned``).
    """
    entry = get_entry(name)
    if entry.arch is None:
        return None
    with torch.device(device):
        return entry.arch(entry.cfg)


class _ReadParameters(TorchFunctionMode):
    """Records which of ``params`` the torch functions called inside it receive."""

    def __init__(self, params: list[nn.Parameter]):
        super().__init__()
        self.wanted = {id(p) for p in params}
        self.read: set[int] = set()

    def _visit(self, obj: Any) -> None:
        if isinstance(obj, (list, tuple)):
            for o in obj:
                self._visit(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                self._visit(o)
        elif id(obj) in self.wanted:
            self.read.add(id(obj))

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self._visit(args)
        self._visit(kwargs)
        return func(*args, **kwargs)


def count_params(model: nn.Module, input_size: int = 224) -> int:
    """Parameters that one forward of the feature network at ``input_size`` pixels reads, each counted once.

    Why a forward: classifiers kept only so published files load strictly (``fc``), a SimCLR v2
    projection head behind ``layer=backbone`` or Inception's auxiliary head are not part of the
    feature network, and no list of names has to know them. On the meta device the forward costs
    nothing; elsewhere it is one real forward of one image (in eval mode; the modes are restored).
    """
    params = list(model.parameters())
    modes = {m: m.training for m in model.modules()}
    mode = _ReadParameters(params)
    try:
        with torch.no_grad(), mode:
            model.eval()(torch.zeros(1, 3, input_size, input_size, device=params[0].device))
    finally:
        for m, training in modes.items():
            m.training = training
    return sum(p.numel() for p in {id(p): p for p in params if id(p) in mode.read}.values())


def _preprocessing(cfg: ModelCfg) -> str:
    if cfg.kind != "torch":
        return "-"
    norm = "no normalisation" if cfg.mean == (0.0, 0.0, 0.0) and cfg.std == (1.0, 1.0, 1.0) else \
        f"mean {tuple(round(m, 3) for m in cfg.mean)} std {tuple(round(s, 3) for s in cfg.std)}"
    if cfg.fit == "squash":
        return f"squash to {cfg.input_size} {cfg.interpolation}, {norm}"
    return f"resize {cfg.resize_size} {cfg.interpolation}, crop {cfg.input_size}, {norm}"


def model_rows(with_params: bool = True) -> list[dict[str, Any]]:
    """One row per registered model, for ``neardup models``.

    Returns:
        dicts with ``name``, ``dim``, ``params`` (millions, counted on the meta device;
        None where unknown or ``with_params`` is False; 0.0 for hashes),
        ``preprocessing``, ``weights_format``, ``found_locally``.
    """
    rows = []
    for cfg in list_models():
        params: float | None = 0.0 if cfg.kind == "hash" else None
        if with_params and cfg.kind == "torch":
            net = build_architecture(cfg.name)
            params = None if net is None else round(count_params(net, cfg.input_size) / 1e6, 1)
        rows.append({"name": cfg.name, "dim": cfg.num_features, "params": params,
                     "preprocessing": _preprocessing(cfg), "weights_format": cfg.weights_format,
                     "found_locally": weights_found_locally(cfg.name)})
    return rows
