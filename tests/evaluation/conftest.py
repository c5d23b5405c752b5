"""Labelled feature folders on disk for the evaluation tests (files are touched, never decoded, unless asked)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.clustering.conftest import make_store


def labelled_store(tmp_path: Path, feats: np.ndarray, classes: list[str], name: str = "f", images: bool = False,
                   root: Path | None = None) -> tuple[Path, Path]:
    """A feature folder whose rows are images ``ROOT/<class>/<name>_<i>.png`` (class folders); returns both.

    ``images``: write small real PNGs (a colour per class) instead of empty files.
    """
    root = root or tmp_path / f"{name}_images"
    paths = []
    palette = np.random.default_rng(0).integers(0, 255, (len(set(classes)), 3))
    code = {c: i for i, c in enumerate(sorted(set(classes)))}
    for i, c in enumerate(classes):
        p = root / c / f"{name}_{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        if images:
            Image.new("RGB", (24, 24), tuple(int(v) for v in palette[code[c]])).save(p)
        else:
            p.touch()
        paths.append(str(p))
    return make_store(tmp_path / name, np.ascontiguousarray(feats), paths, root), root


def write_labels_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c in rows), encoding="utf-8")
    return path


def clustered(n_classes: int = 6, sizes: tuple[int, int] = (4, 12), dim: int = 16, noise: float = 0.9,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes (so the figures are far from 0 and 1); labels in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim))
    y = np.repeat(np.arange(n_classes), rng.integers(sizes[0], sizes[1] + 1, n_classes))
    X = centres[y] + noise * rng.standard_normal((len(y), dim))
    perm = rng.permutation(len(y))
    return X[perm].astype(np.float32), y[perm]
