"""What a command prints besides its results: one-line errors (bad input exits 2 with a message
naming the file and the problem; Ctrl-C exits 130 with one line, and outputs are written
atomically, so nothing is half-written) and progress lines."""

from __future__ import annotations

import sys
import time
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
    except KeyboardInterrupt:
        print(f"mcrave {name}: interrupted", file=sys.stderr)
        return 130


def say(command: str, text: str) -> None:
    """A progress or result line on stdout: plain on a terminal, timestamped and prefixed with
    the command when stdout is a log (a job's train.log, a CI run), as `mcrave train` does."""
    if sys.stdout.isatty():
        print(text, flush=True)
    else:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} mcrave {command}: {text}", flush=True)
