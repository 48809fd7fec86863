"""Random crops from a prepared dataset, as a pure function of (seed, epoch, index).

Usage (training)::

    ds = CropDataset("DATASET", split="train", crop_frames=131072, seed=0, augment=True)
    len(ds)                                   # crops per epoch (default: total frames // crop)
    idx = ds.epoch_indices(epoch, rank, world_size)   # this rank's indices, in order
    x = ds.crop(epoch, int(idx[i]))           # float32 (N, crop_frames), channels share the crop
    xb = ds.batch(epoch, idx[i : i + b])      # float32 (b, N, crop_frames)

Contract the trainer builds on:
- **Deterministic.** `crop(epoch, index)` depends only on (seed, epoch, index) and the manifest:
  which file (chosen with probability proportional to its length), where in it, and the
  augmentation. No hidden RNG state: to resume exactly, save (epoch, position in this rank's
  index list) and continue from there.
- **DDP.** `epoch_indices(epoch, rank, world_size)` shuffles range(len(ds)) with (seed, epoch) and
  gives rank r the slice perm[r::world_size], truncated so every rank gets exactly
  len(ds) // world_size indices: ranks are disjoint and equally long (no rank waits forever).
- **Short files** (frames < crop_frames) are zero-padded at the end by default (`short="pad"`);
  `short="skip"` leaves them out instead.
- **Augmentation** (`augment=True`), identical on all channels so inter-channel cues survive:
  polarity flip (p 0.5), a random all-pass cascade (p 0.5; 1-3 second-order sections, filtered
  with 1024 frames of pre-roll so the crop starts settled), gain in [-9, +3] dB limited so the peak
  stays <= 0.99.
- Shards are memory-mapped lazily per process and the maps are not pickled, so the object is cheap
  to send to DataLoader workers (wrap it: `__getitem__((epoch, index))` works with a sampler that
  yields (epoch, index) pairs).
- Validation: `CropDataset(root, "valid", crop, seed)` with `augment=False`; crops (0, i) for
  i < len(ds) are a fixed validation set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal

from mcrave.data.manifest import SPLITS, ManifestError, load_manifest

_CROP_TAG, _PERM_TAG = 1, 2  # nonzero trailing seed words keep the two streams apart
_PREROLL = 1024


class CropDataset:
    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        crop_frames: int = 131072,
        seed: int = 0,
        crops_per_epoch: int | None = None,
        augment: bool = False,
        short: str = "pad",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if short not in ("pad", "skip"):
            raise ValueError(f"short must be 'pad' or 'skip', got {short!r}")
        if crop_frames < 1:
            raise ValueError("crop_frames must be >= 1")
        self.root = Path(root)
        manifest = load_manifest(self.root)
        self.channels: int = manifest["channels"]
        self.sample_rate: int = manifest["sample_rate"]
        self.channel_names: list[str] = manifest["channel_names"]
        self.crop_frames, self.seed, self.augment = crop_frames, seed, augment
        files = [f for f in manifest["files"] if f["split"] == split]
        if short == "skip":
            files = [f for f in files if f["frames"] >= crop_frames]
        if not files:
            raise ManifestError(
                f"{self.root}: no {split} files"
                + (f" of >= {crop_frames} frames" if short == "skip" else "")
            )
        self.files: list[dict[str, Any]] = files
        self._ends = np.cumsum([f["frames"] for f in files])
        total = int(self._ends[-1])
        self._length = crops_per_epoch or max(len(files), total // crop_frames)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._length

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        epoch, index = key
        return self.crop(epoch, index)

    def _shard(self, i: int) -> np.ndarray:
        if i not in self._maps:
            arr = np.load(self.root / self.files[i]["shard"], mmap_mode="r")
            if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[1] != self.channels:
                raise ManifestError(
                    f"{self.files[i]['shard']}: expected float32 (frames, "
                    f"{self.channels}), found {arr.dtype} {arr.shape}"
                )
            self._maps[i] = arr
        return self._maps[i]

    def locate(self, epoch: int, index: int) -> tuple[int, int, np.random.Generator]:
        """(file number, start frame, the crop's RNG positioned for augmentation)."""
        if not 0 <= index < self._length:
            raise IndexError(f"crop index {index} outside [0, {self._length})")
        rng = np.random.default_rng([self.seed, epoch, index, _CROP_TAG])
        file = int(np.searchsorted(self._ends, rng.integers(int(self._ends[-1])), side="right"))
        start = int(rng.integers(max(self.files[file]["frames"] - self.crop_frames, 0) + 1))
        return file, start, rng

    def crop(self, epoch: int, index: int) -> np.ndarray:
        """float32 (N, crop_frames): the same frames of every channel."""
        file, start, rng = self.locate(epoch, index)
        shard = self._shard(file)
        pre = min(start, _PREROLL) if self.augment else 0
        part = np.asarray(shard[start - pre : start + self.crop_frames], dtype=np.float32).T
        x = np.zeros((self.channels, pre + self.crop_frames), np.float32)
        x[:, : part.shape[1]] = part
        if self.augment:
            x = self._augment(x, rng)
        return np.ascontiguousarray(x[:, pre:])

    def _augment(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sign = -1.0 if rng.random() < 0.5 else 1.0
        if rng.random() < 0.5:
            sections = []
            for _ in range(int(rng.integers(1, 4))):
                r, theta = rng.uniform(0.5, 0.95), rng.uniform(0.0, np.pi)
                a1, a2 = -2 * r * np.cos(theta), r * r
                sections.append([a2, a1, 1.0, 1.0, a1, a2])
            x = signal.sosfilt(np.array(sections), x, axis=1).astype(np.float32)
        gain = 10 ** (rng.uniform(-9.0, 3.0) / 20)
        peak = float(np.abs(x).max())
        if peak * gain > 0.99:
            gain = 0.99 / peak
        return x * np.float32(sign * gain)

    def epoch_indices(self, epoch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """This rank's crop indices for `epoch`: disjoint across ranks, len(self) // world_size each."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        per_rank = self._length // world_size
        if per_rank == 0:
            raise ValueError(f"{self._length} crops per epoch cannot feed {world_size} ranks")
        perm = np.random.default_rng([self.seed, epoch, _PERM_TAG]).permutation(self._length)
        return perm[rank::world_size][:per_rank]

    def batch(self, epoch: int, indices: np.ndarray | list[int]) -> np.ndarray:
        """float32 (len(indices), N, crop_frames)."""
        return np.stack([self.crop(epoch, int(i)) for i in indices])
