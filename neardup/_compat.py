"""Make ``import torchvision`` work when its compiled ops cannot load.

Why: PyPI's torchvision wheel is built against CUDA torch. Installed beside a
CPU-only torch, its ``_C`` extension fails to load, and torchvision's own
``_meta_registrations`` then registers fake kernels for ``torchvision::nms``
and ``torchvision::qnms`` unconditionally, so ``import torchvision`` (and with
it timm and lightly) dies with "operator torchvision::nms does not exist".

What: importing this module (every neardup module that needs torchvision, timm
or lightly imports it first) calls :func:`ensure_torchvision_ops`. Only when
the native extension fails to load does it define the two missing op schemas,
backed by a pure-PyTorch NMS. Where the native ops load, it does nothing.
The other torchvision ops (roi_align, deform_conv2d, ...) stay unavailable on
such an install, exactly as torchvision itself reports; neardup never uses
them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_NMS_SCHEMA = "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_QNMS_SCHEMA = "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_LIB: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops
PATCHED = False


def nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression, same contract as ``torchvision.ops.nms``.

    Args:
        dets: (N, 4) boxes as (x1, y1, x2, y2).
        scores: (N,) box scores.
        iou_threshold: boxes overlapping a kept box by more than this are dropped.

    Returns:
        int64 indices of the kept boxes, by decreasing score.
    """
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=dets.device)
    x1, y1, x2, y2 = dets.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort(descending=True, stable=True)
    suppressed = torch.zeros(dets.shape[0], dtype=torch.bool, device=dets.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(x1[i], x1)
        yy1 = torch.maximum(y1[i], y1)
        xx2 = torch.minimum(x2[i], x2)
        yy2 = torch.minimum(y2[i], y2)
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas - inter)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=dets.device)


def _qnms_unsupported(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    raise NotImplementedError("quantized NMS needs torchvision's compiled ops, which did not load")


def _native_ops_available() -> bool:
    """True when torchvision's ops exist or its compiled extension loads."""
    if hasattr(torch.ops.torchvision, "nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # no torchvision: nothing to patch
    libs = sorted(Path(spec.origin).parent.glob("_C*.so")) + sorted(Path(spec.origin).parent.glob("_C*.pyd"))
    for lib in libs:
        try:
            torch.ops.load_library(str(lib))
        except (OSError, ImportError, RuntimeError):
            continue
        if hasattr(torch.ops.torchvision, "nms"):
            return True
    return False


def ensure_torchvision_ops() -> bool:
    """Register pure-PyTorch fallbacks for torchvision's ops if they can't load.

    Returns:
        True if fallbacks were registered by this call, False if nothing was
        needed (native ops present, torchvision absent, or already patched).
    """
    global _LIB, PATCHED
    if PATCHED or _native_ops_available():
        return False
    if "torchvision" in sys.modules:  # pragma: no cover - import order bug in the caller
        raise RuntimeError("import neardup before torchvision so its missing ops can be registered")
    lib = torch.library.Library("torchvision", "DEF")
    lib.define(_NMS_SCHEMA)
    lib.define(_QNMS_SCHEMA)
    lib.impl("nms", nms_reference, "CompositeExplicitAutograd")
    lib.impl("qnms", _qnms_unsupported, "CompositeExplicitAutograd")
    _LIB = lib
    PATCHED = True
    return True


ensure_torchvision_ops()
