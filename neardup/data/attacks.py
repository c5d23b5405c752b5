"""Image manipulations ("attacks") that make near-duplicates, as a registry.

Each attack is a function ``fn(img: PIL.Image, rng: np.random.Generator, **params)
-> PIL.Image`` registered under a name with :func:`register_attack`. Adding an
attack means one decorated function and one entry in a YAML config. The same
functions serve ``neardup attack`` and the fine-tuning views.

The original study's 58 attacks are in ``neardup/configs/attacks/default.yaml``
(noise and blur follow scikit-image's ``random_noise`` and OpenCV's kernel-size
conventions); the biomedical near-duplicate manipulations (flips, invert,
perspective, affine, gamma, grayscale) in ``biomedical.yaml``; the extended families
(overlays, padding, meme, stripes, blending, pixelisation, chains: :mod:`neardup.data.attacks_extended`)
in ``extended.yaml``; ``all.yaml`` includes the three.
"""

from __future__ import annotations

import io
import re
import string
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from neardup.data.attack_registry import (  # noqa: F401 - re-exported: the registry's public names
    ATTACKS,
    BOOL,
    AttackDef,
    Float,
    Int,
    Param,
    check_params,
    register_attack,
)
from neardup.data.attack_registry import resize_to as _resize
from neardup.data.attack_registry import to_float as _float
from neardup.data.attack_registry import to_img as _to_img
from neardup.errors import UsageError

#: Characters allowed in an attack instance name (it becomes part of every query's file name).
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")


def check_name(name: Any) -> None:
    """Attack instance names go into file names: a safe character set, no leading dot, at most 100 characters.

    Raises:
        UsageError: naming the bad name.
    """
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(f"attack name {name!r} is not allowed: use 1-100 of the characters A-Z a-z 0-9 . _ - "
                         "and no leading dot (the name becomes part of each query's file name)")


# --------------------------------------------------------------------------- noise
@register_attack("gaussian_noise", var=Float(0, 1))
def gaussian_noise(img: Image.Image, rng: np.random.Generator, var: float) -> Image.Image:
    """Additive Gaussian noise of variance ``var`` on [0, 1] intensities."""
    x = _float(img)
    return _to_img(x + rng.normal(0.0, var ** 0.5, x.shape).astype(np.float32))


@register_attack("speckle_noise", var=Float(0, 1))
def speckle_noise(img: Image.Image, rng: np.random.Generator, var: float) -> Image.Image:
    """Multiplicative noise ``x + x * n``, n ~ N(0, var)."""
    x = _float(img)
    return _to_img(x + x * rng.normal(0.0, var ** 0.5, x.shape).astype(np.float32))


@register_attack("salt_pepper_noise", amount=Float(0, 1))
def salt_pepper_noise(img: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """Replace a fraction ``amount`` of values with 0 or 1 (half each)."""
    x = _float(img).copy()
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    x[hit & salt] = 1.0
    x[hit & ~salt] = 0.0
    return _to_img(x)


# --------------------------------------------------------------------------- filtering
@register_attack("gaussian_blur", kernel=Int(1, 99, odd=True))
def gaussian_blur(img: Image.Image, rng: np.random.Generator, kernel: int) -> Image.Image:
    """Gaussian blur; ``kernel`` is the OpenCV kernel size, sigma from OpenCV's rule."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


@register_attack("median_blur", kernel=Int(1, 15, odd=True))
def median_blur(img: Image.Image, rng: np.random.Generator, kernel: int) -> Image.Image:
    """Median filter of size ``kernel`` x ``kernel``."""
    return img.filter(ImageFilter.MedianFilter(size=int(kernel)))


@register_attack("jpeg", quality=Int(1, 100))
def jpeg(img: Image.Image, rng: np.random.Generator, quality: int) -> Image.Image:
    """JPEG compression at ``quality`` (encoded and decoded in memory)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


# --------------------------------------------------------------------------- geometry
@register_attack("scale", ratio=Float(0.01, 2))
def scale(img: Image.Image, rng: np.random.Generator, ratio: float) -> Image.Image:
    """Resize both sides by ``ratio`` (the output keeps the new size)."""
    w, h = img.size
    return _resize(img, (max(1, round(w * ratio)), max(1, round(h * ratio))))


@register_attack("crop", percent=Float(0, 99), resize=BOOL)
def crop(img: Image.Image, rng: np.random.Generator, percent: float, resize: bool = True) -> Image.Image:
    """Central crop removing ``percent`` % of each side's length, resized back."""
    w, h = img.size
    cw, ch = max(1, round(w * (1 - percent / 100))), max(1, round(h * (1 - percent / 100)))
    left, top = (w - cw) // 2, (h - ch) // 2
    out = img.crop((left, top, left + cw, top + ch))
    return _resize(out, (w, h)) if resize else out


@register_attack("rotation", angle=Float(-360, 360), resize=BOOL)
def rotation(img: Image.Image, rng: np.random.Generator, angle: float, resize: bool = True) -> Image.Image:
    """Rotate by ``angle`` degrees counter-clockwise, canvas expanded, resized back."""
    out = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
    return _resize(out, img.size) if resize else out


@register_attack("shear", angle=Float(-80, 80))
def shear(img: Image.Image, rng: np.random.Generator, angle: float) -> Image.Image:
    """Horizontal shear by ``angle`` degrees about the centre, same size."""
    w, h = img.size
    t = float(np.tan(np.deg2rad(angle)))
    # output (x, y) samples input (x + t * (y - h/2), y)
    return img.transform((w, h), Image.Transform.AFFINE, (1, t, -t * h / 2, 0, 1, 0),
                         resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


# --------------------------------------------------------------------------- enhancement
@register_attack("contrast", factor=Float(0, 10))
def contrast(img: Image.Image, rng: np.random.Generator, factor: float) -> Image.Image:
    """PIL contrast enhancement (1 = unchanged)."""
    return ImageEnhance.Contrast(img).enhance(factor)


@register_attack("color", factor=Float(0, 10))
def color(img: Image.Image, rng: np.random.Generator, factor: float) -> Image.Image:
    """PIL colour-saturation enhancement (1 = unchanged)."""
    return ImageEnhance.Color(img).enhance(factor)


@register_attack("brightness", factor=Float(0, 10))
def brightness(img: Image.Image, rng: np.random.Generator, factor: float) -> Image.Image:
    """PIL brightness enhancement (1 = unchanged)."""
    return ImageEnhance.Brightness(img).enhance(factor)


@register_attack("sharpness", factor=Float(0, 10))
def sharpness(img: Image.Image, rng: np.random.Generator, factor: float) -> Image.Image:
    """PIL sharpness enhancement (1 = unchanged)."""
    return ImageEnhance.Sharpness(img).enhance(factor)


# --------------------------------------------------------------------------- meme text
@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    import matplotlib  # ships DejaVu fonts, so the output is the same on every machine

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size)


TEXT_ALPHABET = string.ascii_letters + string.digits + "!?.,'- "


@register_attack("text", length=Int(1, 500))
def text(img: Image.Image, rng: np.random.Generator, length: int) -> Image.Image:
    """Meme-style random text of ``length`` characters: white, black stroke, top or bottom."""
    w, h = img.size
    chars = rng.choice(list(TEXT_ALPHABET), size=int(length))
    chars[0] = rng.choice(list(string.ascii_uppercase))
    message = "".join(chars)
    size = max(8, min(w, h) // 8)
    while True:  # shrink until the block fits in 90% of the width and 40% of the height
        font = _font(size)
        char_w = max(1.0, font.getlength("M") * 0.8)
        lines = textwrap.wrap(message, width=max(4, int(w * 0.9 / char_w)), break_long_words=True) or [message]
        if size <= 8 or int(size * 1.15) * len(lines) <= 0.4 * h:
            break
        size = max(8, int(size * 0.85))
    out = img.copy()
    draw = ImageDraw.Draw(out)
    line_h = int(size * 1.15)
    block_h = line_h * len(lines)
    top = int(h * 0.04) if rng.random() < 0.5 else h - block_h - int(h * 0.04)
    for i, line in enumerate(lines):
        lw = draw.textlength(line, font=font)
        draw.text(((w - lw) / 2, top + i * line_h), line, font=font, fill=(255, 255, 255),
                  stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return out


# --------------------------------------------------------------------------- biomedical
@register_attack("hflip")
def hflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mirror left-right."""
    return ImageOps.mirror(img)


@register_attack("vflip")
def vflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Flip top-bottom."""
    return ImageOps.flip(img)


@register_attack("invert")
def invert(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Negative image."""
    return ImageOps.invert(img)


@register_attack("gamma", gamma=Float(0.05, 20))
def gamma(img: Image.Image, rng: np.random.Generator, gamma: float) -> Image.Image:
    """Gamma correction ``x ** gamma`` on [0, 1] intensities."""
    lut = [min(255, int(round(255 * (i / 255) ** gamma))) for i in range(256)]
    return img.point(lut * 3)


@register_attack("grayscale")
def grayscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Luminance only, kept as 3 channels."""
    return ImageOps.grayscale(img).convert("RGB")


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src``."""
    a = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(a, dtype=np.float64), src.reshape(8).astype(np.float64)).tolist()


@register_attack("perspective", distortion=Float(0, 0.9))
def perspective(img: Image.Image, rng: np.random.Generator, distortion: float) -> Image.Image:
    """Random perspective: each corner moves inward by up to ``distortion`` of the side."""
    w, h = img.size
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
    dx, dy = distortion * w / 2, distortion * h / 2
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    dst = src + signs * rng.uniform(0, 1, (4, 2)) * np.array([dx, dy])
    return img.transform((w, h), Image.Transform.PERSPECTIVE, _perspective_coeffs(src, dst),
                         resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


@register_attack("affine", scale=Float(0.1, 10), angle=Float(-360, 360), translate=Float(-1, 1))
def affine(img: Image.Image, rng: np.random.Generator, scale: float = 1.0, angle: float = 0.0,
           translate: float = 0.0) -> Image.Image:
    """Scale about the centre, rotate by ``angle`` degrees, shift by ``translate`` of each side."""
    w, h = img.size
    cx, cy = w / 2, h / 2
    a = np.deg2rad(angle)
    fwd = np.array([[scale * np.cos(a), -scale * np.sin(a), 0], [scale * np.sin(a), scale * np.cos(a), 0], [0, 0, 1]])
    to_c = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + translate * w], [0, 1, cy + translate * h], [0, 0, 1]])
    inv = np.linalg.inv(back @ fwd @ to_c)  # PIL wants output -> input
    return img.transform((w, h), Image.Transform.AFFINE, tuple(inv[:2].reshape(6)),
                         resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))


# --------------------------------------------------------------------------- configured instances
@dataclass(frozen=True)
class AttackSpec:
    """One configured attack: a registered function with fixed, checked parameters.

    Checked on construction, so a bad set fails when it is loaded (``neardup attack`` or the
    fine-tuning views), never later inside a worker process.
    """

    name: str  # unique instance name, e.g. "gaussian_noise_0.01"; part of every query's file name
    attack: str  # registry key, also the family in per-family reports
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name)
        check_params(self.attack, self.params)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        return ATTACKS[self.attack].fn(img, rng, **self.params)

    @property
    def family(self) -> str:
        return self.attack


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


ENTRY_KEYS = ("attack", "name", "params")


def _expand_entry(i: int, entry: Any) -> list[AttackSpec]:
    if not isinstance(entry, dict) or "attack" not in entry:
        raise UsageError(f"entry {i + 1} needs an 'attack' key, got {entry!r}")
    unknown = sorted(str(k) for k in entry if k not in ENTRY_KEYS)
    if unknown:
        raise UsageError(f"entry {i + 1} has unknown key {unknown[0]!r}; an entry has {', '.join(ENTRY_KEYS)}")
    attack = entry["attack"]
    if not isinstance(attack, str) or attack not in ATTACKS:
        raise UsageError(f"unknown attack {attack!r}; known: {', '.join(sorted(ATTACKS))}")
    params = entry.get("params")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise UsageError(f"attack {attack!r}: params must be a mapping of parameter names to values, got {params!r}")
    name = entry.get("name", attack)
    check_name(name)
    lists = [k for k, v in params.items() if isinstance(v, list)]
    if len(lists) > 1:
        raise UsageError(f"attack {attack!r}: only one parameter may be a list, got {lists}")
    if not lists:
        return [AttackSpec(name, attack, dict(params))]
    key = lists[0]
    if not params[key]:
        raise UsageError(f"attack {attack!r} parameter {key!r} is an empty list")
    # each value is checked before it is formatted into a name
    specs = []
    for v in params[key]:
        p = {**params, key: v}
        check_params(attack, p)
        specs.append(AttackSpec(f"{name}_{_fmt(v)}", attack, p))
    return specs


def check_unique_names(specs: list[AttackSpec], source: str = "attack set") -> None:
    """Instance names must differ (also in case: they are file names on case-insensitive disks too).

    Raises:
        UsageError: naming the colliding names.
    """
    seen: dict[str, str] = {}
    for s in specs:
        key = s.name.casefold()
        if key in seen:
            raise UsageError(f"{source}: duplicate attack names {seen[key]!r} and {s.name!r} "
                             "(give the entries distinct 'name's)")
        seen[key] = s.name


def expand_config(entries: Any, source: str = "attack config") -> list[AttackSpec]:
    """Expand YAML entries into checked attack instances.

    An entry is ``{attack: NAME, params: {p: value or [values...]}, name: optional}``.
    A list-valued parameter gives one instance per value (at most one list per entry),
    named ``<name>_<value>``.

    Raises:
        UsageError: ``source``, then what is wrong: no entries, an unknown attack or key, a bad name,
            an unknown, missing, mistyped or out-of-range parameter, several list parameters, colliding names.
    """
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{source}: the 'attacks' list is empty or not a list")
    specs: list[AttackSpec] = []
    for i, entry in enumerate(entries):
        try:
            specs.extend(_expand_entry(i, entry))
        except UsageError as exc:
            raise UsageError(f"{source}: {exc}") from None
    check_unique_names(specs, source)
    return specs


# The extended families (overlays, padding, meme, stripes, blend, pixelate, chains) register themselves on import:
# importing this module gives the complete registry. They import only attack_registry, so there is no import cycle.
from neardup.data import attacks_extended  # noqa: E402, F401
