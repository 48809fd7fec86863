"""Options shared by several commands, spelled once (the README's vocabulary table)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from mcrave.cli.console import CLIError


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: half the cores this process may use, at least 1)",
    )


def add_runtime_option(parser: argparse.ArgumentParser, what: str = "engine runtime") -> None:
    from mcrave.config import DEFAULT_RUNTIME, RUNTIMES

    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=DEFAULT_RUNTIME,
        help=f"{what} (default %(default)s; torchscript-bf16 and, on CPU, torchscript-int8 run "
        "large models faster but are not float32-equal: bench/README.md)",
    )


def default_threads() -> int:
    """Half the usable cores: measured (bench/threads_bench.py, quiet 2-core machine, demo-stereo,
    one run) one thread gave up 10-15 % idle against torch's default of one per core (offline
    8.3x vs 9.7x RT, --chunk 2048 4.7x vs 5.3x) and ran 1.2x faster offline and 2x faster
    chunked beside a busy process (7.3x vs 6.0x, 4.6x vs 2.3x): the default must not starve,
    or be starved by, the other work on the machine."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (usable or 1) // 2)


def apply_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise CLIError(f"--threads {threads}: must be at least 1")
    import torch

    torch.set_num_threads(threads or default_threads())


def add_old_spelling(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs: Any) -> None:
    """Keep a renamed option working without showing it: --help lists one vocabulary (the
    README's table), scripts written against the old name still run."""
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, **kwargs)


def require_option(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str) -> None:
    """argparse's own 'required' cannot see an old spelling that fills the same field."""
    if getattr(args, dest) is None:
        shown = next(a for a in parser._actions if a.dest == dest and a.help != argparse.SUPPRESS)
        parser.error(f"the following arguments are required: {'/'.join(shown.option_strings)}")
