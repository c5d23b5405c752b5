"""One progress-bar factory, so every long loop looks and behaves the same."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False, **kw: Any) -> tqdm:
    """A tqdm bar on stderr with rate and ETA; in logs (no TTY) it updates every 30 s instead of spamming."""
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kw.setdefault("mininterval", 0.2 if tty else 30.0)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, **kw)
