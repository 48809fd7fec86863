"""A tiny dataset in the mcrave dataset format, for training tests (no dependency on data code)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def write_dataset(
    root: Path,
    channels: int = 2,
    files: int = 3,
    frames: int = 40000,
    sample_rate: int = 16000,
    valid_files: int = 1,
    seed: int = 0,
) -> Path:
    """Panned, delayed harmonic tones plus a little noise per channel; float32 (frames, N) shards."""
    rng = np.random.default_rng(seed)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    entries = []
    t = np.arange(frames) / sample_rate
    for i in range(files + valid_files):
        f0 = rng.uniform(110, 440)
        source = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
        gains = rng.uniform(0.2, 0.8, channels)
        delays = rng.integers(0, 20, channels)
        audio = np.stack([g * np.roll(source, d) for g, d in zip(gains, delays, strict=True)], 1)
        audio += 0.01 * rng.standard_normal(audio.shape)
        shard = f"shards/{i:04d}.npy"
        np.save(root / shard, (0.3 * audio).astype(np.float32))
        entries.append(
            {
                "source": f"tone{i}.wav",
                "sha256": "0" * 64,
                "frames": frames,
                "split": "train" if i < files else "valid",
                "shard": shard,
            }
        )
    manifest = {
        "format": "mcrave-dataset",
        "version": 1,
        "channels": channels,
        "sample_rate": sample_rate,
        "channel_names": [],
        "files": entries,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def train_cmd(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    """`mcrave train` on the test preset with a short phase 1 (switch at 10), one CPU thread."""
    return [
        sys.executable,
        "-m",
        "mcrave.cli.main",
        "train",
        str(dataset),
        "--config",
        "test",
        "-o",
        str(run_dir),
        "--threads",
        "1",
        "--seed",
        "3",
        "--log-every",
        "1",
        "--set",
        "train.phase1_steps=10",
        "--set",
        "train.checkpoint_every=5",
        "--set",
        "train.validate_every=10",
        *extra,
    ]


def run_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MCRAVE_FAULT"}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def progress(run_dir: Path) -> list[dict]:
    path = run_dir / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
