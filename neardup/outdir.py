"""Output folders neardup owns: one rule for every command that writes a folder.

A folder written by a command carries ``.neardup.json`` naming that command. Then:

- a new or empty folder is claimed;
- the same command's own folder is reused (resume, or a re-run that replaces its own files);
- a non-empty folder without the marker is refused, unless ``overwrite``: then the command writes
  beside the files already there, and refuses if one of its outputs would replace a file it did not write;
- another command's folder is always refused.

With ``overwrite`` only the files the command declares as its own (``owned`` glob patterns) are
removed. Writers hold an exclusive ``flock`` on ``.neardup.lock`` while they work, so two runs
into one folder cannot interleave: the second gets one clear error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from neardup.errors import UsageError
from neardup.io_utils import atomic_write_json, read_json_object, remove_stale_tmp

MARKER = ".neardup.json"
LOCK = ".neardup.lock"
_OURS = {MARKER, LOCK}


def owner(out: str | os.PathLike) -> str | None:
    """The command that wrote ``out`` (from its marker), or None."""
    marker = Path(out) / MARKER
    if not marker.is_file():
        return None
    try:
        return str(read_json_object(marker, "output marker", ("command",))["command"])
    except UsageError:
        return None


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "writing") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if needed); a second holder gets a UsageError at once."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fh: IO[bytes] = open(folder / LOCK, "ab")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"another neardup process is {what} {folder}; wait for it to finish") from None
            raise
        yield
    finally:
        fh.close()


def remove_files(folder: Path, patterns: Sequence[str]) -> None:
    """Delete the files under ``folder`` matching ``patterns`` (globs), then the folders that became empty.

    Why not ``rmtree``: a folder neardup made can still hold a file the user put there, which must survive.
    """
    dirs: set[Path] = set()
    for pattern in patterns:
        for p in sorted(folder.glob(pattern), reverse=True):
            if p.is_symlink() or p.is_file():
                p.unlink()
                dirs.update(q for q in p.parents if q != folder and q.is_relative_to(folder))
            elif p.is_dir():
                dirs.add(p)
    for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: it holds someone else's file
            d.rmdir()


def _remove_owned(out: Path, owned: Sequence[str]) -> None:
    remove_files(out, owned)


def check_out_file(path: str | os.PathLike, option: str = "--out", schema: str = "neardup.") -> None:
    """Refuse to replace an existing file neardup did not write: a JSON result must carry the schema this
    command writes (``schema`` is its prefix), a figure must name neardup in its metadata."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {p} is a folder; give a file name")
    if not (p.exists() or p.is_symlink()):
        return
    try:
        head = p.read_bytes()[:1 << 16] if p.is_file() and not p.is_symlink() else b""
    except OSError:
        head = b""
    if p.suffix == ".json":
        import json

        try:
            ours = str(json.loads(p.read_text("utf-8")).get("schema", "")).startswith(schema)
        except (ValueError, AttributeError, OSError):
            ours = False
    else:
        ours = FIGURE_TAG.encode() in head
    if not ours:
        raise UsageError(f"{option} {p} exists and was not written by neardup; choose another file name")


#: written into the metadata of every figure neardup saves (matplotlib ``metadata``), so a re-run may replace it
FIGURE_TAG = "neardup"


def check_out_dir(out: str | os.PathLike, command: str, *, overwrite: bool, owned: Sequence[str],
                  recognise: Callable[[Path], bool] | None = None) -> bool:
    """Apply the ownership rule without changing anything; True when ``out`` is this command's own output.

    ``recognise(out)`` identifies output written before markers existed (e.g. a job.json of the right schema).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if not out.exists():
        return False
    entries = [p for p in out.iterdir() if p.name not in _OURS]
    who = owner(out)
    if who == command or (who is None and entries and recognise is not None and recognise(out)):
        return True
    if who is not None and entries:
        raise UsageError(f"--out {out} holds the output of `neardup {who}`; choose another folder")
    if entries and not overwrite:
        raise UsageError(f"--out {out} is not empty and was not written by `neardup {command}`; choose a new "
                         f"or empty folder, or add --overwrite to write beside its files (none of them is removed)")
    clash = sorted(str(p.relative_to(out)) for pattern in owned for p in out.glob(pattern))
    if clash:
        raise UsageError(f"--out {out}: {clash[0]} exists and was not written by neardup; move it away first")
    return False


@contextmanager
def claim_out_dir(out: str | os.PathLike, command: str, *, overwrite: bool = False, owned: Sequence[str] = (),
                  recognise: Callable[[Path], bool] | None = None, lock: bool = True) -> Iterator[bool]:
    """Check, lock and mark ``out`` for ``command``; yields True when it already held this command's output.

    With ``overwrite`` on its own output, the files matching ``owned`` are removed first (nothing else).
    Stale temp files of killed writes are removed. ``lock=False`` is for extra ranks of a distributed
    job whose rank 0 holds the lock.
    """
    out = Path(out)
    own = check_out_dir(out, command, overwrite=overwrite, owned=owned, recognise=recognise)
    out.mkdir(parents=True, exist_ok=True)
    if not lock:
        yield own
        return
    with folder_lock(out, "writing"):
        # checked again under the lock: another writer may have claimed the folder meanwhile
        own = check_out_dir(out, command, overwrite=overwrite, owned=owned, recognise=recognise)
        if own and overwrite:
            _remove_owned(out, owned)
            own = False
        remove_stale_tmp(out)
        if owner(out) != command:
            atomic_write_json(out / MARKER, {"command": command})
        yield own
