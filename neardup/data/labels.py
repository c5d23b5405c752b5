"""Class labels of an image collection, for labelled training and class-level retrieval evaluation.

Three sources, one result (:class:`Labels`):

- a CSV with a ``path`` column and a ``label`` (or ``class``) column; relative paths are relative to the CSV's folder;
- class folders: ``ROOT/<class>/**/<image>``;
- a ``neardup attack`` manifest: each source image and its attacked copies form one class (BINDER's protocol,
  which makes a labelled near-duplicate task out of any photo folder).

Paths are stored absolute and normalised, so labels match feature stores and datasets from any working folder.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neardup.errors import UsageError

#: accepted names of the class column of a labels CSV, in order of preference
LABEL_COLUMNS = ("label", "class")


def _norm(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(path))


@dataclass(frozen=True)
class Labels:
    """``classes[i]`` is the class of ``paths[i]`` (absolute, normalised); ``source`` says where they came from."""

    paths: tuple[str, ...]
    classes: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.classes):
            raise ValueError("paths and classes differ in length")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def names(self) -> list[str]:
        """The class names, sorted: class code ``c`` is ``names[c]``."""
        return sorted(set(self.classes))

    def codes(self) -> np.ndarray:
        """Integer class codes (int64), in the order of :attr:`names`."""
        index = {n: c for c, n in enumerate(self.names)}
        return np.array([index[c] for c in self.classes], dtype=np.int64)

    def counts(self) -> Counter[str]:
        return Counter(self.classes)

    def subset(self, keep: np.ndarray | list[bool]) -> Labels:
        mask = np.asarray(keep, dtype=bool)
        return Labels(tuple(p for p, k in zip(self.paths, mask, strict=True) if k),
                      tuple(c for c, k in zip(self.classes, mask, strict=True) if k), self.source)

    def for_paths(self, paths: list[str] | tuple[str, ...], what: str = "feature") -> list[str]:
        """The class of each of ``paths`` (e.g. a feature store's rows).

        Raises:
            UsageError: a path without a label (names the first, and how many).
        """
        index = dict(zip(self.paths, self.classes, strict=True))
        out: list[str] = []
        missing: list[str] = []
        for p in paths:
            c = index.get(_norm(p))
            if c is None:
                missing.append(str(p))
            else:
                out.append(c)
        if missing:
            raise UsageError(f"{len(missing)} {what} path(s) have no label in {self.source}, e.g. {missing[0]}")
        return out

    def check(self, min_per_class: int = 1, why: str = "") -> Labels:
        """Refuse classes with fewer than ``min_per_class`` images (a miner needs pairs: 2), one clear line.

        Raises:
            UsageError: no images, or a class below the minimum (names it).
        """
        if not self.paths:
            raise UsageError(f"no labelled images in {self.source}")
        small = sorted((n, c) for c, n in self.counts().items() if n < min_per_class)
        if small:
            n, c = small[0]
            raise UsageError(f"class {c!r} in {self.source} has {n} image(s); {why or 'it needs'} at least "
                             f"{min_per_class} per class ({len(small)} class(es) too small)")
        return self


def _require_files(paths: list[str], source: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UsageError(f"{len(missing)} labelled file(s) in {source} do not exist, e.g. {missing[0]}")


def labels_from_csv(path: str | os.PathLike) -> Labels:
    """Labels from a CSV with ``path`` and ``label``/``class`` columns (UTF-8; relative paths: to the CSV's folder).

    Raises:
        UsageError: unreadable or malformed CSV, missing columns, an empty label, a path listed twice with
            different labels, or a listed file that does not exist.
    """
    from neardup.io_utils import read_text

    src = Path(path)
    if not src.is_file():
        raise UsageError(f"labels file not found: {src}")
    text = read_text(src, "labels file")  # unreadable or not UTF-8: one clear line
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        fields = reader.fieldnames or []
        col = next((c for c in LABEL_COLUMNS if c in fields), None)
        if "path" not in fields or col is None:
            raise UsageError(f"labels file {src} needs a 'path' column and a 'label' (or 'class') column; "
                             f"it has {fields}")
        seen: dict[str, str] = {}
        for r in reader:
            if None in r:
                raise UsageError(f"labels file {src} line {reader.line_num} has more fields than the header")
            p, c = (r.get("path") or "").strip(), (r.get(col) or "").strip()
            if not p or not c:
                raise UsageError(f"labels file {src} line {reader.line_num}: an empty path or label")
            full = _norm(src.parent / p)
            if seen.get(full, c) != c:
                raise UsageError(f"labels file {src} line {reader.line_num}: {p} is labelled both "
                                 f"{seen[full]!r} and {c!r}")
            seen[full] = c
    except csv.Error as exc:
        raise UsageError(f"labels file {src} is not a valid CSV file ({exc})") from None
    if not seen:
        raise UsageError(f"labels file {src} lists no images")
    paths = sorted(seen)
    _require_files(paths, str(src))
    return Labels(tuple(paths), tuple(seen[p] for p in paths), str(src))


def labels_from_folders(root: str | os.PathLike) -> Labels:
    """Labels from class folders: every image under ``ROOT/<class>/`` (recursively) has class ``<class>``.

    Raises:
        UsageError: not a folder, images directly in ROOT (they would have no class), no class folder, or
            an empty class folder.
    """
    from neardup.data.images import walk_images

    base = Path(root)
    if not base.is_dir():
        raise UsageError(f"--class-folders needs a folder of class folders, got {base}")
    loose = [p for p in walk_images(base, recursive=False).paths]
    if loose:
        raise UsageError(f"{len(loose)} image(s) lie directly in {base} (e.g. {loose[0].name}); with class folders "
                         "every image must be inside a <class>/ folder")
    classes = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UsageError(f"no class folders in {base}")
    pairs: list[tuple[str, str]] = []
    for d in classes:
        found = walk_images(d).paths
        if not found:
            raise UsageError(f"class folder {d} holds no images (an empty class)")
        pairs.extend((_norm(p), d.name) for p in found)
    pairs.sort()
    return Labels(tuple(p for p, _ in pairs), tuple(c for _, c in pairs), str(base))


def labels_from_manifest(query_dir: str | os.PathLike, include_sources: bool = True) -> Labels:
    """Each source image and its attacked copies as one class (classes named by the source id).

    ``query_dir`` is a ``neardup attack`` output folder (or its manifest.csv). The source images are included
    when ``include_sources`` and their recorded path can be found (as recorded, or relative to the folder).

    Raises:
        UsageError: a missing or bad manifest, or listed copies that do not exist.
    """
    from neardup.data.manifest import MANIFEST_NAME, read_manifest

    p = Path(query_dir)
    folder = p if p.is_dir() else p.parent
    rows = read_manifest(p if not p.is_dir() else p / MANIFEST_NAME)
    found: dict[str, str] = {}
    for r in rows:
        found[_norm(folder / r.query)] = r.source
    _require_files(sorted(found), str(folder / MANIFEST_NAME))
    if include_sources:
        for r in rows:
            if not r.source_path:
                continue
            for cand in (Path(r.source_path), folder / r.source_path):
                if cand.is_file():
                    found.setdefault(_norm(cand), r.source)
                    break
    paths = sorted(found)
    return Labels(tuple(paths), tuple(found[q] for q in paths), str(folder / MANIFEST_NAME))


def load_labels(labels: str | None = None, class_folders: str | None = None,
                manifest: str | None = None) -> Labels:
    """The one place the three label options are resolved: exactly one must be given.

    Raises:
        UsageError: none or several given, or what the chosen reader refuses.
    """
    given = [(n, v) for n, v in (("--labels", labels), ("--class-folders", class_folders),
                                 ("--labels-from-manifest", manifest)) if v]
    if len(given) != 1:
        names = ", ".join(n for n, _ in given) if given else "none"
        raise UsageError(f"give exactly one of --labels CSV, --class-folders DIR, --labels-from-manifest DIR "
                         f"(got {names})")
    name, value = given[0]
    if name == "--labels":
        return labels_from_csv(value)
    if name == "--class-folders":
        return labels_from_folders(value)
    return labels_from_manifest(value)
