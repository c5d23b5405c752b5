"""What the scale benchmarks print beside their timings: peak memory, CPU seconds, the machine's load."""

from __future__ import annotations

import os
import resource


def peak_gb() -> float:
    """Peak resident memory of this process in GB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def cpu_s() -> float:
    """CPU seconds of this process (all threads): with the wall time, how much of the machine it had."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_avg() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
