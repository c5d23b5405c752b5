"""Generate a near-duplicate query set: every configured attack on every source image."""

from __future__ import annotations

import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from neardup.data.attacks import AttackSpec, expand_config
from neardup.data.images import ImageDecodeError, Skipped, list_images, load_image
from neardup.data.manifest import MANIFEST_NAME, ManifestRow, image_id, write_manifest
from neardup.errors import UsageError
from neardup.io_utils import atomic_write
from neardup.progress import progress

SAVE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


def builtin_attack_configs() -> list[str]:
    root = resources.files("neardup") / "configs" / "attacks"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_attack_config(name_or_path: str | os.PathLike = "default") -> list[AttackSpec]:
    """Attack instances from a built-in config name (``default``, ``biomedical``) or a YAML file.

    Raises:
        UsageError: unknown name, unreadable or malformed YAML.
    """
    text: str
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UsageError(f"attack config not found: {p}")
        text = p.read_text(encoding="utf-8")
    else:
        if str(name_or_path) not in builtin_attack_configs():
            raise UsageError(f"unknown attack config {str(name_or_path)!r}; built-in: "
                             f"{', '.join(builtin_attack_configs())}, or a path to a .yaml file")
        text = (resources.files("neardup") / "configs" / "attacks" / f"{name_or_path}.yaml").read_text("utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"bad YAML in attack config {name_or_path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("attacks"), list):
        raise UsageError(f"attack config {name_or_path} must be a mapping with an 'attacks' list")
    return expand_config(data["attacks"])


def attack_rng(seed: int, source: str, attack: str) -> np.random.Generator:
    """One generator per (seed, image, attack): output is independent of order and workers."""
    return np.random.default_rng([seed, zlib.crc32(source.encode()), zlib.crc32(attack.encode())])


@dataclass
class AttackReport:
    """What ``neardup attack`` did."""

    n_sources: int
    n_attacks: int
    n_queries: int
    out_dir: str
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n_sources": self.n_sources, "n_attacks": self.n_attacks, "n_queries": self.n_queries,
                "out_dir": self.out_dir, "skipped": [s.__dict__ for s in self.skipped]}


def _save(img: Any, path: Path, fmt: str, quality: int) -> None:
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("jpg", "webp") else {}
    atomic_write(path, lambda f: img.save(f, format=SAVE_FORMATS[fmt], **kwargs))


def _attack_one(job: tuple[str, str, list[AttackSpec], str, int, str, int]) -> tuple[list[ManifestRow], Skipped | None]:
    src_path, source, specs, dst, seed, fmt, quality = job
    try:
        img = load_image(src_path)
    except ImageDecodeError as exc:
        return [], Skipped(src_path, exc.reason)
    rows = []
    for spec in specs:
        out = spec(img, attack_rng(seed, source, spec.name))
        name = f"{source}_{spec.name}.{fmt}"
        _save(out, Path(dst) / name, fmt, quality)
        rows.append(ManifestRow(name, source, src_path, spec.name, spec.family, json.dumps(spec.params, sort_keys=True)))
    return rows, None


def generate_attacks(src: str | os.PathLike, dst: str | os.PathLike, specs: list[AttackSpec], seed: int = 0,
                     fmt: str = "jpg", quality: int = 95, workers: int | None = None,
                     show_progress: bool = True) -> AttackReport:
    """Apply every attack in ``specs`` to every image under ``src``; write images and manifest to ``dst``.

    Args:
        fmt: file format of the queries (``jpg``, ``png`` or ``webp``). Attacks
            are applied in memory; ``jpeg`` attacks compress at their own quality
            before this final encoding.
        quality: quality of the final JPEG/WebP encoding (95 keeps it mild).
        workers: processes (default: all cores). Output does not depend on it.

    Raises:
        UsageError: empty source folder, unknown format, no attacks.
    """
    if fmt not in SAVE_FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(SAVE_FORMATS)}")
    if not specs:
        raise UsageError("no attacks selected")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise UsageError("DST must differ from SRC")
    paths = list_images(src)
    dst.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), image_id(p, src), specs, str(dst), seed, fmt, quality) for p in paths]
    workers = workers or os.cpu_count() or 1
    rows: list[ManifestRow] = []
    skipped: list[Skipped] = []
    bar = progress(total=len(jobs) * len(specs), desc="attack", unit="img", disable=not show_progress)
    if workers == 1:
        results = map(_attack_one, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_attack_one, jobs, chunksize=1)
    try:
        for r, skip in results:
            rows.extend(r)
            if skip:
                skipped.append(skip)
            bar.update(len(specs))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    if not rows:
        raise UsageError(f"no readable images in {src}")
    write_manifest(rows, dst / MANIFEST_NAME)
    return AttackReport(len(paths) - len(skipped), len(specs), len(rows), str(dst), skipped)
