"""The extended attack families: the manipulations the pretrained model misses and SSCD trains on.

Why: the original study's set (``default.yaml``) leaves out what near-duplicates on the web most often go
through: a photo shown small inside a screenshot or on another background, something pasted over it (another
picture, an emoji), padding and frames, the meme format (a caption bar), stripes and grids drawn over it, blending
with another picture, pixelisation, and several of these at once. SSCD (Pizzi et al., A Self-Supervised
Descriptor for Image Copy Detection, CVPR 2022) trains on these (from AugLy) and its "strong" recipe chains them.

Every family is one registered function (see :mod:`neardup.data.attacks`), deterministic given its ``rng``,
returning RGB. The second images come from :mod:`neardup.data.canvas` (bundled photos and drawn pictures, no
download). The sets are ``neardup/configs/attacks/extended.yaml`` and ``all.yaml``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from neardup.data import canvas
from neardup.data.attack_registry import ATTACKS, Float, Int, check_params, register_attack
from neardup.data.attack_registry import resize_to as _resize
from neardup.data.attack_registry import to_float as _float
from neardup.data.attack_registry import to_img as _to_img


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _place(outer: tuple[int, int], inner: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly random top-left corner for ``inner`` fully inside ``outer``."""
    return int(rng.integers(0, outer[0] - inner[0] + 1)), int(rng.integers(0, outer[1] - inner[1] + 1))


def _onto(img: Image.Image, bg: Image.Image, scale: float, rng: np.random.Generator) -> Image.Image:
    piece = _resize(img, _scaled(bg.size, scale))
    bg.paste(piece, _place(bg.size, piece.size, rng))
    return bg


# --------------------------------------------------------------------------- the image inside something else
@register_attack("overlay_onto_screenshot", scale=Float(0.05, 1))
def overlay_onto_screenshot(img: Image.Image, rng: np.random.Generator, scale: float) -> Image.Image:
    """The image shrunk to ``scale`` of each side, pasted at a random place on a fake screenshot.

    The screenshot has the input's size (so does the output); the pasted copy is
    ``(round(w * scale), round(h * scale))``, unchanged otherwise.
    """
    return _onto(img, canvas.screenshot(rng, img.size), scale, rng)


@register_attack("overlay_onto_background", scale=Float(0.05, 1))
def overlay_onto_background(img: Image.Image, rng: np.random.Generator, scale: float) -> Image.Image:
    """The image shrunk to ``scale`` of each side, pasted on a random background (photo, screenshot or shapes).

    Same geometry as ``overlay_onto_screenshot``: output of the input's size, the copy ``scale`` times as wide and high.
    """
    return _onto(img, canvas.background(rng, img.size), scale, rng)


@register_attack("pad", fraction=Float(0, 3))
def pad(img: Image.Image, rng: np.random.Generator, fraction: float) -> Image.Image:
    """Padding in one random colour: the output is ``(w + round(w * fraction), h + round(h * fraction))``.

    The image is placed at a random offset inside it (unequal margins, as in AugLy's pad).
    """
    w, h = img.size
    out = Image.new("RGB", (w + round(w * fraction), h + round(h * fraction)), canvas.colour(rng))
    out.paste(img, _place(out.size, img.size, rng))
    return out


@register_attack("frame", width=Float(0.01, 0.4))
def frame(img: Image.Image, rng: np.random.Generator, width: float) -> Image.Image:
    """A patterned frame (solid, diagonal stripes or checks, with an inner line) ``width`` of the short side thick.

    The output keeps the input's size: the image is shrunk to fit inside the frame.
    """
    w, h = img.size
    t = max(1, round(width * min(w, h)))
    a, b = np.asarray(canvas.colour(rng), np.uint8), np.asarray(canvas.colour(rng), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(2, t // 2)
    kind = int(rng.integers(3))
    mask = np.zeros((h, w), bool) if kind == 0 else (((xx + yy) // period) % 2 == 1) if kind == 1 \
        else ((xx // period + yy // period) % 2 == 1)
    out = Image.fromarray(np.where(mask[..., None], b, a), "RGB")
    line = max(1, t // 5)
    ImageDraw.Draw(out).rectangle((t - line, t - line, w - t + line - 1, h - t + line - 1), fill=canvas.colour(rng))
    out.paste(_resize(img, (max(1, w - 2 * t), max(1, h - 2 * t))), (t, t))
    return out


def _wrap(text: str, font: Any, max_w: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_w:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


@register_attack("meme", bar=Float(0.05, 3))
def meme(img: Image.Image, rng: np.random.Generator, bar: float) -> Image.Image:
    """Meme format: a caption bar of height ``round(h * bar)`` with random words, above (70 %) or below the image.

    The output is ``(w, h + round(h * bar))``; the bar is white with black text, or black with white text.
    """
    w, h = img.size
    bh = max(1, round(h * bar))
    dark = rng.random() < 0.25
    top = rng.random() < 0.7
    out = Image.new("RGB", (w, h + bh), (0, 0, 0) if dark else (255, 255, 255))
    out.paste(img, (0, bh if top else 0))
    message = canvas.words(rng, int(rng.integers(3, 10)))
    size = max(6, round(min(bh * 0.45, w * 0.12)))
    while True:  # the largest font size whose wrapped caption fits in 90 % of the bar
        font = canvas.font(size)
        lines = _wrap(message, font, 0.9 * w)
        if size <= 6 or (len(lines) * size * 1.2 <= 0.9 * bh and max(font.getlength(x) for x in lines) <= 0.9 * w):
            break
        size = max(6, int(size * 0.85))
    d = ImageDraw.Draw(out)
    y0 = (0 if top else h) + (bh - len(lines) * size * 1.2) / 2
    for i, text_line in enumerate(lines):
        d.text(((w - font.getlength(text_line)) / 2, y0 + i * size * 1.2), text_line, font=font,
               fill=(255, 255, 255) if dark else (0, 0, 0))
    return out


# --------------------------------------------------------------------------- something over the image
@register_attack("overlay_image", size=Float(0.05, 1), opacity=Float(0, 1))
def overlay_image(img: Image.Image, rng: np.random.Generator, size: float, opacity: float = 1.0) -> Image.Image:
    """Another image (photo, screenshot or shapes), ``size`` times each side, pasted at a random place.

    ``opacity`` 1 hides what it covers (a ``size**2`` share of the area); the output keeps the input's size.
    """
    other = canvas.background(rng, _scaled(img.size, size))
    out = img.copy()
    out.paste(other, _place(img.size, other.size, rng), Image.new("L", other.size, round(255 * opacity)))
    return out


@register_attack("overlay_emoji", size=Float(0.05, 1), opacity=Float(0, 1))
def overlay_emoji(img: Image.Image, rng: np.random.Generator, size: float, opacity: float = 1.0) -> Image.Image:
    """An emoji-like sticker (smiley, star or heart) ``size`` of the short side wide, at a random place.

    The output keeps the input's size.
    """
    w, h = img.size
    s = canvas.sticker(rng, max(4, round(size * min(w, h))))
    alpha = s.getchannel("A").point(lambda v: round(v * opacity))
    out = img.copy()
    out.paste(s.convert("RGB"), _place(img.size, s.size, rng), alpha)
    return out


def _band(shape: tuple[int, int], angle: float, count: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of ``count`` parallel stripes across the diagonal at ``angle``, covering ``density`` of it."""
    h, w = shape
    period = math.hypot(w, h) / count
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(angle) + yy * math.sin(angle) + rng.uniform(0, period)
    return np.mod(u, period) < density * period


def _draw_mask(img: Image.Image, mask: np.ndarray, opacity: float, rng: np.random.Generator) -> Image.Image:
    x = _float(img)
    c = np.asarray(canvas.colour(rng), np.float32) / 255.0
    a = (mask * opacity).astype(np.float32)[..., None]
    return _to_img(x * (1 - a) + c * a)


@register_attack("stripes", density=Float(0.01, 1), count=Int(1, 100), opacity=Float(0, 1))
def stripes(img: Image.Image, rng: np.random.Generator, density: float, count: int = 8,
            opacity: float = 1.0) -> Image.Image:
    """``count`` parallel stripes of one random colour and angle covering ``density`` of the image; same size."""
    mask = _band((img.height, img.width), rng.uniform(0, math.pi), count, density, rng)
    return _draw_mask(img, mask, opacity, rng)


@register_attack("grid", density=Float(0.01, 1), count=Int(1, 100), opacity=Float(0, 1))
def grid(img: Image.Image, rng: np.random.Generator, density: float, count: int = 8,
         opacity: float = 1.0) -> Image.Image:
    """A grid: two perpendicular sets of ``count`` lines, each covering ``density`` across; same size."""
    t = rng.uniform(0, math.pi / 2)
    shape = (img.height, img.width)
    mask = _band(shape, t, count, density, rng) | _band(shape, t + math.pi / 2, count, density, rng)
    return _draw_mask(img, mask, opacity, rng)


@register_attack("blend", alpha=Float(0, 1))
def blend(img: Image.Image, rng: np.random.Generator, alpha: float) -> Image.Image:
    """Opacity blending ``(1 - alpha) * image + alpha * other`` with a random other image of the same size."""
    return Image.blend(img, canvas.background(rng, img.size), alpha)


@register_attack("pixelate", block=Float(0.001, 0.5))
def pixelate(img: Image.Image, rng: np.random.Generator, block: float) -> Image.Image:
    """Pixelisation: squares of ``round(block * short side)`` pixels from the top-left, each its mean colour.

    Same size; the last row and column of blocks may be narrower.
    """
    k = max(1, round(block * min(img.size)))
    x = np.asarray(img, dtype=np.float64)
    h, w = x.shape[:2]
    rows, cols = np.arange(0, h, k), np.arange(0, w, k)
    sums = np.add.reduceat(np.add.reduceat(x, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))[..., None]
    means = np.round(sums / counts).astype(np.uint8)
    return Image.fromarray(np.repeat(np.repeat(means, k, axis=0)[:h], k, axis=1)[:, :w], "RGB")


# --------------------------------------------------------------------------- chains
#: What ``chain`` draws from: cheap attacks with moderate parameter ranges (lo, hi), as SSCD's strong recipe.
CHAIN_POOL: tuple[tuple[str, dict[str, tuple[float, float]]], ...] = (
    ("jpeg", {"quality": (15, 50)}),
    ("gaussian_blur", {"kernel": (5, 15)}),
    ("gaussian_noise", {"var": (0.005, 0.03)}),
    ("crop", {"percent": (10, 40)}),
    ("rotation", {"angle": (-30, 30)}),
    ("scale", {"ratio": (0.3, 0.7)}),
    ("brightness", {"factor": (0.5, 1.5)}),
    ("color", {"factor": (0, 2)}),
    ("grayscale", {}),
    ("hflip", {}),
    ("perspective", {"distortion": (0.1, 0.3)}),
    ("text", {"length": (10, 40)}),
    ("pad", {"fraction": (0.1, 0.6)}),
    ("pixelate", {"block": (0.01, 0.04)}),
    ("overlay_emoji", {"size": (0.2, 0.4)}),
    ("stripes", {"density": (0.1, 0.3)}),
    ("meme", {"bar": (0.15, 0.35)}),
    ("overlay_onto_background", {"scale": (0.4, 0.8)}),
    ("blend", {"alpha": (0.2, 0.4)}),
)


def plan_chain(rng: np.random.Generator, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The ``n`` distinct attacks (and parameters) a chain applies, drawn from ``rng`` out of :data:`CHAIN_POOL`.

    ``chain`` calls this first with its own generator, so ``plan_chain(attack_rng(seed, source, name), n)``
    tells which attacks made a query: the same seed gives the same chain.
    """
    import neardup.data.attacks  # noqa: F401 - the pool's study attacks are registered there (lazy: no cycle)

    steps = []
    for i in rng.choice(len(CHAIN_POOL), size=n, replace=False):
        attack, ranges = CHAIN_POOL[int(i)]
        params: dict[str, Any] = {}
        for p, (lo, hi) in ranges.items():
            decl = ATTACKS[attack].params[p]
            if decl.kind is int:
                v = int(rng.integers(int(lo), int(hi) + 1))
                params[p] = v - 1 if decl.odd and v % 2 == 0 else v
            else:
                params[p] = round(float(rng.uniform(lo, hi)), 3)
        check_params(attack, params)
        steps.append((attack, params))
    return steps


@register_attack("chain", n=Int(1, 4))
def chain(img: Image.Image, rng: np.random.Generator, n: int) -> Image.Image:
    """``n`` different cheap attacks in a row, drawn from the rng out of CHAIN_POOL; the size follows them.

    :func:`plan_chain` tells which; the output's ``info["neardup_chain"]`` lists them as JSON
    ``[[attack, params], ...]``.
    """
    out = img
    steps = plan_chain(rng, n)
    for attack, params in steps:
        out = ATTACKS[attack].fn(out, rng, **params)
    out = out.copy() if out is img else out
    out.info["neardup_chain"] = json.dumps(steps)
    return out
