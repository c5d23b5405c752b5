"""A model-free float extractor and corrupt-store builders, so store and pipeline tests run in milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from neardup.extract.config import ExtractConfig
from neardup.extract.pipeline import extract_features
from neardup.extract.registry import ModelCfg


class TinyExtractor:
    """4x4 colour thumbnail as a 48-d float feature: deterministic, no network."""

    cfg = ModelCfg(name="tiny", num_features=48, input_size=4, resize_size=4)
    name, num_features, metric, dtype = "tiny", 48, "cosine", np.float32
    device, draft_size, weights_path, engine = torch.device("cpu"), None, None, "torch"

    def transform(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(img.resize((4, 4)), dtype=np.float32).reshape(-1) / 255 + 0.01)

    def encode(self, batch: torch.Tensor) -> np.ndarray:
        return batch.numpy()

    def describe(self) -> dict[str, Any]:
        return {"model": "tiny", "num_features": 48, "metric": "cosine", "dtype": "float32",
                "preprocessing": self.cfg.preprocessing(), "feature_layer": "", "device": "cpu", "amp": "off",
                "engine": "torch"}


def tiny_store(images: Path, out: Path, **kw: Any) -> Path:
    extract_features(images, out, ExtractConfig(workers=0, **kw), extractor=TinyExtractor(), show_progress=False)
    return out


def _meta(root: Path, **changes: Any) -> None:
    meta = json.loads((root / "meta.json").read_text())
    meta.update(changes)
    for k in [k for k, v in changes.items() if v is _DROP]:
        del meta[k]
    (root / "meta.json").write_text(json.dumps(meta))


_DROP = object()


def _npy(root: Path) -> Path:
    return root / "shards" / "00000.npy"


def _save(root: Path, arr: np.ndarray, allow_pickle: bool = False) -> None:
    with open(_npy(root), "wb") as f:
        np.save(f, arr, allow_pickle=allow_pickle)


def _features(root: Path) -> np.ndarray:
    return np.load(_npy(root))


def _with_value(root: Path, value: float) -> None:
    a = _features(root).copy()
    a[2, 5] = value
    _save(root, a)


#: name -> (damage done to a good 6-image tiny store, words expected in the error)
CORRUPTIONS = {
    "meta-not-json": (lambda r: (r / "meta.json").write_text("{not json"), "not valid JSON"),
    "meta-not-object": (lambda r: (r / "meta.json").write_text("[1, 2]"), "not a JSON object"),
    "meta-missing-keys": (lambda r: _meta(r, count=_DROP, shards=_DROP), "lacks count, shards"),
    "meta-bad-count": (lambda r: _meta(r, count="six"), "count 'six'"),
    "meta-shard-outside": (lambda r: _meta(r, shards=["../../etc/passwd"]), "shard names"),
    "missing-shard": (lambda r: _npy(r).unlink(), "is missing"),
    "missing-shard-record": (lambda r: (r / "shards" / "00000.json").unlink(), "is missing"),
    "short-shard": (lambda r: _npy(r).write_bytes(_npy(r).read_bytes()[:-40]), "cut short"),
    "not-npy": (lambda r: _npy(r).write_bytes(b"hello"), "not a readable .npy"),
    "rows-vs-paths": (lambda r: _save(r, _features(r)[:5]), "5 feature rows but meta.json counts 6"),
    "paths-vs-rows": (lambda r: (r / "shards" / "00000.json").write_text(json.dumps({"paths": ["a"], "count": 1})),
                      "lists 1 paths but its shard has 6"),
    "wrong-dim": (lambda r: _save(r, _features(r)[:, :40]), "expected (rows, 48)"),
    "object-dtype": (lambda r: _save(r, _features(r).astype(object), allow_pickle=True), "Python objects"),
    "wrong-dtype": (lambda r: _save(r, _features(r).astype(np.float64)), "expected float32"),
    "nan": (lambda r: _with_value(r, np.nan), "NaN or infinite"),
    "inf": (lambda r: _with_value(r, np.inf), "NaN or infinite"),
}
