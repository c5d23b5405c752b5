"""Scale-out on Ray: ``--ray [ADDRESS]`` for ``extract``, ``dedup`` and ``cluster --method graph``.

Why Ray: one machine extracts about a million images in 4 hours on 2 cores, and the k-NN graph of 100M vectors
does not fit its memory; Ray schedules the same Python code over a laptop, a SLURM allocation or a Kubernetes
cluster (KubeRay), with back-pressure, retries and the object store included.

- :mod:`neardup.scaleout.engine`: the options (:class:`RayConfig`, validated in one place) and the session that
  starts a local Ray instance or joins a cluster. ``import ray`` happens only there, only when asked.
- :mod:`neardup.scaleout.extract`: extraction on Ray Data (decode tasks, an encode actor pool, the same feature
  store shards, committed by the driver).
- :mod:`neardup.scaleout.knn`: the k-NN graph over database shards held by actors, query blocks searched in
  parallel, the edges above a floor written as edge shards.
"""
