"""Evaluation inputs: multichannel audio files, or the `valid` split of a prepared dataset folder.

Evaluating on training material would flatter the model, so a dataset contributes only its
held-out files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from mcrave.data.manifest import ManifestError, load_manifest

# each half must hold a few ~93 ms analysis segments and Wiener frames to be scored meaningfully
MIN_SECONDS = 1.0


class EvalInputError(ValueError):
    """An input that cannot be evaluated; the message names the file and the problem."""


@dataclass(frozen=True)
class EvalFile:
    name: str
    audio: np.ndarray  # [N, T] float32


def _conform(
    name: str,
    audio: np.ndarray,
    sr: int,
    channels: int,
    sample_rate: int,
    max_seconds: float | None,
) -> EvalFile:
    """[T, N] audio at `sr` -> EvalFile at the model's rate, cropped to `max_seconds`."""
    if audio.ndim != 2 or audio.shape[1] != channels:
        got = 1 if audio.ndim == 1 else audio.shape[1]
        raise EvalInputError(f"{name}: has {got} channels, the model has {channels}")
    if max_seconds is not None:
        audio = audio[: int(round(max_seconds * sr))]
    if sr != sample_rate:
        import soxr

        audio = soxr.resample(audio, sr, sample_rate, quality="HQ")
    if audio.shape[0] < MIN_SECONDS * sample_rate:
        raise EvalInputError(
            f"{name}: {audio.shape[0] / sample_rate:.2f} s is too short (need >= {MIN_SECONDS} s)"
        )
    if not np.all(np.isfinite(audio)):
        raise EvalInputError(f"{name}: contains NaN or infinite samples")
    return EvalFile(name, np.ascontiguousarray(audio.T, dtype=np.float32))


def _dataset_files(root: Path, sample_rate: int) -> list[tuple[str, np.ndarray, int]]:
    """(name, memory-mapped [T, N] shard, rate) of each file in the dataset's valid split."""
    try:
        manifest = load_manifest(root)
    except ManifestError as err:
        raise EvalInputError(str(err)) from err
    sr = int(manifest["sample_rate"])
    if sr != sample_rate:
        raise EvalInputError(
            f"{root}: dataset is at {sr} Hz, the model at {sample_rate} Hz "
            f"(prepare it with --sr {sample_rate})"
        )
    valid = [f for f in manifest["files"] if f["split"] == "valid"]
    if not valid:
        raise EvalInputError(f"{root}: dataset has no files in its 'valid' split")
    out = []
    for entry in valid:
        shard = root / entry["shard"]
        try:
            audio = np.load(shard, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise EvalInputError(f"{shard}: unreadable shard ({err})") from err
        out.append((f"{root.name}/valid/{Path(str(entry['source'])).name}", audio, sr))
    return out


def load_inputs(
    paths: list[str | Path], channels: int, sample_rate: int, max_seconds: float | None = None
) -> list[EvalFile]:
    """Audio files and dataset folders -> files [N, T] at `sample_rate`, checked for the model."""
    files: list[EvalFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for name, audio, sr in _dataset_files(path, sample_rate):
                files.append(_conform(name, audio, sr, channels, sample_rate, max_seconds))
            continue
        try:
            audio, sr = sf.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError, sf.LibsndfileError) as err:
            raise EvalInputError(f"{path}: cannot read audio ({err})") from err
        files.append(_conform(str(path), audio, sr, channels, sample_rate, max_seconds))
    return files
