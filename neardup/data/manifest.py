"""The ground truth of a query set: which source image each query was made from.

``manifest.csv`` columns: ``query`` (path relative to the manifest's folder),
``source`` (source image id), ``source_path``, ``attack`` (instance name),
``family`` (registered attack) and ``params`` (JSON). Where no manifest exists,
queries named ``<source>_<attack>.<ext>`` are parsed against the known attack
names.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text

MANIFEST_NAME = "manifest.csv"
FIELDS = ("query", "source", "source_path", "attack", "family", "params")


@dataclass(frozen=True)
class ManifestRow:
    query: str
    source: str
    source_path: str
    attack: str
    family: str
    params: str  # JSON


def image_id(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """Stable id of a source image: its path relative to ``root`` without extension."""
    p = Path(path)
    rel = p.relative_to(root) if root is not None else Path(p.name)
    return str(rel.with_suffix("")).replace(os.sep, "__")


def write_manifest(rows: list[ManifestRow], path: str | os.PathLike) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a manifest; a folder means ``folder/manifest.csv``.

    Raises:
        UsageError: missing file or missing columns.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise UsageError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("query", "source", "attack") if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: manifest lacks columns {missing}")
        rows = []
        for r in reader:
            attack = r["attack"]
            rows.append(ManifestRow(r["query"], r["source"], r.get("source_path", ""), attack,
                                    r.get("family") or attack, r.get("params") or "{}"))
    return rows


def parse_query_name(stem: str, attack_names: list[str], families: list[str]) -> tuple[str, str, str] | None:
    """Split ``<source>_<attack>`` into (source, attack, family), or None if no attack matches."""
    for name in sorted(attack_names, key=len, reverse=True):
        if stem.endswith("_" + name) and len(stem) > len(name) + 1:
            family = next((f for f in sorted(families, key=len, reverse=True) if name.startswith(f)), name)
            return stem[: -len(name) - 1], name, family
    for fam in sorted(families, key=len, reverse=True):
        idx = stem.rfind("_" + fam)
        if idx > 0:
            return stem[:idx], stem[idx + 1:], fam
    return None


def manifest_from_names(paths: list[Path], root: Path) -> list[ManifestRow]:
    """Ground truth from the ``<source>_<attack>.<ext>`` naming convention."""
    from neardup.data.attacks import ATTACKS
    from neardup.data.generate import load_attack_config

    names = [s.name for cfg in ("default", "biomedical") for s in load_attack_config(cfg)]
    rows = []
    for p in paths:
        parsed = parse_query_name(p.stem, names, list(ATTACKS))
        if parsed is None:
            raise UsageError(f"{p.name}: no manifest.csv in {root} and the name is not <source>_<attack>.<ext>")
        source, attack, family = parsed
        rows.append(ManifestRow(str(p.relative_to(root)), source, "", attack, family, json.dumps({})))
    return rows


def load_ground_truth(query_dir: str | os.PathLike) -> list[ManifestRow]:
    """The manifest of a query folder, else ground truth parsed from file names."""
    from neardup.data.images import list_images

    root = Path(query_dir)
    if (root / MANIFEST_NAME).is_file():
        return read_manifest(root / MANIFEST_NAME)
    return manifest_from_names(list_images(root), root)
