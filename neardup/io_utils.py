"""Atomic file writes and careful reads: a crash never leaves a half-written result, and a bad file
gives one clear error instead of a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from neardup.errors import UsageError

TMP_SUFFIX = ".tmp"
#: Largest YAML file read (config, attack sets): a config is a few KB.
MAX_YAML_BYTES = 1 << 20
#: Largest number of YAML aliases (``*ref``): with at most 16, nesting expands a document at most ~360-fold.
MAX_YAML_ALIASES = 16


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it, then rename it into place.

    The file gets the mode a plain ``open()`` would give (0666 less the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def remove_stale_tmp(folder: str | os.PathLike) -> int:
    """Delete the ``.NAME.*.tmp`` files a killed :func:`atomic_write` left in ``folder``; returns how many."""
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            n += 1
    return n


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> str:
    """A UTF-8 text file, or a UsageError naming it (missing, a folder, too large, not UTF-8)."""
    path = Path(path)
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise UsageError(f"{what} {path} is {path.stat().st_size} bytes; the limit is {max_bytes}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a folder, not a file") from None
    except PermissionError:
        raise UsageError(f"{what} {path}: permission denied") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Parsed JSON, or a UsageError naming the file and the reason."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def read_json_object(path: str | os.PathLike, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object holding at least ``keys``, or a UsageError."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} is not a JSON object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise UsageError(f"{what} {path} lacks {', '.join(missing)}")
    return data


def load_yaml(path: str | os.PathLike, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """``yaml.safe_load`` with a size limit and an alias limit; errors become one UsageError line."""
    return parse_yaml(read_text(path, what, max_bytes=max_bytes), f"{what} {path}")


def parse_yaml(text: str, source: str = "YAML", max_aliases: int = MAX_YAML_ALIASES) -> Any:
    import yaml

    class _Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                _Loader.aliases += 1
                if _Loader.aliases > max_aliases:
                    raise UsageError(f"{source}: more than {max_aliases} YAML aliases (refused: alias expansion)")
            return super().compose_node(parent, index)

    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise UsageError(f"{source}: larger than {MAX_YAML_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: bad YAML: {str(exc).splitlines()[0]}") from None
