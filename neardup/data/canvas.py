"""Offline, deterministic "other" content for overlay and blend attacks: screenshots, backgrounds, stickers.

Why: near-duplicates in the wild are often a photo shown inside something else (a screenshot, a collage) or
with something else on top (another picture, an emoji). Those attacks need a second image that is the same on
every machine and needs no download: photos that ship inside scikit-image (``skimage.data``, read from the
installed package), and pictures drawn here with PIL from the given generator (a fake application window, a
gradient with shapes, a sticker). Text uses Pillow's bundled font (``ImageFont.load_default(size=...)``).

Every function draws only from its ``rng`` argument, so the same generator state gives the same pixels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Colour photos bundled with scikit-image (no download; checked by the tests).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "photo", "share", "like", "follow", "news",
         "today", "best", "friends", "weekend", "summer", "trip", "lol", "wow", "when", "you", "finally", "see",
         "it", "me", "trying", "to", "explain", "my", "code", "monday", "again", "click", "here", "subscribe",
         "download", "free", "offer", "limited", "new", "update", "settings", "profile", "home", "search", "message",
         "reply")


@lru_cache(maxsize=len(PHOTOS))
def photo(name: str) -> Image.Image:
    """A bundled scikit-image photo as RGB (cached per process; callers never modify it)."""
    import skimage.data

    return Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3]).convert("RGB")


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (the same on every machine with the same Pillow)."""
    return ImageFont.load_default(size=max(6, int(size)))


def words(rng: np.random.Generator, n: int) -> str:
    return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), max(1, n)))


def colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in rng.integers(lo, hi, 3))
    return r, g, b


def random_crop(img: Image.Image, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A random crop of ``img`` with the aspect ratio of ``size`` (50-100 % of the largest such crop), resized."""
    w, h = size
    iw, ih = img.size
    cw = min(iw, ih * w / h) * rng.uniform(0.5, 1.0)
    ch = cw * h / w
    x0, y0 = rng.uniform(0, iw - cw), rng.uniform(0, ih - ch)
    return img.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))


def screenshot(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A fake application window of ``size``: title bar with buttons, sidebar, text lines, buttons, a picture box."""
    w, h = size
    dark = rng.random() < 0.3
    bg = colour(rng, 20, 60) if dark else colour(rng, 225, 256)
    fg = (225, 225, 225) if dark else (40, 40, 40)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    bar = max(6, round(h * rng.uniform(0.05, 0.09)))
    d.rectangle((0, 0, w, bar), fill=colour(rng, 40, 200))
    r = max(2, bar // 4)
    for i, c in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        cx = bar // 2 + i * 3 * r
        d.ellipse((cx - r, bar // 2 - r, cx + r, bar // 2 + r), fill=c)
    line = max(6, round(h * rng.uniform(0.025, 0.045)))
    d.text((bar // 2 + 10 * r, (bar - line) // 2), words(rng, 3).title(), font=font(line), fill=(255, 255, 255))
    side = round(w * rng.uniform(0.15, 0.3)) if rng.random() < 0.7 else 0
    if side:
        d.rectangle((0, bar, side, h), fill=colour(rng, 40, 90) if dark else colour(rng, 200, 240))
        for i in range(int((h - bar) / (2 * line))):
            d.text((line // 2, bar + line + i * 2 * line), words(rng, 1), font=font(line), fill=fg)
    x, y = side + line, bar + line
    while y < h - line:
        kind = rng.random()
        if kind < 0.6:  # a line of text
            d.text((x, y), words(rng, int(rng.integers(3, 12))), font=font(line), fill=fg)
            y += round(1.6 * line)
        elif kind < 0.8:  # a row of buttons
            bx = x
            for _ in range(int(rng.integers(1, 4))):
                label = words(rng, 1)
                bw = int(font(line).getlength(label)) + line
                d.rounded_rectangle((bx, y, bx + bw, y + round(1.5 * line)), radius=line // 3,
                                    fill=colour(rng, 30, 220))
                d.text((bx + line // 2, y + line // 4), label, font=font(line), fill=(255, 255, 255))
                bx += bw + line
            y += round(2.2 * line)
        else:  # a picture placeholder
            ph = round(line * rng.uniform(3, 6))
            d.rectangle((x, y, x + round((w - x) * rng.uniform(0.3, 0.8)), y + ph), fill=colour(rng))
            y += ph + line
    return img


def shapes(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A two-colour linear gradient with random ellipses, rectangles and lines on it."""
    w, h = size
    a, b = np.asarray(colour(rng), np.float32), np.asarray(colour(rng), np.float32)
    t = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * math.cos(t) + yy * math.sin(t)
    u = (u - u.min()) / max(1e-6, float(u.max() - u.min()))
    img = Image.fromarray((a + (b - a) * u[..., None]).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, 2) * w)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, 2) * h)
        kind = int(rng.integers(3))
        if kind == 0:
            d.ellipse((x0, y0, x1, y1), fill=colour(rng))
        elif kind == 1:
            d.rectangle((x0, y0, x1, y1), fill=colour(rng))
        else:
            d.line((x0, y0, x1, y1), fill=colour(rng), width=max(1, round(min(w, h) * rng.uniform(0.01, 0.05))))
    return img


def background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A random background: a bundled photo (random crop), a fake screenshot, or a gradient with shapes."""
    kind = rng.random()
    if kind < 0.5:
        return random_crop(photo(PHOTOS[int(rng.integers(len(PHOTOS)))]), rng, size)
    if kind < 0.75:
        return screenshot(rng, size)
    return shapes(rng, size)


def sticker(rng: np.random.Generator, side: int) -> Image.Image:
    """An emoji-like RGBA sticker of ``side`` x ``side`` pixels: a smiley, a star or a heart, transparent around."""
    s = max(4, int(side))
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    ow = max(1, s // 24)
    kind = int(rng.integers(3))
    if kind == 0:  # smiley
        d.ellipse((ow, ow, s - ow - 1, s - ow - 1), fill=(255, 204, 34, 255), outline=(120, 80, 0, 255), width=ow)
        e = s // 10
        for cx in (0.35 * s, 0.65 * s):
            d.ellipse((cx - e, 0.35 * s - e * 1.4, cx + e, 0.35 * s + e * 1.4), fill=(60, 40, 20, 255))
        mouth = rng.uniform(0.15, 0.3) * s
        d.arc((0.25 * s, 0.6 * s - mouth, 0.75 * s, 0.6 * s + mouth), 20, 160, fill=(60, 40, 20, 255),
              width=max(1, s // 16))
    elif kind == 1:  # star
        c = s / 2
        pts = [(c + (c - ow) * (1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5),
                c - (c - ow) * (1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=(*colour(rng, 120, 256), 255), outline=(40, 40, 40, 255))
    else:  # heart
        r = s * 0.26
        fill = (int(rng.integers(200, 256)), int(rng.integers(0, 90)), int(rng.integers(60, 140)), 255)
        d.ellipse((s * 0.5 - 2 * r, s * 0.12, s * 0.5, s * 0.12 + 2 * r), fill=fill)
        d.ellipse((s * 0.5, s * 0.12, s * 0.5 + 2 * r, s * 0.12 + 2 * r), fill=fill)
        d.polygon([(s * 0.5 - 2 * r + 1, s * 0.12 + r * 1.3), (s * 0.5 + 2 * r - 1, s * 0.12 + r * 1.3),
                   (s * 0.5, s * 0.92)], fill=fill)
    return img.rotate(float(rng.uniform(-30, 30)), resample=Image.Resampling.BICUBIC)
