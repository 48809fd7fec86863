"""Run-folder checkpoint conventions on top of `mcrave.checkpoint.save_checkpoint` (atomic).

RUN_DIR/checkpoints/step-00001234.ckpt   every `checkpoint_every` steps, the newest `keep_last` kept
RUN_DIR/last.ckpt                         the newest checkpoint (hard link; what --resume reads)
RUN_DIR/best.ckpt                         lowest validation spectral distance so far
Each carries the full training state in `extra`, so any of them resumes a run.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcrave.atomic import fsync_dir
from mcrave.checkpoint import save_checkpoint
from mcrave.config import Config
from mcrave.model import MCRave


class RunCheckpoints:
    def __init__(
        self, run_dir: Path, keep_last: int, before_rename: Callable[[], None] | None = None
    ) -> None:
        self.run_dir = run_dir
        self.before_rename = before_rename
        self.folder = run_dir / "checkpoints"
        self.keep_last = max(1, keep_last)

    @property
    def last(self) -> Path:
        return self.run_dir / "last.ckpt"

    @property
    def best(self) -> Path:
        return self.run_dir / "best.ckpt"

    def save(
        self,
        model: MCRave,
        config: Config,
        step: int,
        extra: dict[str, Any],
        latent_pca: dict[str, Any] | None = None,
    ) -> Path:
        """Write step-N.ckpt atomically, point last.ckpt at it, and drop the oldest ones."""
        path = save_checkpoint(
            self.folder / f"step-{step:08d}.ckpt",
            model,
            step=step,
            extra=extra,
            config=config,
            force=True,
            before_rename=self.before_rename,
            latent_pca=latent_pca,
        )
        self._link(path, self.last)
        for old in sorted(self.folder.glob("step-*.ckpt"))[: -self.keep_last]:
            old.unlink()
        return path

    def mark_best(self, path: Path) -> None:
        self._link(path, self.best)

    def _link(self, source: Path, target: Path) -> None:
        """Atomically make `target` the same file as `source` (hard link, copy as a fallback)."""
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        fsync_dir(target.parent)


def rng_state() -> dict[str, Any]:
    """Global RNG states in a weights_only-loadable form (every training draw is step-seeded too)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
