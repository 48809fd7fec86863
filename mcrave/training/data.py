"""Deterministic batches: global positions -> (epoch, crop index) -> this rank's rows.

The data order is a pure function of (seed, step, global batch size, dataset length): position
p = step * G + k of the stream reads crop perm_e[p mod L] of epoch e = p // L, where perm_e is the
dataset's seeded whole-epoch permutation (`CropDataset.epoch_indices(e)`). So the saved data-order
state is just those numbers, resume lands on the exact next batch, batches run across epoch ends
without a ragged last batch, and ranks take disjoint rows of the same global batch (which is what
makes 2 ranks x b equal 1 process x 2b).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from mcrave.training.distributed import DistInfo


class CropSource(Protocol):
    """What the trainer needs from a dataset reader (`mcrave.data.dataset.CropDataset`)."""

    def __len__(self) -> int: ...

    def crop(self, epoch: int, index: int) -> np.ndarray:
        """(channels, frames) float32, a deterministic function of (epoch, index)."""
        ...

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """A seeded permutation of range(len(self)) for `epoch`."""
        ...


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 finaliser), so nearby steps get unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class BatchPlan:
    """Which crops make up global batch `step`, and which of them belong to this rank."""

    def __init__(self, source: CropSource, batch: int, seed: int, info: DistInfo) -> None:
        """`seed` must be the one the source was built with (it is part of the order's state)."""
        if len(source) == 0:
            raise ValueError("the dataset has no training crops (files shorter than one crop?)")
        self.source, self.batch, self.seed, self.info = source, batch, seed, info
        self.global_batch = batch * info.world
        self._perm: tuple[int, torch.Tensor] | None = None

    def state(self) -> dict[str, int]:
        """Data-order state stored in checkpoints (checked on resume)."""
        return {"seed": self.seed, "global_batch": self.global_batch, "length": len(self.source)}

    def check_state(self, state: dict[str, int]) -> None:
        if state != self.state():
            raise ValueError(
                f"data order differs from the checkpoint's ({state} != {self.state()}): "
                "resume with the same dataset and number of ranks"
            )

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, self.source.epoch_indices(epoch))
        return self._perm[1]

    def positions(self, step: int) -> list[tuple[int, int]]:
        """(epoch, crop index) of this rank's rows of global batch `step`."""
        rows = range(step * self.global_batch, (step + 1) * self.global_batch)[
            self.info.shard(self.batch)
        ]
        length = len(self.source)
        return [(p // length, int(self._permutation(p // length)[p % length])) for p in rows]

    def audio(self, step: int) -> torch.Tensor:
        """(batch, channels, frames) float32 for this rank."""
        return torch.from_numpy(np.stack([self.source.crop(e, i) for e, i in self.positions(step)]))
