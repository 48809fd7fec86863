"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

A reader sees the old file or the new one, never half of one. A writer can be handed a
`before_rename` hook; `mcrave train` and `mcrave prepare` pass `fault_from_env()`, so their tests
can kill them between the fsync and the rename (MCRAVE_FAULT=kill_before_rename) without the
variable reaching any other writer in the process.
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


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fault_from_env() -> Callable[[], None] | None:
    """The `before_rename` hook MCRAVE_FAULT=kill_before_rename asks for (tests only): die there,
    as a crash would. Read by the commands that write datasets and checkpoints, nowhere else."""
    return _die if os.environ.get(FAULT_ENV) == "kill_before_rename" else None


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], None],
    *,
    force: bool = True,
    before_rename: Callable[[], None] | None = None,
) -> Path:
    """Write `path` through `write(file)` atomically; refuse to replace it unless `force`.
    `before_rename` runs between the fsync and the rename (fault-injection tests)."""
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
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes, *, force: bool = True) -> Path:
    return atomic_write(path, lambda f: f.write(data), force=force)
