"""Safe, strict checkpoint loading.

Every checkpoint is read with ``torch.load(weights_only=True)``: a file that
needs arbitrary unpickling is refused, never executed. A state dict whose keys
or shapes don't match the model fails with the first mismatches listed; a model
never runs with silently missing weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from neardup.errors import UsageError


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load(path, weights_only=True)`` with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read weights {path} safely (weights_only=True): {first}") from None
    if not isinstance(obj, Mapping):
        raise UsageError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj)


def describe_mismatch(model_sd: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], limit: int = 5) -> str:
    """A short list of missing keys, unexpected keys and shape mismatches; '' when they fit."""
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(model_sd[k].shape)}"
              for k in model_sd if k in sd and tuple(sd[k].shape) != tuple(model_sd[k].shape)]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_strict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` into ``model`` only if every key and shape matches.

    Raises:
        UsageError: naming the first mismatches.
    """
    problem = describe_mismatch(model.state_dict(), sd)
    if problem:
        raise UsageError(f"weights {source} do not fit {type(model).__name__}: {problem}")
    model.load_state_dict(sd, strict=True)


def map_in_order(model_sd: Mapping[str, torch.Tensor], src: Mapping[str, torch.Tensor], source: str) -> dict:
    """Rename ``src`` entries onto ``model_sd`` keys position by position, checking every shape.

    For ports whose key names differ but whose parameter order is the same
    (e.g. lukemelas' EfficientNet layout onto timm's).
    """
    if len(model_sd) != len(src):
        raise UsageError(f"weights {source}: {len(src)} tensors, model expects {len(model_sd)}")
    out = {}
    for (k_model, v_model), (k_src, v_src) in zip(model_sd.items(), src.items(), strict=True):
        if tuple(v_model.shape) != tuple(v_src.shape):
            raise UsageError(f"weights {source}: {k_src} {tuple(v_src.shape)} does not fit "
                             f"{k_model} {tuple(v_model.shape)}")
        out[k_model] = v_src
    return out


def hub_cache_dir() -> Path:
    """torch's hub checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where torchvision saves weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_in_hub_cache(filenames: list[str]) -> Path | None:
    d = hub_cache_dir()
    for name in filenames:
        if (d / name).is_file():
            return d / name
    return None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _digest_cache_file() -> Path:
    return Path(os.environ.get("NEARDUP_CACHE", Path.home() / ".cache" / "neardup")) / "weights-sha256.json"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a weights file, streamed; cached by (real path, size, mtime) in memory and in the neardup cache.

    Why: a resumed extraction must use the very same weights, and hashing a multi-GB checkpoint on
    every run would cost seconds. A file rewritten in place gets a new mtime, so a stale digest is never used.
    """
    from neardup.io_utils import atomic_write_json, read_json

    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise UsageError(f"weights file not found: {path}") from None
    key = (real, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    cache_file = _digest_cache_file()
    try:
        cache = read_json(cache_file, "digest cache") if cache_file.is_file() else {}
    except (UsageError, OSError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    hit = cache.get(real)
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(hit.get("sha256"), str):
        _DIGESTS[key] = hit["sha256"]
        return hit["sha256"]
    h = hashlib.sha256()
    with open(real, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    _DIGESTS[key] = digest = h.hexdigest()
    if st.st_size >= 16 << 20:  # only big files are worth a disk cache entry
        cache[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        with contextlib.suppress(OSError):  # a read-only cache: the digest is still right, just not remembered
            atomic_write_json(cache_file, cache)
    return digest
