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

import errno
import fcntl
import os
import shutil
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


def _remove_owned(out: Path, owned: Sequence[str]) -> None:
    for pattern in owned:
        for p in sorted(out.glob(pattern), reverse=True):
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)


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
