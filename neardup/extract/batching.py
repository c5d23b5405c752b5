"""Adaptive batch size for GPU extraction: on CUDA out-of-memory, halve the batch and retry.

Big zoo models (SimCLR v2 R152 3x: 795M parameters, EfficientNet-B7 at 600 px) do not
fit a fixed ``--batch-size`` on every GPU. :class:`AdaptiveEncoder` wraps an
extractor's ``encode``: a batch that runs out of memory is split into chunks of half
the size, and the smaller size is kept for later batches. At batch 1 it fails with
a clear message instead of looping.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from neardup.errors import UsageError


class AdaptiveEncoder:
    """``encode(batch)`` with automatic halving on ``torch.OutOfMemoryError``.

    Args:
        encode: the extractor's ``encode`` ((B, ...) tensor -> (B, D) array).
        max_batch: largest chunk tried first (the loader's batch size if None).
        name: model name for the error message.
    """

    def __init__(self, encode: Callable[[torch.Tensor], np.ndarray], max_batch: int | None = None, name: str = "model"):
        self.encode = encode
        self.batch = max_batch
        self.name = name
        self.halvings = 0

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(B, ...) -> (B, D), in chunks of at most ``self.batch`` rows."""
        if self.batch is None:
            self.batch = len(batch)
        out: list[np.ndarray] = []
        i = 0
        while i < len(batch):
            chunk = batch[i:i + self.batch]
            try:
                out.append(self.encode(chunk))
            except torch.OutOfMemoryError:
                _free_cuda()
                if self.batch <= 1:
                    raise UsageError(f"{self.name} runs out of GPU memory even at batch size 1; use a smaller "
                                     f"--input-size, --amp fp16/bf16, a larger GPU or --device cpu") from None
                self.batch = max(1, self.batch // 2)
                self.halvings += 1
                continue
            i += len(chunk)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_adaptive(extractor: Any, batch_size: int | None = None) -> AdaptiveEncoder:
    """Wrap ``extractor.encode`` (kept on the extractor as ``encode_adaptive``)."""
    enc = AdaptiveEncoder(extractor.encode, batch_size, extractor.name)
    extractor.encode_adaptive = enc
    return enc
