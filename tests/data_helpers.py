"""Small real audio files for the data tests (written with soundfile, no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def noise_audio(seconds: float, channels: int, sr: int = 44100, seed: int = 0) -> np.ndarray:
    """Audible, distinct-per-channel test audio (frames, channels) float32 in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, (int(seconds * sr), channels)).astype(np.float32)
    return x * np.linspace(0.3, 1.0, channels, dtype=np.float32)


def write_wav(path: Path, audio: np.ndarray, sr: int = 44100, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sr, subtype=subtype)
    return path
