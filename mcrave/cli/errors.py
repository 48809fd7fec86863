"""One-line CLI errors: bad input exits 2 with a message naming the file and the problem."""

from __future__ import annotations

import sys
from collections.abc import Callable


class CLIError(Exception):
    """A user-facing error; the message is printed as is."""


def run_command(name: str, body: Callable[[], int | None]) -> int:
    """Run a command body, turning expected failures into `mcrave NAME: message` and exit 2."""
    try:
        return int(body() or 0)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        print(f"mcrave {name}: {exc}", file=sys.stderr)
        return 2
