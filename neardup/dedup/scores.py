"""Positive and negative similarity scores from the user's own images, with no labels.

- **Positives**: up to ``n`` sampled images, each attacked ``copies`` times with the attack registry (re-encoded
  as JPEG, as a copy in the wild would be) and scored against its source.
- **Decoys** (clean hard negatives): the top-left and bottom-right quadrants of each sampled image, scored against
  each other: the same photo's colours, light and texture, but different content. On BSDS500 their upper tail
  matches the real nearest non-duplicate similarities (share >= 0.6 / 0.65 / 0.7: decoys 0.125 / 0.08 / 0.05,
  real nearest neighbours 0.13 / 0.067 / 0.033).
- **Neighbours** (the realistic hard negatives): each sampled image's nearest other image in the collection that is
  not one of its probable copies. Why the exclusion: in a collection full of duplicates an image's nearest other
  image *is* a copy; taken as a negative it pushes the threshold up until recall collapses. Probable copies are
  the images connected to it at the threshold the decoys alone give (a conservative, chaining union: it only
  removes candidates), so what remains are the nearest *different* images.

With score normalisation (:mod:`neardup.dedup.normalization`) every score is normalised like the collection's
pairs: an attacked copy's own bias is computed from its own features, a decoy quadrant's from its own, and the
neighbours are read from the normalised k-NN graph. What was measured before normalisation (a :class:`Draw`) is
cached with the normalised scores.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup.progress import progress

if TYPE_CHECKING:
    from neardup.dedup.large import StoredRows

CACHE = "calibration.npz"


@dataclass
class ScoreSample:
    """The calibration's scores, on the threshold's scale (normalised when the scan is)."""

    pos: np.ndarray
    decoys: np.ndarray
    neighbours: np.ndarray

    @property
    def neg(self) -> np.ndarray:
        return np.concatenate([self.decoys, self.neighbours])


@dataclass
class Draw:
    """What :func:`score_sample` measured: raw cosines, and each attacked copy's and decoy quadrant's own bias
    (zeros without score normalisation)."""

    pos: np.ndarray  # (P,) each attacked copy against its source
    source: np.ndarray  # (P,) the source's content row (-1: unknown, in a cache of an older version)
    pos_bias: np.ndarray  # (P,) the copy's own bias
    decoys: np.ndarray  # (D,) one quadrant against the other
    decoy_bias: np.ndarray  # (D, 2) each quadrant's own bias

    def scores(self, bias: np.ndarray | None = None, beta: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """(positives, decoys): raw, or normalised with the collection's ``bias`` (symmetric, as its pairs)."""
        if bias is None:
            return self.pos, self.decoys
        from neardup.fastsearch.normalize import normalize_edges

        if (self.source < 0).any():
            raise ValueError("this draw does not know its sources: it cannot be normalised")
        p = len(self.pos)
        both = np.r_[self.pos_bias, np.asarray(bias, dtype=np.float32)]
        pos = normalize_edges(np.arange(p), p + self.source, self.pos, both, beta)
        d = len(self.decoys)
        dec = normalize_edges(np.arange(0, 2 * d, 2), np.arange(1, 2 * d, 2), self.decoys,
                              self.decoy_bias.reshape(-1), beta)
        return pos.astype(np.float64), dec.astype(np.float64)


def sample_rows(shas: list[str], n: int, seed: int) -> np.ndarray:
    """Content rows to calibrate on: a seeded choice over contents sorted by hash, so the sample depends on the
    collection's contents only (not on input order, or on whether images came in with ``--add``)."""
    order = np.argsort(np.asarray(shas))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(order), size=min(n, len(order)), replace=False)
    return np.sort(order[np.sort(pick)])


def _jpeg(img: Any) -> Any:
    from PIL import Image

    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _quadrants(img: Any) -> tuple[Any, Any]:
    w, h = img.size
    return img.crop((0, 0, max(1, w // 2), max(1, h // 2))), img.crop((w // 2, h // 2, w, h))


def score_sample(X: np.ndarray | StoredRows, paths: list[str], rows: np.ndarray, extractor: Any, attacks: str,
                 copies: int, seed: int, batch_size: int = 32, show_progress: bool = False,
                 bias: Callable[[np.ndarray], np.ndarray] | None = None) -> Draw:
    """The raw positive and decoy scores of the sampled ``rows`` (``paths[r]`` is a file of content row r).

    ``bias(unit_rows)``: the background bias of encoded images (score normalisation), else zeros.
    """
    import torch

    from neardup.data.generate import attack_rng, load_attack_config
    from neardup.data.images import ImageDecodeError, load_image
    from neardup.dedup.features import unit_rows

    specs = load_attack_config(attacks)
    rng = np.random.default_rng(seed)
    pos: list[np.ndarray] = []
    dec: list[np.ndarray] = []
    source: list[np.ndarray] = []
    pos_bias: list[np.ndarray] = []
    dec_bias: list[np.ndarray] = []
    batch: list[Any] = []
    owners: list[int] = []  # row of the source, or -1 - k for the k-th decoy pair's member

    def flush() -> None:
        if not batch:
            return
        f = unit_rows(extractor.encode(torch.stack([extractor.transform(im) for im in batch])), extractor.metric)
        b = bias(f) if bias is not None else np.zeros(len(f), dtype=np.float32)
        own = np.asarray(owners)
        src = own >= 0
        if src.any():
            pos.append(np.einsum("ij,ij->i", f[src], X[own[src]]))
            source.append(own[src])
            pos_bias.append(b[src])
        if (~src).any():
            # a decoy pair is queued as two consecutive items, never split across batches
            d = f[~src]
            dec.append(np.einsum("ij,ij->i", d[0::2], d[1::2]))
            dec_bias.append(b[~src].reshape(-1, 2))
        batch.clear()
        owners.clear()

    with progress(len(rows), "calibrate", "img", disable=not show_progress) as bar:
        for r in rows.tolist():
            try:
                img = load_image(paths[r])
            except ImageDecodeError:
                bar.update(1)
                continue
            for j in rng.choice(len(specs), size=min(copies, len(specs)), replace=False).tolist():
                spec = specs[j]
                batch.append(_jpeg(spec(img, attack_rng(seed, paths[r], spec.name))))
                owners.append(r)
            a, b = _quadrants(img)
            batch.extend([a, b])
            owners.extend([-1, -1])
            if len(batch) >= batch_size:
                flush()
            bar.update(1)
    flush()

    def cat(parts: list[np.ndarray], shape: tuple[int, ...] = (0,), dtype: Any = np.float64) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype=dtype)

    return Draw(cat(pos), cat(source, dtype=np.int64), cat(pos_bias, dtype=np.float32), cat(dec),
                cat(dec_bias, (0, 2), np.float32))


def neighbour_negatives(rows: np.ndarray, graph: Any, cut: float) -> np.ndarray:
    """Each sampled row's most similar neighbour outside its component of the graph cut at ``cut``.

    ``graph``: a :class:`neardup.dedup.knngraph.KnnGraph` (its edges at ``cut`` and the sampled rows' lists).
    """
    from neardup.dedup.grouping import components

    r, c, _ = graph.edges(cut)
    comp = components(graph.n, r, c)
    sims, nbrs = graph.lists(rows)
    out = []
    for k, i in enumerate(rows.tolist()):
        for j, v in zip(nbrs[k].tolist(), sims[k].tolist(), strict=True):
            if j >= 0 and j != i and comp[j] != comp[i]:
                out.append(v)
                break
    return np.asarray(out, dtype=np.float64)


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def load_cached(out: Path, key: str) -> Draw | None:
    """The draw cached under ``key`` (None: none, another key, or damaged).

    A cache of an older version holds only the scores (then raw: it was never normalised).
    """
    path = out / CACHE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            if "draw_pos" in z:
                return Draw(np.asarray(z["draw_pos"]), np.asarray(z["draw_source"]), np.asarray(z["draw_pos_bias"]),
                            np.asarray(z["draw_decoys"]), np.asarray(z["draw_decoy_bias"]).reshape(-1, 2))
            pos, dec = np.asarray(z["pos"]), np.asarray(z["decoys"])
            return Draw(pos, np.full(len(pos), -1, np.int64), np.zeros(len(pos), np.float32), dec,
                        np.zeros((len(dec), 2), np.float32))
    except (OSError, ValueError, KeyError):
        return None  # damaged: recomputed


def save(out: Path, key: str, sample: ScoreSample, draw: Draw) -> None:
    """The calibration's scores (``pos``, ``neg``: what the report plots) and the draw they came from."""
    from neardup.io_utils import atomic_write

    atomic_write(out / CACHE, lambda f: np.savez(
        f, key=np.array(key), pos=sample.pos, decoys=sample.decoys, neighbours=sample.neighbours, neg=sample.neg,
        draw_pos=draw.pos, draw_source=draw.source, draw_pos_bias=draw.pos_bias, draw_decoys=draw.decoys,
        draw_decoy_bias=draw.decoy_bias))
