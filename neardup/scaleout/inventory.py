"""``dedup --ray``'s hash stage: the sha256 of every new file, read by Ray tasks instead of by the driver.

Why: a scan hashes each file's bytes once (identical bytes are one content, never encoded twice); at 100M
photos of 3 MB that is 300 TB read, too much for one node. Tasks of :data:`CHUNK` files spread the reads over the
cluster; the driver keeps the cache (by path, size and mtime) and only stats the files.
"""

from __future__ import annotations

from collections.abc import Callable

#: files per hashing task
CHUNK = 256


def _hash_chunk(paths: list[str]) -> list[str]:
    from neardup.dedup.inventory import sha256_file

    return [sha256_file(p) for p in paths]


def ray_hasher(paths: list[str], advance: Callable[[int], object]) -> list[str]:
    """A :data:`neardup.dedup.inventory.Hasher` on the Ray session of the caller (tasks of :data:`CHUNK` files)."""
    import ray

    task = ray.remote(num_cpus=1)(_hash_chunk)
    chunks = [paths[s:s + CHUNK] for s in range(0, len(paths), CHUNK)]
    refs = {task.remote(c): i for i, c in enumerate(chunks)}
    out: dict[int, list[str]] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        i = refs[ready[0]]
        out[i] = ray.get(ready[0])
        advance(len(chunks[i]))
    return [d for i in range(len(chunks)) for d in out[i]]
