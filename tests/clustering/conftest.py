"""Synthetic planted groups and tiny feature folders for the clustering tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neardup.extract.store import SCHEMA, write_shard
from neardup.io_utils import atomic_write_json


def planted(n_groups: int = 12, sizes: tuple[int, int] = (3, 7), dim: int = 32, spread: float = 0.03,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated groups: random unit centres (cosine distance ~1 apart), members within ~spread^2/2."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_groups, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(n_groups), rng.integers(sizes[0], sizes[1], n_groups))
    X = centres[y] + spread * rng.standard_normal((len(y), dim)) / np.sqrt(dim)
    perm = rng.permutation(len(y))
    return X[perm].astype(np.float32), y[perm]


def planted_bits(n_groups: int = 12, size: int = 4, bits: int = 64, flips: int = 2,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Packed hashes: random centres, members with at most ``flips`` flipped bits."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (n_groups, bits)).astype(np.uint8)
    y = np.repeat(np.arange(n_groups), size)
    B = centres[y].copy()
    for i in range(len(B)):
        B[i, rng.choice(bits, rng.integers(0, flips + 1), replace=False)] ^= 1
    return np.packbits(B, axis=1), y


def make_store(out: Path, feats: np.ndarray, paths: list[str], root: Path, model: str = "toy",
               metric: str = "cosine") -> Path:
    """A finished feature folder, as `neardup extract` writes it."""
    write_shard(out, 0, feats, paths, [])
    dim = feats.shape[1] * (8 if feats.dtype == np.uint8 else 1)
    atomic_write_json(out / "meta.json", {"schema": SCHEMA, "model": model, "num_features": dim, "metric": metric,
                                          "preprocessing": {}, "dtype": str(feats.dtype), "count": len(paths),
                                          "root": str(root), "shards": ["00000"], "skipped": []})
    return out


@pytest.fixture
def attacked_folders(tmp_path: Path) -> tuple[list[Path], dict[str, int]]:
    """Originals (3 sources), their attacked queries (with manifest.csv), and 2 distractors.

    Returns the three feature folders and the true group of every path.
    """
    rng = np.random.default_rng(3)
    dim = 16
    centres = rng.standard_normal((5, dim)).astype(np.float32)
    orig_dir, q_dir, d_dir = tmp_path / "orig", tmp_path / "queries", tmp_path / "distr"
    for d in (orig_dir, q_dir, d_dir):
        d.mkdir()
    sources = ["a", "b", "c"]
    rows, q_paths, q_feats, truth = [], [], [], {}
    for s_i, s in enumerate(sources):
        truth[str(orig_dir / f"{s}.jpg")] = s_i
        for att in ("blur", "crop", "jpeg"):
            name = f"{s}_{att}.jpg"
            rows.append({"query": name, "source": s, "source_path": str(orig_dir / f"{s}.jpg"), "attack": att,
                         "family": att, "params": "{}"})
            q_paths.append(str(q_dir / name))
            q_feats.append(centres[s_i] + 0.01 * rng.standard_normal(dim))
            truth[str(q_dir / name)] = s_i
    with open(q_dir / "manifest.csv", "w", encoding="utf-8") as f:
        f.write("query,source,source_path,attack,family,params\n")
        for r in rows:
            f.write(",".join([r["query"], r["source"], r["source_path"], r["attack"], r["family"], '"{}"']) + "\n")
    folders = [
        make_store(tmp_path / "f_orig", centres[:3].copy(), [str(orig_dir / f"{s}.jpg") for s in sources], orig_dir),
        make_store(tmp_path / "f_q", np.asarray(q_feats, dtype=np.float32), q_paths, q_dir),
        make_store(tmp_path / "f_d", centres[3:].copy(), [str(d_dir / "x.jpg"), str(d_dir / "y.jpg")], d_dir),
    ]
    truth[str(d_dir / "x.jpg")] = 3
    truth[str(d_dir / "y.jpg")] = 4
    assert json.loads((folders[0] / "meta.json").read_text())["count"] == 3
    return folders, truth
