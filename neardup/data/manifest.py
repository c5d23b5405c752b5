"""The ground truth of a query set: which source image each query was made from.

``manifest.csv`` columns: ``query`` (path relative to the manifest's folder),
``source`` (source image id), ``source_path``, ``attack`` (instance name),
``family`` (registered attack) and ``params`` (JSON). The manifest is
authoritative: a file of the query folder that it does not list is not a query.
Only where no manifest exists (and the folder is not an unfinished ``neardup
attack`` output), queries named ``<source>_<attack>.<ext>`` are parsed against
the known attack names.

Ids: an image's id is its path relative to its folder without the extension
(``sub/cat.jpg`` -> ``sub__cat``), the key that joins features, manifests and
ground truth. Where two files differ only in extension (``cat.jpg``, ``cat.png``)
both keep it (``cat.jpg``, ``cat.png``), so ids stay unique: see :func:`image_ids`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from neardup.errors import UsageError
from neardup.io_utils import atomic_write_text

MANIFEST_NAME = "manifest.csv"
#: ``neardup attack``'s record of a run in progress (see :mod:`neardup.data.generate`).
STATE_NAME = ".attack-state.json"
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


def _rel(path: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    p = Path(path)
    if root is not None:
        try:
            return p.relative_to(root)
        except ValueError:
            pass
    return Path(p.name)


def image_ids(paths: Sequence[str | os.PathLike], root: str | os.PathLike | None = None) -> list[str]:
    """Ids of a set of images (``root``-relative, see :func:`image_id`), unique where extensions tell them apart.

    Files whose ids would collide because they differ only in extension (``cat.jpg``, ``cat.png``) keep
    the extension (ids ``cat.jpg``, ``cat.png``); every other id is unchanged, so existing query sets,
    feature folders and their ground truth keep their ids. Ids can still repeat only for paths such as
    ``a/b.png`` and ``a__b.png``; callers that need unique ids check for that.
    """
    rels = [_rel(p, root) for p in paths]
    bases = [str(r.with_suffix("")).replace(os.sep, "__") for r in rels]
    counts = Counter(bases)
    return [b if counts[b] == 1 else str(r).replace(os.sep, "__") for b, r in zip(bases, rels, strict=True)]


def query_key(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """How a query file is matched to its manifest row: the path relative to the query folder, with its extension.

    Matching the whole relative path (not the id) is what makes the manifest authoritative: a stale
    ``cat_jpeg_10.png`` beside the listed ``cat_jpeg_10.jpg`` is not counted as that query.
    """
    p = Path(os.path.normpath(path))
    if root is not None:
        r = Path(os.path.normpath(root))
        if p.is_absolute() == r.is_absolute():
            with contextlib.suppress(ValueError):
                p = p.relative_to(r)
        elif not p.is_absolute():
            # a store records the paths as they were given (relative to the cwd of that run) and its root made
            # absolute: the relative path's folder part that ends the root is the root, whatever the cwd is now
            for parent in p.parents:
                if str(parent) != "." and (r.parts[-len(parent.parts):] == parent.parts):
                    p = p.relative_to(parent)
                    break
    return str(p).replace(os.sep, "/")


def write_manifest(rows: list[ManifestRow], path: str | os.PathLike) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(asdict(r))
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a manifest; a folder means ``folder/manifest.csv``.

    ``query`` and ``source_path`` may be absolute or contain ``..`` (they name files to read, never to write).

    Raises:
        UsageError: missing file, not UTF-8, malformed CSV, missing columns, a row without query, source
            or attack, a query listed twice, or no rows.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise UsageError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = _read_rows(csv.DictReader(f), path)
    except UnicodeDecodeError as exc:
        raise UsageError(f"manifest {path} is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise UsageError(f"manifest {path} is not a valid CSV file ({exc})") from None
    if not rows:
        raise UsageError(f"manifest {path} lists no queries")
    return rows


def _read_rows(reader: csv.DictReader, path: Path) -> list[ManifestRow]:
    missing = [c for c in ("query", "source", "attack") if c not in (reader.fieldnames or [])]
    if missing:
        raise UsageError(f"{path}: manifest lacks columns {missing} (it needs {', '.join(FIELDS)})")
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for r in reader:
        line = reader.line_num
        if None in r:
            raise UsageError(f"manifest {path} line {line} has more fields than the header")
        query, source, attack = r["query"], r["source"], r["attack"]
        if not query or not source or not attack:
            raise UsageError(f"manifest {path} line {line} lacks a query, source or attack")
        key = query_key(query)
        if key in seen:
            raise UsageError(f"manifest {path} line {line}: query {query} is already listed on line {seen[key]}")
        seen[key] = line
        rows.append(ManifestRow(query, source, r.get("source_path") or "", attack,
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

    family_of = {s.name: s.family for s in load_attack_config("all")}
    rows = []
    for p in paths:
        parsed = parse_query_name(p.stem, list(family_of), list(ATTACKS))
        if parsed is None:
            raise UsageError(f"{p.name}: no manifest.csv in {root} and the name is not <source>_<attack>.<ext>")
        source, attack, family = parsed
        family = family_of.get(attack, family)  # a built-in instance's own family (blur_heavy_25 -> gaussian_blur)
        rows.append(ManifestRow(str(p.relative_to(root)), source, "", attack, family, json.dumps({})))
    return rows


def unfinished_attack_run(folder: str | os.PathLike) -> bool:
    """True while (or after a crash of) a ``neardup attack`` run that has not written its manifest yet."""
    from neardup.io_utils import read_json

    state = Path(folder) / STATE_NAME
    if not state.is_file():
        return False
    try:
        data = read_json(state, "attack state")
    except UsageError:
        return True  # damaged: nothing in the folder can be trusted
    return not (isinstance(data, dict) and data.get("committed") is True)


def load_ground_truth(query_dir: str | os.PathLike) -> list[ManifestRow]:
    """The manifest of a query folder, else ground truth parsed from file names.

    Raises:
        UsageError: a bad manifest; a ``neardup attack`` folder without one (an unfinished run, whose files
            must not be taken for queries); names that do not parse.
    """
    from neardup.data.images import list_images

    root = Path(query_dir)
    if (root / MANIFEST_NAME).is_file():
        return read_manifest(root / MANIFEST_NAME)
    if unfinished_attack_run(root):
        raise UsageError(f"{root} is an unfinished `neardup attack` output (no {MANIFEST_NAME}); "
                         "re-run the same command to finish it")
    return manifest_from_names(list_images(root), root)
