"""One-line CLI errors: bad input exits 2 with a message naming the file and the problem;
Ctrl-C exits 130 with one line (outputs are written atomically, so nothing is half-written)."""

from __future__ import annotations

import argparse
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
    except KeyboardInterrupt:
        print(f"mcrave {name}: interrupted", file=sys.stderr)
        return 130


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, one per core)",
    )


def apply_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise CLIError(f"--threads {threads}: must be at least 1")
    import torch

    torch.set_num_threads(threads)
