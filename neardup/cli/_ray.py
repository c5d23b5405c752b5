"""``--ray [ADDRESS]``, ``--ray-cpus``, ``--ray-actors``: the Ray options of extract, dedup and cluster.

One decorator and one builder, so the three commands spell and check them the same way; the values are validated
by :meth:`neardup.scaleout.engine.RayConfig.validate` (Ray itself is imported only when a run asks for it).
"""

from __future__ import annotations

from typing import Any

import click

from neardup.errors import UsageError


def ray_options(fn: Any) -> Any:
    """Add ``--ray [ADDRESS]``, ``--ray-cpus N`` and ``--ray-actors N`` (parameters ray, ray_cpus, ray_actors)."""
    for opt in reversed([
        click.option("--ray", "ray", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                     help="Run on Ray. Without a value: a local Ray instance on this machine; 'auto': join the "
                          "cluster `ray start` runs on this node (SLURM, KubeRay); HOST:PORT: join that one. "
                          "Needs pip install 'neardup[ray]'."),
        click.option("--ray-cpus", type=click.IntRange(1), default=None,
                     help="CPUs of the local Ray instance [default: all]."),
        click.option("--ray-actors", type=click.IntRange(1), default=None,
                     help="Encode actors (extraction) and index shards (k-NN graph) [default: one encode actor per "
                          "GPU, or 2/3 of the CPUs; half the CPUs as shards]."),
    ]):
        fn = opt(fn)
    return fn


def ray_config(ray: str | None, ray_cpus: int | None, ray_actors: int | None) -> Any:
    """The :class:`~neardup.scaleout.engine.RayConfig` of the options, or None without ``--ray``.

    Raises:
        UsageError: ``--ray-cpus``/``--ray-actors`` without ``--ray``, or a bad value.
    """
    if ray is None:
        given = [f for f, v in (("--ray-cpus", ray_cpus), ("--ray-actors", ray_actors)) if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} with --ray")
        return None
    from neardup.scaleout.engine import RayConfig, require_ray

    cfg = RayConfig(address=ray, cpus=ray_cpus, actors=ray_actors).validate()
    require_ray()  # a missing extra is one line now, not after the inputs are read
    return cfg
