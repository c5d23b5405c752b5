"""Synthetic distractors drawn to match real features, and the streamed database they join.

Float features: a low-rank Gaussian (probabilistic-PCA-like) model,

    x = mean + z @ (sqrt(lambda_r) * V_r)^T + sigma * e,   z, e ~ N(0, I)

with ``V_r`` the top ``rank`` principal directions of the real features,
``lambda_r`` their variances and ``sigma^2`` the mean variance left in the
other ``d - rank`` directions (isotropic residual). Why this choice: it keeps
the first two moments where they matter for search - the mean (which
dominates cosine similarity of post-ReLU features), the few directions most of
the variance lives in (which shape IVF cells and PQ codebooks) and the total
variance (so distractors are neither closer nor farther than real images on
average) - while needing only O(rank x d) parameters and fitting on a few
hundred real vectors. It has no fine cluster structure, so it is a
conservative stand-in for a large photo collection. When the real features are
non-negative (ReLU outputs) samples are clipped at 0 to stay in that domain.

Binary hashes: independent bits with the real per-bit frequencies.

Vectors are generated in fixed blocks seeded by ``(seed, block)``, so any
chunking of the stream yields the same database and 1M x 512-d float32 never
has to exist in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from neardup.errors import UsageError

BLOCK = 1 << 16  # synthetic vectors per generation block


@dataclass
class LowRankGaussian:
    """Fit on real features, then ``sample(block_index)`` blocks of synthetic ones (float32)."""

    rank: int = 64
    seed: int = 0

    def fit(self, x: np.ndarray) -> LowRankGaussian:
        if len(x) < 2:
            raise UsageError("--synthetic needs at least 2 real feature vectors to fit their distribution")
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        xc = x - self.mean_
        cov = xc.T @ xc / (len(x) - 1)
        evals, evecs = np.linalg.eigh(cov)
        evals, evecs = np.clip(evals[::-1], 0, None), evecs[:, ::-1]
        r = int(min(self.rank, len(x) - 1, x.shape[1]))
        self.rank_ = r
        self.basis_ = (evecs[:, :r] * np.sqrt(evals[:r])).T.astype(np.float32)  # (r, d)
        rest = x.shape[1] - r
        self.residual_std_ = float(np.sqrt(evals[r:].sum() / rest)) if rest else 0.0
        self.nonnegative_ = bool(x.min() >= 0)
        self.dim_ = x.shape[1]
        return self

    def sample(self, block: int, n: int = BLOCK) -> np.ndarray:
        rng = np.random.default_rng([self.seed, block])
        z = rng.standard_normal((n, self.rank_), dtype=np.float32)
        out = z @ self.basis_
        out += rng.standard_normal((n, self.dim_), dtype=np.float32) * np.float32(self.residual_std_)
        out += self.mean_.astype(np.float32)
        if self.nonnegative_:
            np.maximum(out, 0, out=out)
        return out


@dataclass
class BitFrequencies:
    """Independent bits with the real per-bit frequencies: synthetic packed hashes (uint8)."""

    seed: int = 0

    def fit(self, x: np.ndarray) -> BitFrequencies:
        self.p_ = np.unpackbits(np.asarray(x, dtype=np.uint8), axis=1).mean(axis=0)
        return self

    def sample(self, block: int, n: int = BLOCK) -> np.ndarray:
        rng = np.random.default_rng([self.seed, block])
        return np.packbits(rng.random((n, len(self.p_)), dtype=np.float32) < self.p_, axis=1)


def fit_generator(x: np.ndarray, rank: int = 64, seed: int = 0) -> LowRankGaussian | BitFrequencies:
    """The synthetic model matching ``x``'s kind (float -> low-rank Gaussian, uint8 bits -> bit frequencies)."""
    return BitFrequencies(seed).fit(x) if x.dtype == np.uint8 else LowRankGaussian(rank, seed).fit(x)


@dataclass
class Database:
    """Real feature arrays (memmaps welcome) and ``n_synthetic`` generated vectors, read in chunks.

    The real vectors are scattered at seeded random positions among the
    synthetic ones (``real_positions``), keeping their relative order: an
    index then never sees the real images as one small early batch, which
    matters for graph indexes (HNSW links early batches poorly to later
    ones, so they would look worse than on a real collection).
    Without synthetic vectors the database is just the real ones, in order.
    """

    parts: list[np.ndarray]
    generator: LowRankGaussian | BitFrequencies | None = None
    n_synthetic: int = 0
    seed: int = 0
    n_real: int = field(init=False)
    real_positions: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.n_real = int(sum(len(p) for p in self.parts))
        if self.n_synthetic and self.generator is None:
            raise ValueError("n_synthetic > 0 needs a generator")
        self._real = self.parts[0] if len(self.parts) == 1 else np.concatenate([np.asarray(p) for p in self.parts])
        if self.n_synthetic:
            rng = np.random.default_rng([self.seed, 1])
            self.real_positions = np.sort(rng.choice(len(self), self.n_real, replace=False))
        else:
            self.real_positions = np.arange(self.n_real)
        self._block: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n_real + self.n_synthetic

    @property
    def width(self) -> int:
        return int(self.parts[0].shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    def _synthetic_rows(self, lo: int, n: int) -> np.ndarray:
        """Synthetic rows lo..lo+n (generated by block; the last block is cached)."""
        assert self.generator is not None
        out = []
        while n > 0:
            b, off = divmod(lo, BLOCK)
            if self._block is None or self._block[0] != b:
                self._block = (b, self.generator.sample(b, min(BLOCK, self.n_synthetic - b * BLOCK)))
            take = self._block[1][off:off + n]
            out.append(take)
            lo, n = lo + len(take), n - len(take)
        return np.concatenate(out) if len(out) != 1 else out[0]

    def chunks(self, size: int = BLOCK) -> Iterator[tuple[int, np.ndarray]]:
        """(offset, block) over the whole database in order; blocks hold at most ``size`` rows."""
        if not self.n_synthetic:
            for lo in range(0, self.n_real, size):
                yield lo, np.asarray(self._real[lo:lo + size])
            return
        size = min(size, BLOCK)
        pos = self.real_positions
        for lo in range(0, len(self), size):
            hi = min(lo + size, len(self))
            a, b = np.searchsorted(pos, [lo, hi])
            is_real = np.zeros(hi - lo, dtype=bool)
            is_real[pos[a:b] - lo] = True
            out = np.empty((hi - lo, self.width), dtype=self.dtype)
            out[is_real] = self._real[a:b]
            out[~is_real] = self._synthetic_rows(lo - a, int((~is_real).sum()))
            yield lo, out

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """A uniform random subset of ``n`` rows (all rows when the database is smaller), in index order."""
        total = len(self)
        if n >= total:
            return np.concatenate([c for _, c in self.chunks()])
        idx = np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
        out = []
        for off, c in self.chunks():
            sel = idx[(idx >= off) & (idx < off + len(c))] - off
            if len(sel):
                out.append(c[sel])
        return np.concatenate(out)
