"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader sees the old file or the new one, never half of one. Tests can kill the writer between
the fsync and the rename by setting MCRAVE_FAULT=kill_before_rename.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FAULT_ENV = "MCRAVE_FAULT"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fault_point(name: str) -> None:
    """Die here, as a crash would, when the environment asks for this fault (tests only)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], *, force: bool = True
) -> Path:
    """Write `path` through `write(file)` atomically; refuse to replace it unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("kill_before_rename")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, force: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), force=force)
