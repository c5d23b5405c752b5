"""The large-collection path of dedup: rows streamed from feature stores, projected k-NN, exact rescoring, the star
guard per component. On small synthetic stores, forced with a tiny ``exact_limit``, it must give the groups of the
in-memory path; and it must read the stores a block at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neardup.dedup import large
from neardup.dedup.find import DedupConfig, edges, find_duplicates, group_contents, knn
from neardup.dedup.grouping import components, guarded_groups
from neardup.dedup.large import StoredRows, edge_similarities, guarded_by_component, renumber
from neardup.errors import UsageError
from neardup.extract.store import SCHEMA, shard_name, write_shard
from neardup.io_utils import atomic_write_json


def write_store(root: Path, feats: np.ndarray, shard_size: int, dtype: str = "float32", model: str = "m") -> Path:
    """A feature folder in the extract store format, written with its writer functions."""
    shards = []
    for i, start in enumerate(range(0, len(feats), shard_size)):
        block = feats[start:start + shard_size].astype(dtype)
        write_shard(root, i, block, [f"img{start + k:05d}.jpg" for k in range(len(block))], [])
        shards.append(shard_name(i))
    atomic_write_json(root / "meta.json", {"schema": SCHEMA, "model": model, "metric": "cosine",
                                           "num_features": feats.shape[1], "count": len(feats), "shards": shards,
                                           "dtype": dtype, "root": str(root)})
    return root


def planted(n_groups: int, size: int, n_single: int, d: int, rank: int | None = None,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Groups of near-duplicate vectors (cosine > 0.97 to their centre) among unrelated ones, shuffled."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank or d, d))
    centres = rng.standard_normal((n_groups + n_single, rank or d)) @ basis
    members = np.repeat(centres[:n_groups], size, axis=0)
    members += 0.1 * rng.standard_normal((len(members), rank or d)) @ basis
    X = np.concatenate([members, centres[n_groups:]]).astype(np.float32)
    truth = np.r_[np.repeat(np.arange(n_groups), size), n_groups + np.arange(n_single)]
    order = rng.permutation(len(X))
    return X[order], truth[order]


def unit(X: np.ndarray) -> np.ndarray:
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(renumber(a), renumber(b))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_stored_rows_read_what_the_stores_hold(tmp_path: Path, dtype: str) -> None:
    X, _ = planted(5, 3, 40, 24)
    a = write_store(tmp_path / "a", X[:30], 7, dtype)
    b = write_store(tmp_path / "b", X[30:], 4, dtype)
    rows = StoredRows.from_stores([a, b], block=5)
    want = unit(X.astype(dtype).astype(np.float32))
    assert rows.shape == (len(X), 24) and len(rows) == len(X)
    np.testing.assert_allclose(rows[:], want, rtol=1e-6, atol=1e-6)
    idx = np.array([54, 3, 3, 29, 30, 0])
    np.testing.assert_allclose(rows[idx], want[idx], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rows[-1], want[-1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rows[10:20:3], want[10:20:3], rtol=1e-6, atol=1e-6)
    got = np.concatenate([blk for _, _, blk in rows.blocks()])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexError):
        rows[len(X)]


def test_reads_are_chunked_and_the_maps_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = planted(10, 3, 60, 200, rank=12)
    store = write_store(tmp_path / "s", X, 16, "float16")
    rows = StoredRows.from_stores([store], block=7)
    reads: list[int] = []
    real_read = large.Shard.read

    def spy(self: large.Shard, r: np.ndarray) -> np.ndarray:
        reads.append(len(r))
        return real_read(self, r)

    monkeypatch.setattr(large.Shard, "read", spy)
    V = large.project(rows, 16, sample=40)
    assert V.shape == (len(X), 16) and np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-5)
    assert max(reads) <= 7  # the sample and every block: a block at a time
    reads.clear()
    r = np.arange(len(X))
    c = (r * 7 + 3) % len(X)
    np.testing.assert_allclose(edge_similarities(rows, r, c, chunk=5), np.einsum("ij,ij->i", rows[r], rows[c]),
                               atol=1e-5)
    assert max(reads) <= 7
    maps = Path("/proc/self/maps")
    if maps.is_file():  # Linux: no shard stays mapped once its rows were read
        assert str(store / "shards") not in maps.read_text()


def test_a_damaged_shard_is_one_error(tmp_path: Path) -> None:
    X, _ = planted(2, 3, 10, 8)
    X[5, 2] = np.nan
    rows = StoredRows.from_stores([write_store(tmp_path / "s", X, 8)])
    rows[:4]  # the clean shard reads
    with pytest.raises(UsageError, match="NaN"):
        rows[[5]]
    other = write_store(tmp_path / "o", X, 8, model="other")
    with pytest.raises(UsageError, match="other"):
        StoredRows.from_stores([tmp_path / "s", other])


@pytest.mark.parametrize("d, rank", [(48, None), (300, 200)])  # below the search width, and projected
def test_the_streamed_path_gives_the_in_memory_groups(tmp_path: Path, d: int, rank: int | None) -> None:
    X, truth = planted(40, 4, 250, d, rank)
    rows = StoredRows.from_stores([write_store(tmp_path / "s", X, 64)])
    dense = rows[:]
    t, margin = 0.9, 0.1
    sims, nbrs = knn(dense, 10, exact_limit=10**6)  # exact, in memory
    want = group_contents(dense, sims, nbrs, t, margin)
    assert same_partition(want, truth)  # the planted groups, so the comparison below means something
    s2, n2 = knn(rows, 10, exact_limit=10)  # forced: projected (d=300), list-by-list IVF, streamed
    assert rows.search_vectors().shape[1] == min(d, large.SEARCH_DIM)
    got = group_contents(rows, s2, n2, t, margin)
    assert np.array_equal(got, want)
    plain_want = group_contents(dense, sims, nbrs, t, np.inf)
    assert np.array_equal(group_contents(rows, s2, n2, t, np.inf), plain_want)


@pytest.mark.parametrize("seed", range(4))
def test_guard_per_component_is_the_guard_on_the_whole_graph(seed: int) -> None:
    rng = np.random.default_rng(seed)
    V = unit(rng.standard_normal((300, 6)).astype(np.float32) + np.array([3, 0, 0, 0, 0, 0], np.float32))
    r, c = rng.integers(0, 300, 1500), rng.integers(0, 300, 1500)
    keep = r != c
    r, c = r[keep], c[keep]
    s = np.einsum("ij,ij->i", V[r], V[c])
    split = False
    settings = [(float(np.quantile(s, q)), m) for q in (0.6, 0.8, 0.9) for m in (0.0, 0.1, 0.3)]
    for t, margin in settings:
        bound = t - margin
        want = guarded_groups(len(V), r, c, s, t, lambda i, js: V[js] @ V[i], centre_threshold=bound,
                              dense=lambda js: V[js] @ V[js].T)
        got = guarded_by_component(len(V), r, c, s, t, lambda idx: V[idx], bound)
        assert np.array_equal(got, want)
        keep = s >= t
        plain = components(len(V), r[keep], c[keep])
        assert np.bincount(plain).max() > 2  # components beyond pairs were exercised
        split |= len(np.unique(want)) > len(np.unique(plain))
    assert split  # and the guard did split some


def test_find_duplicates_streams_above_exact_limit(tmp_path: Path, collection, lite0,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from neardup.dedup import features

    folder, _ = collection
    out = tmp_path / "scan"
    whole = find_duplicates([str(folder)], out, DedupConfig(threshold=0.6), extractor=lite0)
    seen: list[object] = []
    real = features.FeatureCache._assemble

    def spy(self, *a, **k):  # type: ignore[no-untyped-def]
        vec = real(self, *a, **k)
        seen.append(vec.X)
        return vec

    monkeypatch.setattr(features.FeatureCache, "_assemble", spy)
    streamed = find_duplicates([str(folder)], out, DedupConfig(threshold=0.6, exact_limit=3), extractor=lite0)
    assert isinstance(seen[0], StoredRows)
    assert streamed.path_groups() == whole.path_groups()
    assert streamed.kinds == whole.kinds
    np.testing.assert_allclose(streamed.scores, whole.scores, atol=1e-5)


def test_edges_are_rescored_on_the_full_rows(tmp_path: Path) -> None:
    X, _ = planted(10, 3, 200, 300, rank=200)
    rows = StoredRows.from_stores([write_store(tmp_path / "s", X, 50)])
    sims, nbrs = knn(rows, 8, exact_limit=10)
    r, c, approx = edges(sims, nbrs, -1.0)
    exact = edge_similarities(rows, r, c)
    dense = rows[:]
    np.testing.assert_allclose(exact, np.einsum("ij,ij->i", dense[r], dense[c]), atol=1e-5)
    assert np.abs(approx - exact).max() > 1e-3  # the projection's similarities differ: hence the rescoring
