"""Feature post-processing fitted on a sample and stored with the features: L2 and PCA whitening.

Why: PCA whitening of L2-normalised CNN features (then L2 again) down-weights
directions shared by all images and is a standard gain for retrieval
(Jégou & Chum, ECCV 2012); it also shrinks the vectors for search. The raw
shards are never rewritten: the fitted transform is stored as ``transform.npz``
(plain arrays, no pickle) and applied whenever the store is read. Queries must be
transformed the same way: extract them with ``--transform-from DATABASE_DIR``.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.vectors import l2_normalize

FILE = "transform.npz"


@dataclass
class FeatureTransform:
    """x -> [L2] -> [(x - mean) @ components.T / sqrt(eigenvalues) -> L2]."""

    l2: bool
    mean: np.ndarray | None = None  # (D,)
    components: np.ndarray | None = None  # (k, D)
    scale: np.ndarray | None = None  # (k,) 1/sqrt(eigenvalue)

    @property
    def whiten(self) -> bool:
        return self.components is not None

    def out_dim(self, in_dim: int) -> int:
        return int(self.components.shape[0]) if self.components is not None else in_dim

    def apply(self, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
        """Transform in chunks (a memory-mapped input is never copied whole as float64)."""
        outs = []
        for i in range(0, len(x), chunk):
            b = np.asarray(x[i:i + chunk], dtype=np.float32)
            if self.l2:
                b = l2_normalize(b, dtype=None)
            if self.mean is not None and self.components is not None and self.scale is not None:
                b = l2_normalize(((b - self.mean) @ self.components.T) * self.scale, dtype=None)
            outs.append(b.astype(np.float32))
        return np.concatenate(outs) if outs else np.zeros((0, self.out_dim(x.shape[1])), np.float32)

    def save(self, path: str | os.PathLike) -> None:
        from neardup.io_utils import atomic_write

        arrays: dict[str, Any] = {"l2": np.array(self.l2)}
        if self.whiten:
            arrays.update(mean=self.mean, components=self.components, scale=self.scale)
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureTransform:
        """The stored transform; UsageError naming ``path`` if it is not a readable transform file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if "components" in z:
                    tf = cls(bool(z["l2"]), z["mean"], z["components"], z["scale"])
                else:
                    tf = cls(bool(z["l2"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise UsageError(f"damaged feature folder: cannot read the transform {path} "
                             f"({type(exc).__name__}: {exc})") from None
        return tf

    def check(self, in_dim: int, where: str) -> None:
        """UsageError unless the arrays fit ``in_dim``-d features and are finite floats."""
        if self.mean is None or self.components is None or self.scale is None:
            return
        arrays = (self.mean, self.components, self.scale)
        k = self.components.shape[0] if self.components.ndim == 2 else -1
        if (any(a.dtype.kind != "f" for a in arrays) or self.mean.shape != (in_dim,)
                or self.components.shape != (k, in_dim) or self.scale.shape != (k,) or k < 1):
            raise UsageError(f"{where}: the transform does not fit {in_dim}-d features (mean {self.mean.shape}, "
                             f"components {self.components.shape}, scale {self.scale.shape})")
        if not all(np.isfinite(a).all() for a in arrays):
            raise UsageError(f"{where}: the transform holds NaN or infinite values")

    def digest(self) -> str:
        h = hashlib.sha256(str(self.l2).encode())
        for a in (self.mean, self.components, self.scale):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"l2": self.l2, "whiten_dim": int(self.components.shape[0]) if self.components is not None else None,
                "digest": self.digest()}


def fit_transform(sample: np.ndarray, l2: bool = True, whiten_dim: int | None = None,
                  eps: float = 1e-6) -> FeatureTransform:
    """Fit on a (n, D) sample: L2 and, with ``whiten_dim``, PCA whitening to that many dimensions.

    Raises:
        UsageError: a whitening dimension larger than the sample rank allows.
    """
    if whiten_dim is None:
        return FeatureTransform(l2)
    x = np.asarray(sample, dtype=np.float64)
    if l2:
        x = l2_normalize(x, dtype=None)
    n, d = x.shape
    if not 0 < whiten_dim <= min(n - 1, d):
        raise UsageError(f"--whiten {whiten_dim}: needs 0 < dim <= min(sample - 1, features) = {min(n - 1, d)}")
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:whiten_dim]
    return FeatureTransform(l2, mean.astype(np.float32), evecs[:, order].T.astype(np.float32),
                            (1.0 / np.sqrt(evals[order] + eps)).astype(np.float32))


def sample_rows(arrays: list[np.ndarray], n: int, seed: int = 0) -> np.ndarray:
    """A seeded uniform sample of up to ``n`` rows across shard arrays."""
    sizes = [len(a) for a in arrays]
    total = sum(sizes)
    pick = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    offsets = np.cumsum([0] + sizes)
    rows = []
    for i, a in enumerate(arrays):
        sel = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
        if len(sel):
            rows.append(np.asarray(a[sel], dtype=np.float32))
    return np.concatenate(rows)


def load_from(store_dir: str | os.PathLike) -> FeatureTransform:
    path = Path(store_dir) / FILE
    if not path.is_file():
        raise UsageError(f"--transform-from: {store_dir} has no fitted transform ({FILE})")
    return FeatureTransform.load(path)
