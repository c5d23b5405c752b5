"""Score normalisation in a scan (``--normalize-scores BACKGROUND``), on top of :mod:`neardup.fastsearch.normalize`.

Why in dedup: one threshold serves every pair of the collection, and an image that resembles many (a sky, a
texture, a page of text) scores high against all of them, its copies and its false matches alike. Subtracting
each image's similarity to a background of unrelated images puts every pair on one scale (SSCD, ISC 2021).

- each content's **bias** is :func:`~neardup.fastsearch.normalize.background_bias` of its unit features against
  the background's (cosine; hashes as +-1 vectors, the scale of the scan);
- a **pair's score** is :func:`~neardup.fastsearch.normalize.normalize_edges` of its cosine, symmetric: both
  ends' mean bias, so (i, j) and (j, i) are one score. Written as per-item offsets ``o = beta * bias / 2``, any
  pair's normalised score is ``x_i . x_j - o_i - o_j``: the guard's centre and pair checks use the same scale.

The background must be copies of nothing in the collection: an image's own duplicates in it would raise its bias
and push its real copies below the threshold. A background inside an input (or holding one of its files) is refused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.normalize import BackgroundNormalizer, ScoreNormalization, background_bias, normalize_edges

if TYPE_CHECKING:
    from neardup.dedup.large import StoredRows
    from neardup.extract.space import FeatureSpace

#: where background images are extracted inside the scan folder (one sub-folder per background and model)
FOLDER = "background"


@dataclass
class Background:
    """The loaded background of a scan: its unit rows and what a summary records of it."""

    config: ScoreNormalization
    vectors: np.ndarray  # (B, d) unit float32 rows
    kind: str  # "features" | "images"
    digest: str  # of the rows: caches computed with another background are not reused

    def bias(self, X: np.ndarray | StoredRows, block: int = 65536) -> np.ndarray:
        """(n,) float32: each row's :func:`background_bias` (rows read ``block`` at a time when streamed)."""
        c = self.config
        if not isinstance(X, np.ndarray):
            out = np.empty(len(X), dtype=np.float32)
            for start, stop, rows in X.blocks(block):
                out[start:stop] = background_bias(rows, self.vectors, c.k, "cosine", c.reduction)
            return out
        return background_bias(X, self.vectors, c.k, "cosine", c.reduction)

    def offsets(self, bias: np.ndarray) -> np.ndarray:
        """Per-item offsets: ``x_i . x_j - o_i - o_j`` is the normalised score of a pair."""
        return (np.float32(self.config.beta) * np.asarray(bias, dtype=np.float32) / 2).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {**self.config.to_dict(), "background": os.path.abspath(self.config.background),
                "n_background": int(len(self.vectors)), "background_kind": self.kind,
                "background_sha256": self.digest}


def record(config: ScoreNormalization | None) -> dict[str, Any] | None:
    """What a summary records of the options (the background as an absolute path); None without them."""
    if config is None:
        return None
    return {**config.to_dict(), "background": os.path.abspath(config.background)}


def same_options(old: dict[str, Any] | None, new: ScoreNormalization | None) -> bool:
    """Whether a summary's ``normalization`` record was made with the options ``new``."""
    want = record(new)
    if old is None or want is None:
        return old is None and want is None
    return {k: old.get(k) for k in want} == want


def normalise_knn(sims: np.ndarray, nbrs: np.ndarray, bias: np.ndarray, beta: float) -> np.ndarray:
    """The k-NN similarity matrix with every entry normalised (symmetric); -inf where no neighbour."""
    r = np.repeat(np.arange(len(sims)), nbrs.shape[1] if nbrs.ndim == 2 else 0)
    c, s = nbrs.ravel(), sims.ravel()
    ok = c >= 0
    out = np.full(s.shape, -np.inf, dtype=np.float32)
    out[ok] = normalize_edges(r[ok], c[ok], s[ok], bias, beta, symmetric=True)
    return out.reshape(sims.shape)


def check_apart(background: str | os.PathLike, inputs: list[str], collection: list[str]) -> None:
    """Refuse a background that is an input, inside one or holding one, or that lists a file of the collection."""
    if not Path(background).exists():
        raise UsageError(f"--normalize-scores {background}: not found (give a feature folder or images)")
    bg = os.path.realpath(background)
    for inp in inputs:
        real = os.path.realpath(inp)
        if bg == real or Path(bg).is_relative_to(real) or Path(real).is_relative_to(bg):
            where = "is" if bg == real else "is inside" if Path(bg).is_relative_to(real) else "holds"
            raise UsageError(f"--normalize-scores {background} {where} the input {inp}: the background must be "
                             "images that are copies of nothing in the collection")
    mine = set(collection)
    shared = next((p for p in _listed(Path(background)) if os.path.realpath(p) in mine), None)
    if shared is not None:
        raise UsageError(f"--normalize-scores {background} holds {shared}, a file of the collection: the background "
                         "must be images that are copies of nothing in the collection")


def _listed(path: Path) -> list[str]:
    """The image paths a background names (a feature folder's, or those of a folder or list file)."""
    from neardup.extract.pipeline import collect_inputs
    from neardup.extract.store import FeatureStore

    if (path / "meta.json").is_file():
        return list(FeatureStore.open(path).paths)
    return collect_inputs(path)[0]


def load_background(config: ScoreNormalization, out: Path, inputs: list[str], collection: list[str],
                    space: FeatureSpace, metric: str, extract: Callable[[Path, Path], None]) -> Background:
    """The background of ``config`` for a scan whose features are in ``space``.

    Args:
        out: the scan folder: images are extracted into ``out/background/<key>`` (key: the background's path,
            its files' sizes and times, and the space), resumed and reused by later runs.
        inputs, collection: the scan's input paths and its files' real paths (the background must be apart).
        extract: ``extract(images, feature_folder)`` with the scan's model and options.

    Raises:
        UsageError: a missing background, one that overlaps the collection, one in another feature space.
    """
    from neardup.dedup.features import unit_rows

    config.validate()
    path = Path(config.background)
    check_apart(path, inputs, collection)
    kind = "features"
    if not (path / "meta.json").is_file():
        kind = "images"
        listing = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in _listed(path)]
        key = hashlib.sha256(repr((os.path.abspath(path), sorted(space.to_dict().items()), listing)).encode())
        dest = out / FOLDER / key.hexdigest()[:12]
        extract(path, dest)
        config_at = replace(config, background=str(dest))
    else:
        config_at = config
    loaded = BackgroundNormalizer.load(config_at, space, metric, reference="the collection")
    vectors = unit_rows(np.asarray(loaded.background), loaded.metric)
    if config.k > len(vectors):
        raise UsageError(f"--norm-k {config.k} exceeds the {len(vectors)} vectors of the background {path}")
    digest = hashlib.sha256(np.ascontiguousarray(vectors).tobytes()).hexdigest()[:16]
    return Background(config, vectors, kind, digest)


def owned() -> tuple[str, ...]:
    """The globs of what :func:`load_background` writes into a scan folder (for ``--overwrite``)."""
    from neardup.extract.pipeline import OWNED as EXTRACT_OWNED

    part = f"{FOLDER}/[0-9a-f]*"
    return (*(f"{part}/{g}" for g in EXTRACT_OWNED), f"{part}/.neardup.json", f"{part}/.neardup.lock", part, FOLDER)
