"""The one exception type the CLI turns into a single clear line and exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a missing folder, an unknown name, bad YAML, ...

    The message is shown as is, on one line, without a traceback.
    """
