"""Generate a near-duplicate query set: every configured attack on every source image.

DST follows the output-folder rule (:mod:`neardup.outdir`): a folder written by another command or
by hand is refused unless ``overwrite`` (then queries are written beside its files, never over them).

Query files are named ``<source id>_<attack name>.<format>``: source ids are unique (see
:func:`neardup.data.manifest.image_ids`), attack names are checked to a safe character set, and every
name is checked to land directly inside DST. ``manifest.csv`` is the commit point: it is removed when
a run starts changing files and written last, so a folder with a manifest is always consistent.

A hidden state file (``.attack-state.json``) records the settings and the files a run may write, so that

- a re-run with the same settings resumes: sources whose queries all exist (and are unchanged since)
  are kept, not redone, e.g. after a full disk;
- a re-run with other settings (``--format``, attacks, fewer sources) removes the queries of earlier
  runs that the new manifest does not list, and only those, so no stale query is left to be counted.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from neardup.data.attacks import AttackSpec, check_unique_names, expand_config
from neardup.data.images import ImageDecodeError, Skipped, list_images, load_image
from neardup.data.manifest import (
    FIELDS,
    MANIFEST_NAME,
    STATE_NAME,
    ManifestRow,
    image_ids,
    query_key,
    read_manifest,
    write_manifest,
)
from neardup.errors import UsageError
from neardup.io_utils import atomic_write, atomic_write_json, parse_yaml, read_json_object, read_text
from neardup.outdir import claim_out_dir, owner
from neardup.progress import progress

SAVE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
CONFIG_NAME = "config.yaml"
#: The longest file name most file systems take (bytes).
MAX_NAME_BYTES = 255


def builtin_attack_configs() -> list[str]:
    root = resources.files("neardup") / "configs" / "attacks"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


#: The keys of an attack set file: ``include`` (built-in set names, loaded first) and ``attacks`` (entries).
SET_KEYS = ("include", "attacks")


def _builtin_text(name: str) -> str:
    return (resources.files("neardup") / "configs" / "attacks" / f"{name}.yaml").read_text("utf-8")


def load_attack_config(name_or_path: str | os.PathLike = "default") -> list[AttackSpec]:
    """Checked attack instances from a built-in set (``default``, ``biomedical``, ``extended``, ``all``) or a YAML file.

    A set is ``{include: [built-in names], attacks: [entries]}`` (either key may be left out): ``all.yaml`` is
    ``include: [default, biomedical, extended]``. Every instance is checked here (names, parameter types and
    ranges, names unique across the included sets), so a bad set fails at once, before any image is read or
    any worker process starts.

    Raises:
        UsageError: unknown name; unreadable, non-UTF-8, oversized or malformed YAML; a bad attack set; an
            ``include`` that is not a list of built-in names, or is circular.
    """
    return _load_set(name_or_path, ())


def _load_set(name_or_path: str | os.PathLike, including: tuple[str, ...]) -> list[AttackSpec]:
    """The set ``name_or_path``, included from the built-in sets ``including`` (outermost first)."""
    p = Path(name_or_path)
    builtin = builtin_attack_configs()
    if p.suffix in (".yaml", ".yml") or p.exists():
        source = f"attack config {p}"
        text = read_text(p, "attack config", max_bytes=1 << 20)
    else:
        if str(name_or_path) not in builtin:
            raise UsageError(f"unknown attack config {str(name_or_path)!r}; built-in: "
                             f"{', '.join(builtin)}, or a path to a .yaml file")
        source = f"attack config {name_or_path}"
        text = _builtin_text(str(name_or_path))
        including = (*including, str(name_or_path))
    data = parse_yaml(text, source)
    if not isinstance(data, dict) or not any(k in data for k in SET_KEYS):
        raise UsageError(f"{source} must be a mapping with an 'attacks' list (and/or an 'include' list)")
    extra = sorted(str(k) for k in data if k not in SET_KEYS)
    if extra:
        raise UsageError(f"{source}: unknown key {extra[0]!r} (the keys are 'include' and 'attacks')")
    include = data.get("include", [])
    if not isinstance(include, list) or ("include" in data and not include):
        raise UsageError(f"{source}: 'include' must be a non-empty list of built-in set names ({', '.join(builtin)})")
    specs: list[AttackSpec] = []
    for name in include:
        if not isinstance(name, str) or name not in builtin:
            raise UsageError(f"{source}: 'include' names {name!r}, not a built-in set ({', '.join(builtin)})")
        if name in including:
            raise UsageError(f"{source}: 'include' of {name!r} is circular ({' -> '.join((*including, name))})")
        specs.extend(_load_set(name, including))
    if "attacks" in data:
        specs.extend(expand_config(data["attacks"], source))
    check_unique_names(specs, source)
    return specs


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
    n_kept: int = 0  # sources whose queries an earlier run with the same settings had already written

    def to_dict(self) -> dict[str, Any]:
        return {"n_sources": self.n_sources, "n_attacks": self.n_attacks, "n_queries": self.n_queries,
                "out_dir": self.out_dir, "skipped": [s.__dict__ for s in self.skipped], "n_kept": self.n_kept}


# --------------------------------------------------------------------------- writing one source's queries
def _save(img: Any, path: Path, fmt: str, quality: int) -> None:
    """Encode in memory, then write atomically: a failed write (disk full) names the file and leaves nothing."""
    kwargs: dict[str, Any] = {"quality": quality} if fmt in ("jpg", "webp") else {}
    buf = io.BytesIO()
    img.save(buf, format=SAVE_FORMATS[fmt], **kwargs)
    data = buf.getvalue()
    try:
        atomic_write(path, lambda f: f.write(data))
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _rows(source: str, src_path: str, specs: list[AttackSpec], names: list[str]) -> list[ManifestRow]:
    return [ManifestRow(n, source, src_path, s.name, s.family, json.dumps(s.params, sort_keys=True))
            for s, n in zip(specs, names, strict=True)]


def _attack_one(job: tuple[str, str, list[AttackSpec], list[str], str, int, str, int]
                ) -> tuple[list[ManifestRow], Skipped | None]:
    src_path, source, specs, names, dst, seed, fmt, quality = job
    try:
        img = load_image(src_path)
    except ImageDecodeError as exc:
        return [], Skipped(src_path, exc.reason)
    for spec, name in zip(specs, names, strict=True):
        _save(spec(img, attack_rng(seed, source, spec.name)), Path(dst) / name, fmt, quality)
    return _rows(source, src_path, specs, names), None


# --------------------------------------------------------------------------- planning (all checks, no writes)
@dataclass
class _Source:
    path: str
    id: str
    stat: list[int] | None
    names: list[str]


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def check_query_name(dst: Path, name: str, origin: str) -> None:
    """A query file name must be one plain, not too long entry directly inside ``dst`` (checked as text and resolved).

    Raises:
        UsageError: naming the file it was made for.
    """
    bad = (not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name
           or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES)
    target = os.path.normpath(os.path.join(dst, name))
    if bad or os.path.dirname(target) != str(dst):
        raise UsageError(f"query file name {name!r} (for {origin}) is not a plain file name inside DST "
                         f"(at most {MAX_NAME_BYTES} bytes); rename the source or the attack")


def _plan(paths: list[Path], src: Path, dst: Path, specs: list[AttackSpec], fmt: str) -> list[_Source]:
    ids = image_ids(paths, src)
    first: dict[str, Path] = {}
    for p, i in zip(paths, ids, strict=True):
        if i in first:
            raise UsageError(f"{first[i]} and {p} both get the image id {i!r} "
                             "(ids name the queries and join them to their source); rename one")
        first[i] = p
    out: list[_Source] = []
    made_for: dict[str, str] = {}
    for p, sid in zip(paths, ids, strict=True):
        names = [f"{sid}_{s.name}.{fmt}" for s in specs]
        for n, s in zip(names, specs, strict=True):
            check_query_name(dst, n, f"{p} x {s.name}")
            other = made_for.setdefault(n, f"{p} x {s.name}")
            if other != f"{p} x {s.name}":
                raise UsageError(f"query file {n} would be written for both {other} and {p} x {s.name}; "
                                 "rename the source or the attack")
        out.append(_Source(str(p), sid, _stat(p), names))
    return out


def fingerprint(specs: list[AttackSpec], seed: int, fmt: str, quality: int) -> str:
    """What makes a query file's content: settings and code version (a resume only keeps files of the same)."""
    from neardup import __version__

    blob = json.dumps({"version": __version__, "seed": seed, "format": fmt, "quality": quality,
                       "attacks": [[s.name, s.attack, s.params] for s in specs]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --------------------------------------------------------------------------- what earlier runs wrote
def _is_legacy_attack_dir(out: Path) -> bool:
    """A query set written before output markers existed: its manifest.csv has exactly neardup's header."""
    try:
        with open(out / MANIFEST_NAME, "rb") as f:
            head = f.readline(4096)
    except OSError:
        return False
    return head.decode("utf-8", "replace").lstrip("\ufeff").strip() == ",".join(FIELDS)


def _child_name(name: Any) -> str | None:
    """``name`` as a plain entry of the folder, or None (a path elsewhere is never treated as ours)."""
    if not isinstance(name, str) or not name:
        return None
    key = query_key(name)
    return None if "/" in key or key in (".", "..") or "\0" in key else key


def _read_state(dst: Path) -> dict[str, Any] | None:
    if not (dst / STATE_NAME).is_file():
        return None
    try:
        state = read_json_object(dst / STATE_NAME, "attack state", ("fingerprint", "sources", "plans"))
    except UsageError:
        return None  # damaged: nothing is trusted, everything is redone
    if not isinstance(state["sources"], dict) or not isinstance(state["plans"], list):
        return None
    return state


def _plan_names(plan: Any) -> list[str]:
    """The file names a recorded plan may have written (malformed entries are ignored)."""
    if not isinstance(plan, dict):
        return []
    if isinstance(plan.get("files"), list):
        names = plan["files"]
    else:
        fmt, attacks, sources = plan.get("format"), plan.get("attacks"), plan.get("sources")
        if not (isinstance(fmt, str) and isinstance(attacks, list) and isinstance(sources, list)):
            return []
        names = [f"{s}_{a}.{fmt}" for s in sources for a in attacks]
    return [n for n in map(_child_name, names) if n]


def _manifest_queries(dst: Path) -> list[str]:
    if not (dst / MANIFEST_NAME).is_file():
        return []
    try:
        rows = read_manifest(dst / MANIFEST_NAME)
    except UsageError:
        return []
    return [n for n in (_child_name(r.query) for r in rows) if n]


def _unlink(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the run
def generate_attacks(src: str | os.PathLike, dst: str | os.PathLike, specs: list[AttackSpec], seed: int = 0,
                     fmt: str = "jpg", quality: int = 95, workers: int | None = None,
                     show_progress: bool = True, overwrite: bool = False,
                     on_commit: Callable[[Path], None] | None = None) -> AttackReport:
    """Apply every attack in ``specs`` to every image under ``src``; write images and manifest to ``dst``.

    Args:
        fmt: file format of the queries (``jpg``, ``png`` or ``webp``). Attacks
            are applied in memory; ``jpeg`` attacks compress at their own quality
            before this final encoding.
        quality: quality of the final JPEG/WebP encoding (95 keeps it mild).
        workers: processes (default: all cores). Output does not depend on it.
        overwrite: redo everything in an earlier ``attack`` output; write beside the files of a
            folder neardup did not write (never over them).
        on_commit: called with ``dst`` while the folder is still locked, just before the manifest
            is written (the CLI writes ``config.yaml`` there).

    Raises:
        UsageError: bad settings, empty or unreadable source folder, DST inside SRC, a DST that is not
            this command's output (without ``overwrite``), colliding or unsafe query names.
        OSError: disk full and other write errors, naming the file; a re-run resumes.
    """
    if fmt not in SAVE_FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(SAVE_FORMATS)}")
    if not specs:
        raise UsageError("no attacks selected")
    for s in specs:
        if not isinstance(s, AttackSpec):
            raise UsageError(f"not an attack: {s!r}")
    check_unique_names(specs, "selected attacks")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise UsageError(f"quality must be an integer in [1, 100], got {quality!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be an integer >= 1, got {workers!r}")
    src, dst = Path(src), Path(dst)
    paths = list_images(src)
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r or src_r in dst_r.parents:
        raise UsageError(f"DST {dst} must not be SRC or inside it (its queries would become sources of a re-run)")
    plan = _plan(paths, src, dst_r, specs, fmt)
    was_ours = dst.is_dir() and (owner(dst) == "attack" or (owner(dst) is None and _is_legacy_attack_dir(dst)))
    if not was_ours and (dst / STATE_NAME).exists():
        raise UsageError(f"{dst / STATE_NAME} exists and was not written by this command here; move it away first")
    owned = [glob.escape(n) for s in plan for n in s.names] + [MANIFEST_NAME, CONFIG_NAME]
    with claim_out_dir(dst, "attack", overwrite=overwrite, owned=owned, recognise=_is_legacy_attack_dir):
        return _run(plan, src, dst, specs, seed, fmt, quality, workers, show_progress, overwrite,
                    was_ours, on_commit)


def _run(plan: list[_Source], src: Path, dst: Path, specs: list[AttackSpec], seed: int, fmt: str, quality: int,
         workers: int | None, show_progress: bool, overwrite: bool, was_ours: bool,
         on_commit: Callable[[Path], None] | None) -> AttackReport:
    state = _read_state(dst) if was_ours else None
    earlier = [p for p in (state["plans"] if state else []) if isinstance(p, dict)]
    legacy = _manifest_queries(dst) if was_ours else []
    if legacy:
        earlier.append({"files": legacy})
    ours = {n for p in earlier for n in _plan_names(p)}
    fp = fingerprint(specs, seed, fmt, quality)
    trusted = state is not None and state.get("fingerprint") == fp and not overwrite
    done, todo, stale_now = [], [], []
    for i, s in enumerate(plan):
        existing = [n for n in s.names if (dst / n).is_file() or (dst / n).is_symlink()]
        foreign = [n for n in existing if n not in ours]
        if foreign:  # only possible in a folder of ours: the claim refused clashes elsewhere
            raise UsageError(f"{dst / foreign[0]} exists and was not written by `neardup attack`; move it away first")
        if (trusted and state is not None and s.stat is not None and len(existing) == len(s.names)
                and state["sources"].get(s.id) == s.stat):
            done.append(i)
        else:
            todo.append(i)
            stale_now.extend(existing)  # made with other settings or from an older source: redone
    new_plan = {"format": fmt, "attacks": [s.name for s in specs], "sources": [s.id for s in plan]}
    stats = {s.id: s.stat for s in plan}
    if todo:
        _unlink(dst / MANIFEST_NAME)  # from here until the new manifest, DST is visibly unfinished
        for n in stale_now:
            _unlink(dst / n)
        _write_state(dst, {"fingerprint": fp, "committed": False, "sources": stats, "plans": [*earlier, new_plan]})
    rows_of: dict[int, list[ManifestRow]] = {i: _rows(plan[i].id, plan[i].path, specs, plan[i].names) for i in done}
    skipped = _generate(plan, todo, rows_of, specs, dst, seed, fmt, quality, workers, show_progress)
    rows = [r for i in range(len(plan)) for r in rows_of.get(i, [])]
    if not rows:
        raise UsageError(f"no readable images in {src}")
    if on_commit is not None:
        on_commit(dst)
    _write(dst / MANIFEST_NAME, lambda: write_manifest(rows, dst / MANIFEST_NAME))  # the commit point
    keep = {n for s in plan for n in s.names}
    for n in {n for p in earlier for n in _plan_names(p)} - keep:
        _unlink(dst / n)
    _write_state(dst, {"fingerprint": fp, "committed": True, "sources": stats, "plans": [new_plan]})
    return AttackReport(len(plan) - len(skipped), len(specs), len(rows), str(dst), skipped, len(done))


def _generate(plan: list[_Source], todo: list[int], rows_of: dict[int, list[ManifestRow]], specs: list[AttackSpec],
              dst: Path, seed: int, fmt: str, quality: int, workers: int | None, show_progress: bool) -> list[Skipped]:
    """Attack the sources ``todo`` (in worker processes), filling ``rows_of``; returns the unreadable sources."""
    jobs = [(plan[i].path, plan[i].id, specs, plan[i].names, str(dst), seed, fmt, quality) for i in todo]
    n_workers = min(workers or os.cpu_count() or 1, max(1, len(jobs)))
    skipped: list[Skipped] = []
    bar = progress(total=len(jobs) * len(specs), desc="attack", unit="img", disable=not show_progress)
    pool = ProcessPoolExecutor(max_workers=n_workers) if n_workers > 1 else None
    try:
        results = pool.map(_attack_one, jobs, chunksize=1) if pool is not None else map(_attack_one, jobs)
        for i, (r, skip) in zip(todo, results, strict=True):
            rows_of[i] = r
            if skip:
                skipped.append(skip)
            bar.update(len(specs))
    except BaseException:
        if pool is not None:  # do not let queued jobs run on (e.g. onto a full disk)
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    return skipped


def _write(path: Path, write: Callable[[], None]) -> None:
    """Run ``write``; an OSError without a file name gets ``path`` (the CLI names it in its one line)."""
    try:
        write()
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _write_state(dst: Path, state: dict[str, Any]) -> None:
    _write(dst / STATE_NAME, lambda: atomic_write_json(dst / STATE_NAME, state))
