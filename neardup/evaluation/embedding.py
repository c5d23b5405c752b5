"""2-d maps of a feature space (t-SNE, UMAP), coloured by class: does the space separate the classes?

:data:`EMBEDDERS` is the registry of map methods (adding one is one :func:`register_embedder` call);
:func:`embed` runs one, :func:`plot_map` draws the map (thumbnails of some images at their points on
demand), both deterministic for a seed.

References: van der Maaten & Hinton, Visualizing Data using t-SNE, JMLR 2008 (openTSNE: Poličar, Stražar
& Zupan, JSS 2024); McInnes, Healy & Melville, UMAP, arXiv:1802.03426.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neardup.errors import UsageError
from neardup.fastsearch.vectors import canonical_metric, l2_normalize

#: fewest images a map is drawn for (t-SNE's perplexity needs a few neighbours)
MIN_POINTS = 5
#: classes up to which the map has a legend (a qualitative palette); above, a colour map and no legend
LEGEND_MAX = 20


@dataclass(frozen=True)
class Embedder:
    """One map method: ``run(X, metric, config) -> (n, 2)``; ``package`` is what pip installs when it is absent."""

    name: str
    run: Callable[[np.ndarray, str, EmbedConfig], np.ndarray]
    doc: str
    module: str
    package: str


EMBEDDERS: dict[str, Embedder] = {}


def register_embedder(e: Embedder) -> Embedder:
    if e.name in EMBEDDERS:
        raise ValueError(f"embedding method {e.name!r} registered twice")
    EMBEDDERS[e.name] = e
    return e


@dataclass
class EmbedConfig:
    """Options of ``neardup embed-map``.

    Args:
        method: a name in :data:`EMBEDDERS`.
        seed: the random state of the method (and of the choice of thumbnails): same seed, same map.
        perplexity: t-SNE's effective number of neighbours (lowered to (n - 1) / 3 for few images).
        n_neighbors: UMAP's neighbourhood size (lowered to n - 1 for few images).
        metric: cosine, l2 or hamming [default: the features' own].
        thumbnails: draw this many images at their points (spread over the map).
    """

    method: str = "tsne"
    seed: int = 0
    perplexity: float = 30.0
    n_neighbors: int = 15
    metric: str | None = None
    thumbnails: int = 0
    applied: dict[str, Any] = field(default_factory=dict)  # parameters as run (after lowering for few images)

    def validate(self) -> EmbedConfig:
        """Check every option in one place (the method's package is checked when it runs).

        Raises:
            UsageError: an unknown method or metric, or a value out of range.
        """
        if self.method not in EMBEDDERS:
            raise UsageError(f"unknown embedding method {self.method!r}; use one of {', '.join(EMBEDDERS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 32:
            raise UsageError(f"--seed must be a whole number from 0 to {2 ** 32 - 1}, got {self.seed!r}")
        if not (isinstance(self.perplexity, (int, float)) and np.isfinite(self.perplexity) and self.perplexity > 0):
            raise UsageError(f"--perplexity must be a positive number, got {self.perplexity!r}")
        if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise UsageError(f"--n-neighbors must be a whole number >= 2, got {self.n_neighbors!r}")
        if isinstance(self.thumbnails, bool) or not isinstance(self.thumbnails, int) or self.thumbnails < 0:
            raise UsageError(f"--thumbnails must be a whole number >= 0, got {self.thumbnails!r}")
        if self.metric is not None:
            self.metric = canonical_metric(self.metric, ("cosine", "l2", "hamming"))
        return self


def require_module(e: Embedder) -> Any:
    """The method's package, imported; a UsageError saying how to install it when it is absent."""
    try:
        return importlib.import_module(e.module)
    except ImportError:
        raise UsageError(f"--method {e.name} needs the {e.package} package, which is not installed: "
                         f"pip install {e.package}") from None


def as_float(X: np.ndarray, metric: str) -> tuple[np.ndarray, str]:
    """Features as float32 for a map method and the method's metric name: cosine -> L2-normalised + euclidean
    (the same neighbours), hashes -> unpacked 0/1 bits + euclidean (the square root of the Hamming distance)."""
    X = np.asarray(X)
    if X.dtype == np.uint8:
        if metric != "hamming":
            raise UsageError(f"these features are binary hashes: use metric hamming, not {metric}")
        return np.unpackbits(X, axis=1).astype(np.float32), "euclidean"
    if metric == "hamming":
        raise UsageError("the hamming metric needs binary hashes (packed uint8 features), got float features")
    if metric == "cosine":
        norms = np.linalg.norm(np.asarray(X, dtype=np.float32), axis=1)
        if np.any(norms == 0):
            raise UsageError(f"{int(np.sum(norms == 0))} all-zero feature row(s): cosine is undefined for them")
        return l2_normalize(X), "euclidean"
    return np.ascontiguousarray(X, dtype=np.float32), "euclidean"


def _tsne(X: np.ndarray, metric: str, cfg: EmbedConfig) -> np.ndarray:
    openTSNE = require_module(EMBEDDERS["tsne"])
    perplexity = float(min(cfg.perplexity, (len(X) - 1) / 3.0))
    cfg.applied = {"perplexity": perplexity}
    emb = openTSNE.TSNE(n_components=2, perplexity=perplexity, metric=metric, initialization="pca",
                        random_state=cfg.seed, n_jobs=1, verbose=False).fit(X)
    return np.asarray(emb, dtype=np.float64)


def _umap(X: np.ndarray, metric: str, cfg: EmbedConfig) -> np.ndarray:
    umap = require_module(EMBEDDERS["umap"])
    n_neighbors = int(min(cfg.n_neighbors, len(X) - 1))
    cfg.applied = {"n_neighbors": n_neighbors}
    # a random_state makes UMAP deterministic (and single-threaded)
    model = umap.UMAP(n_components=2, n_neighbors=n_neighbors, metric=metric, random_state=cfg.seed)
    return np.asarray(model.fit_transform(X), dtype=np.float64)


register_embedder(Embedder("tsne", _tsne, "t-SNE (openTSNE, FFT-accelerated)", "openTSNE", "openTSNE"))
register_embedder(Embedder("umap", _umap, "UMAP (umap-learn)", "umap", "umap-learn"))


def embed(X: np.ndarray, cfg: EmbedConfig, metric: str) -> np.ndarray:
    """(n, 2) map coordinates of ``X`` by ``cfg.method`` (``cfg.metric`` overrides ``metric``), deterministic.

    Raises:
        UsageError: too few images, a missing package (with its pip command), features the metric cannot use.
    """
    cfg.validate()
    e = EMBEDDERS[cfg.method]
    require_module(e)  # before any work
    if len(X) < MIN_POINTS:
        raise UsageError(f"an embedding map needs at least {MIN_POINTS} images, got {len(X)}")
    Xf, m = as_float(X, cfg.metric or metric)
    if not np.isfinite(Xf).all():
        raise UsageError("the features hold NaN or infinite values")
    return e.run(Xf, m, cfg)


def spread_points(xy: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` points spread over the map (greedy farthest-point sampling from a seeded start).

    Why: thumbnails at random points pile up in dense regions and hide each other.
    """
    n = min(int(n), len(xy))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    chosen = [int(np.random.default_rng(seed).integers(len(xy)))]
    dist = np.linalg.norm(xy - xy[chosen[0]], axis=1)
    while len(chosen) < n:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(xy - xy[i], axis=1))
    return np.array(chosen, dtype=np.int64)


def _thumbnail(path: str, px: int) -> np.ndarray | None:
    from neardup.data.images import ImageDecodeError, load_image

    try:
        img = load_image(path, draft_size=(px, px))
    except (ImageDecodeError, OSError):
        return None
    img.thumbnail((px, px))
    return np.asarray(img)


def draw_map(xy: np.ndarray, classes: list[str] | None, title: str, paths: list[str] | None = None,
             thumbnails: int = 0, seed: int = 0, thumb_px: int = 48) -> Any:
    """The map as a matplotlib figure: points coloured by class (a legend up to ``LEGEND_MAX`` classes, else a
    colour map and no legend), and ``thumbnails`` images from ``paths`` at spread-out points, framed in their
    class's colour (unreadable images are skipped)."""
    import matplotlib

    from neardup.evaluation.plots import figure

    names = sorted(set(classes)) if classes is not None else []
    code = {c: i for i, c in enumerate(names)}
    codes = np.array([code[c] for c in classes]) if classes is not None else np.zeros(len(xy), dtype=np.int64)
    legend = 0 < len(names) <= LEGEND_MAX
    cmap = matplotlib.colormaps[("tab10" if len(names) <= 10 else "tab20") if legend else "turbo"]

    def colour(i: int) -> Any:
        if not names:
            return "tab:blue"
        return cmap(i % cmap.N) if legend else cmap(i / max(len(names) - 1, 1))

    fig, ax = figure(figsize=(9.5 if legend else 8, 8))
    if legend:
        for i, c in enumerate(names):
            sel = codes == i
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=colour(i), linewidths=0,
                       label=f"{str(c)[:24]} ({int(sel.sum())})")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2, frameon=False,
                  title="class (images)")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color=[colour(int(i)) for i in codes], linewidths=0)
        if names:
            title += f"\n{len(names)} classes (colour = class; too many for a legend)"
    if thumbnails and paths is not None:
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        for i in spread_points(xy, thumbnails, seed):
            img = _thumbnail(paths[i], thumb_px)
            if img is None:
                continue
            box = AnnotationBbox(OffsetImage(img, zoom=0.45), (xy[i, 0], xy[i, 1]), frameon=True, pad=0.1,
                                 bboxprops={"edgecolor": colour(int(codes[i])), "linewidth": 1.5})
            ax.add_artist(box)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_map(xy: np.ndarray, classes: list[str] | None, out_base: str | Path, title: str,
             paths: list[str] | None = None, thumbnails: int = 0, seed: int = 0) -> list[Path]:
    """:func:`draw_map` written to ``out_base``.png and ``out_base``.pdf; returns the files."""
    from neardup.evaluation.plots import save

    base = Path(out_base)
    fig = draw_map(xy, classes, title, paths, thumbnails, seed)
    return save(fig, base.with_suffix(".png"), base.with_suffix(".pdf"), dpi=130)


#: Everything ``embed-map`` writes in its --out: replaced whole by a re-run.
OWNED = ("map.png", "map.pdf", "embedding.csv", "config.yaml")


def write_map(out: str | Path, xy: np.ndarray, paths: list[str], classes: list[str] | None, title: str,
              thumbnails: int = 0, seed: int = 0) -> list[Path]:
    """``embedding.csv`` (path, class, x, y) and the map as ``map.png`` and ``map.pdf``; returns the files.

    The caller owns ``out`` first (``claim_out_dir(out, "embed-map", owned=OWNED)``).
    """
    import csv
    import io

    from neardup.io_utils import atomic_write_text

    out = Path(out)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "class", "x", "y"])
    for i, p in enumerate(paths):
        w.writerow([p, classes[i] if classes is not None else "", f"{xy[i, 0]:.6f}", f"{xy[i, 1]:.6f}"])
    atomic_write_text(out / "embedding.csv", buf.getvalue())
    return [out / "embedding.csv", *plot_map(xy, classes, out / "map", title, paths, thumbnails, seed)]
