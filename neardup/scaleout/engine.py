"""Ray options and sessions: start an embedded local instance, or join a running cluster.

Why one module: every command that offers ``--ray`` validates the same options here
(:meth:`RayConfig.validate`), imports Ray here and only when asked (``neardup --help`` and every run without
``--ray`` never pay for it), and starts or joins Ray the same way (:func:`ray_session`), so the code that runs on a
laptop is the code that runs on a cluster (``ray.init()`` with no address starts a local instance, with one
joins it).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from neardup.errors import UsageError

#: ``--ray`` with no address: an embedded instance on this machine (what tests and CI use)
LOCAL = "local"
#: the one line a run with ``--ray`` gives when Ray is not installed
INSTALL_HINT = "--ray needs Ray, which is not installed: pip install 'neardup[ray]'"
#: test-only hook (never set it in production): ``N:MARKER`` makes an encode actor exit (os._exit) before its
#: (N+1)-th batch, once per MARKER file (created before it exits); ``N`` alone, in every incarnation
KILL_ENV = "NEARDUP_TEST_KILL_ENCODER"


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


@dataclass
class RayConfig:
    """How to run on Ray; the CLI's ``--ray [ADDRESS]``, ``--ray-cpus`` and ``--ray-actors``.

    Attributes:
        address: ``local`` (start an embedded instance: the default), ``auto`` (join the cluster that ``ray start``
            runs on this node: SLURM, a KubeRay pod), or ``HOST:PORT`` / ``ray://HOST:PORT`` (join that one).
        cpus: CPUs of the local instance (None: all of them); only with ``local``.
        actors: encode actors (extract) and index shards (k-NN graph). None: one encode actor per GPU, or on CPUs
            two thirds of the cores (decoding takes the rest: 3.7 ms against 8 ms per image measured here); index
            shards: half the cores, at least 2.
        retries: how often a dead actor is restarted (and its lost batches retried) before the job fails; finished
            shards are kept either way, and a re-run resumes from them.
    """

    address: str = LOCAL
    cpus: int | None = None
    actors: int | None = None
    retries: int = 3

    def validate(self) -> RayConfig:
        """Raises UsageError naming the flag of the first bad value; returns ``self``."""
        if not isinstance(self.address, str) or not (self.address in (LOCAL, "auto")
                                                     or re.fullmatch(r"(ray://)?[^\s/:]+:\d{1,5}", self.address)):
            raise UsageError(f"--ray takes no value (a local instance), 'auto', or a cluster address HOST:PORT or "
                             f"ray://HOST:PORT, got {self.address!r} (a --ray given just before a path takes it as "
                             f"the address: put --ray after the paths)")
        if self.cpus is not None and not _is_int(self.cpus, 1):
            raise UsageError(f"--ray-cpus must be an integer >= 1, got {self.cpus!r}")
        if self.cpus is not None and self.address != LOCAL:
            raise UsageError(f"--ray-cpus sets the CPUs of a local Ray instance; the cluster at {self.address} "
                             f"has its own (give them to `ray start --num-cpus`)")
        if self.actors is not None and not _is_int(self.actors, 1):
            raise UsageError(f"--ray-actors must be an integer >= 1, got {self.actors!r}")
        if not _is_int(self.retries, 0):
            raise UsageError(f"Ray retries must be an integer >= 0, got {self.retries!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cluster:
    """What the Ray session has: the totals the plans are made from."""

    cpus: int
    gpus: int
    nodes: int
    address: str

    def encode_plan(self, device: str, actors: int | None) -> EncodePlan:
        """Encode actors and their resources for ``device`` (the ``--device`` option: auto, cpu or cuda).

        GPU actors take one GPU each; CPU actors share two thirds of the cores, and decoding always keeps some
        CPU (a pool holding every CPU would starve the decode tasks that feed it).

        Raises:
            UsageError: ``cuda`` on a cluster without GPUs, more GPU actors than GPUs, a numbered GPU (Ray assigns
                them to actors), or a cluster without CPUs.
        """
        device = device or "auto"
        if device.startswith("cuda:"):
            raise UsageError(f"--device {device}: with --ray, Ray gives each encode actor its own GPU; "
                             "use --device cuda or auto")
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda")
        if device == "cuda" and not self.gpus:
            raise UsageError(f"--device cuda requested but the Ray cluster at {self.address} has no GPU")
        if self.cpus < 1:
            raise UsageError(f"the Ray cluster at {self.address} has no CPU to decode images on")
        if device != "cpu" and self.gpus:
            if actors and actors > self.gpus:
                raise UsageError(f"--ray-actors {actors}: the Ray cluster has {self.gpus} GPU(s), one per encode "
                                 f"actor")
            n = actors or self.gpus
            per = min(1.0, max(0.25, (self.cpus - 1) / n))
            return EncodePlan("cuda", n, cpus=per, gpus=1.0, threads=1, decode_cpus=min(1.0, self.cpus - n * per))
        encode_cpus = max(1, round(2 * self.cpus / 3))
        n = actors or encode_cpus
        threads = max(1, encode_cpus // n)
        per = float(threads) if n * threads <= self.cpus - 0.5 else (self.cpus - 0.5) / n
        return EncodePlan("cpu", n, cpus=per, gpus=0.0, threads=threads, decode_cpus=min(1.0, self.cpus - n * per))

    def shards(self, actors: int | None) -> int:
        """Index shards of the k-NN graph: ``actors``, or half the cores (at least 2)."""
        return actors or max(2, self.cpus // 2)


@dataclass(frozen=True)
class EncodePlan:
    """The encode actor pool: ``actors`` actors on ``device``, each reserving ``cpus`` CPUs and ``gpus`` GPUs and
    running ``threads`` torch threads; each decode task reserves ``decode_cpus``."""

    device: str
    actors: int
    cpus: float
    gpus: float
    threads: int
    decode_cpus: float = 1.0

    def describe(self) -> str:
        what = "GPU" if self.gpus else f"CPU, {self.threads} thread{'s' if self.threads > 1 else ''}"
        return f"{self.actors} encode actor{'s' if self.actors > 1 else ''} ({what})"


def require_ray() -> Any:
    """The ``ray`` module, with its Data library; UsageError with the install line when either is missing."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra: a Ray without Data fails here, not mid-run)
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def _quiet(ray: Any) -> None:
    """Ray Data's own progress bars and log lines off: the commands draw one bar of their own, and a failed task
    reaches the user as one ``Error:`` line (the traceback Ray Data would log is in the session's log files)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


@contextmanager
def ray_session(cfg: RayConfig) -> Iterator[Cluster]:
    """Start (``local``) or join (an address) Ray for the duration of the block.

    A Ray already initialised in this process (a notebook, a test fixture, an outer ``dedup`` that extracts) is
    used as it is and left running; one started here is shut down at the end.

    Raises:
        UsageError: Ray missing, or no cluster at the address.
    """
    cfg.validate()
    ray = require_ray()

    started = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.WARNING}
        try:
            if cfg.address == LOCAL:
                ray.init(num_cpus=cfg.cpus, **kw)
            else:
                ray.init(address=cfg.address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "auto (a `ray start` cluster on this node)" if cfg.address == "auto" else cfg.address
            raise UsageError(f"cannot join a Ray cluster at {where}: {' '.join(str(exc).split())[:200]}; "
                             f"start one with `ray start --head`, or give --ray without an address for a "
                             f"local instance") from None
        started = True
    _quiet(ray)
    try:
        res = ray.cluster_resources()
        nodes = sum(1 for k in res if k.startswith("node:") and not k.startswith("node:__"))
        yield Cluster(cpus=int(res.get("CPU", 0)), gpus=int(math.floor(res.get("GPU", 0))), nodes=max(1, nodes),
                      address=cfg.address)
    finally:
        if started:
            ray.shutdown()


def kill_hook() -> tuple[int, str | None] | None:
    """The test-only :data:`KILL_ENV` hook as (batches, marker file or None); None when unset."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return None
    n, _, marker = spec.partition(":")
    return int(n), marker or None
