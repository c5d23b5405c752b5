"""Fastsearch fixtures: small seeded clustered data and hand-built feature folders (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neardup.data.manifest import ManifestRow, write_manifest
from neardup.extract.store import SCHEMA, write_shard


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """One OpenMP thread: on a shared 2-core box spinning threads only slow the tiny test searches down."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int = 1500, d: int = 32, n_queries: int = 100, seed: int = 0, noise: float = 0.05):
    """(database, queries, gt): Gaussian clusters; each query is a noisy copy of its gt database row."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, d))
    db = (centers[rng.integers(0, 30, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    gt = rng.choice(n, n_queries, replace=False)
    q = (db[gt] + noise * rng.normal(size=(n_queries, d))).astype(np.float32)
    return np.abs(db), np.abs(q), gt  # non-negative, so every metric (js too) applies


def make_store(root: Path, feats: np.ndarray, names: list[str], model: str = "toy", metric: str = "cosine",
               preprocessing: dict | None = None, dim: int | None = None) -> Path:
    """A finished feature folder for ``feats`` of images ``root/names`` (files need not exist)."""
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root, 0, feats, [str(root / n) for n in names], [])
    dim = dim or (feats.shape[1] * 8 if feats.dtype == np.uint8 else feats.shape[1])
    meta = {"schema": SCHEMA, "model": model, "num_features": dim, "metric": metric,
            "dtype": "uint8-packed-bits" if feats.dtype == np.uint8 else "float32",
            "preprocessing": preprocessing or {"input_size": 8}, "count": len(feats), "n_inputs": len(feats),
            "root": str(root), "shards": ["00000"], "shard_size": 10000, "skipped": []}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def retrieval_folders(tmp_path: Path) -> dict[str, Path]:
    """database/queries/distractors feature folders and a manifest, for CLI tests."""
    db, q, gt = clustered(400, 16, 40, seed=3)
    names = [f"img{i:04d}.jpg" for i in range(300)]
    make_store(tmp_path / "dbf", db[:300], names)
    make_store(tmp_path / "dtf", db[300:], [f"d{i}.jpg" for i in range(100)])
    keep = gt < 300
    qnames = [f"img{g:04d}_blur.jpg" for g in gt[keep]]
    qdir = make_store(tmp_path / "qf", q[keep], qnames)
    rows = [ManifestRow(n, f"img{g:04d}", "", "blur", "blur", "{}") for n, g in zip(qnames, gt[keep], strict=True)]
    write_manifest(rows, qdir / "manifest.csv")
    return {"database": tmp_path / "dbf", "distractors": tmp_path / "dtf", "queries": qdir}
