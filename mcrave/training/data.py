"""Deterministic batches: global positions -> (epoch, crop index) -> this rank's rows.

The data order is a pure function of (seed, step, global batch size, dataset length): position
p = step * G + k of the stream reads crop perm_epoch[p mod L] of epoch p // L, where perm_epoch is
a seeded permutation. So the saved data-order state is just those numbers, resume lands on the
exact next batch, and ranks take disjoint rows of the same global batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from mcrave.training.distributed import DistInfo


class CropSource(Protocol):
    """What the trainer needs from a dataset reader."""

    def __len__(self) -> int: ...

    def crop(self, epoch: int, index: int) -> np.ndarray:
        """(channels, frames) float32, a deterministic function of (epoch, index)."""
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
            raise ValueError(f"data order differs from the checkpoint's: {state} != {self.state()}")

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A))
            self._perm = (epoch, torch.randperm(len(self.source), generator=gen))
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


class ManifestCrops:
    """Minimal reader of DATASET/manifest.json + float32 (frames, N) .npy shards, memory-mapped.

    Epoch e cuts each file into crop-length slots shifted by a seeded offset, so every epoch sees
    different crop boundaries.
    """

    def __init__(self, root: Path, split: str, crop_frames: int, seed: int = 0) -> None:
        manifest = read_manifest(root)
        self.channels = int(manifest["channels"])
        self.sample_rate = int(manifest["sample_rate"])
        self.crop_frames, self.seed = crop_frames, seed
        self.shards, self.slots = [], []
        for entry in manifest["files"]:
            if entry.get("split", "train") != split or int(entry["frames"]) < crop_frames:
                continue
            shard = np.load(root / entry["shard"], mmap_mode="r")
            if shard.ndim != 2 or shard.shape[1] != self.channels:
                raise ValueError(
                    f"{root / entry['shard']}: shape {shard.shape}, expected "
                    f"(frames, {self.channels})"
                )
            for slot in range(shard.shape[0] // crop_frames):
                self.slots.append((len(self.shards), slot))
            self.shards.append(shard)

    def __len__(self) -> int:
        return len(self.slots)

    def crop(self, epoch: int, index: int) -> np.ndarray:
        file, slot = self.slots[index]
        shard = self.shards[file]
        spare = shard.shape[0] - (shard.shape[0] // self.crop_frames) * self.crop_frames
        shift = mix_seed(self.seed, epoch, file) % (spare + 1)
        start = shift + slot * self.crop_frames
        return np.ascontiguousarray(shard[start : start + self.crop_frames].T, dtype=np.float32)


def read_manifest(root: Path) -> dict:
    """The dataset manifest, with a one-line error naming the file when it is missing or wrong."""
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read dataset manifest ({exc})") from exc
    if manifest.get("format") != "mcrave-dataset" or "channels" not in manifest:
        raise ValueError(f"{path}: not an mcrave dataset manifest")
    return manifest
