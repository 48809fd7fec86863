"""Crash-safe file writes: write a hidden temp file in the same folder, fsync, rename, fsync the folder.

A reader (or a re-run after a kill) sees either the old file or the complete new one, never a
partial write. Leftover `.*.tmp-*` files from a killed writer are harmless; `remove_stale_temps`
clears them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(binary_file) on a temp file beside `path`, then atomically move it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_with(path, lambda f: f.write(data))


def remove_stale_temps(folder: Path) -> int:
    """Delete temp files a killed writer left in `folder`; returns how many."""
    stale = [p for p in folder.glob(f".*{TEMP_MARK}*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
