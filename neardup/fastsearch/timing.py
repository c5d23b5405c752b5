"""The one timer: warm-up, repeats, per-call timings and the thread count, as in faiss' benchs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def faiss_threads(n: int | None = None) -> int:
    """Set faiss' OpenMP thread count when ``n`` is given; return the count in effect."""
    import faiss

    if n is not None:
        if n < 1:
            raise ValueError("threads must be >= 1")
        faiss.omp_set_num_threads(int(n))
    return int(faiss.omp_get_max_threads())


@dataclass
class Timer:
    """Time a callable: ``warmup`` untimed calls, then ``repeats`` timed ones (best and all kept).

    ``Timer().run(f)`` returns f's last result; ``.best``/``.times`` hold the
    seconds. With ``min_seconds`` the timed calls go on (up to ``max_repeats``)
    until they add up to that long, so sub-millisecond searches are not noise.
    ``Timer.per_call(f, items)`` times each item separately (query latency)
    after ``warmup`` untimed items.
    """

    warmup: int = 0
    repeats: int = 1
    min_seconds: float = 0.0
    max_repeats: int = 100
    times: list[float] = field(default_factory=list)

    def run(self, fn: Callable[[], Any]) -> Any:
        out = None
        for _ in range(self.warmup):
            out = fn()
        self.times = []
        while len(self.times) < max(1, self.repeats) or (
                self.total < self.min_seconds and len(self.times) < self.max_repeats):
            t0 = time.perf_counter()
            out = fn()
            self.times.append(time.perf_counter() - t0)
        return out

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def total(self) -> float:
        return float(sum(self.times))

    def per_call(self, fn: Callable[[Any], Any], items: list[Any] | np.ndarray) -> np.ndarray:
        """Seconds of ``fn(item)`` for each item, after ``warmup`` untimed calls on the first items."""
        for item in list(items[: self.warmup]):
            fn(item)
        out = np.empty(len(items), dtype=np.float64)
        for i, item in enumerate(items):
            t0 = time.perf_counter()
            fn(item)
            out[i] = time.perf_counter() - t0
        self.times = out.tolist()
        return out


def percentiles_ms(seconds: np.ndarray, qs: tuple[float, ...] = (50, 99)) -> dict[str, float]:
    """{"p50": ms, "p99": ms} from real per-call timings (numpy's linear interpolation)."""
    if len(seconds) == 0:
        return {f"p{q:g}": float("nan") for q in qs}
    return {f"p{q:g}": float(np.percentile(seconds, q) * 1e3) for q in qs}
