"""Evaluation inputs: multichannel audio files, or the `valid` split of a prepared dataset folder.

Evaluating on training material would flatter the model, so a dataset contributes only its
held-out files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcrave.audio import audio_files, read_audio
from mcrave.data.manifest import MANIFEST as MANIFEST_NAME
from mcrave.data.manifest import load_manifest

# each half must hold a few ~93 ms analysis segments and Wiener frames to be scored meaningfully
MIN_SECONDS = 1.0


class EvalInputError(ValueError):
    """An input that cannot be evaluated; the message names the file and the problem."""


@dataclass(frozen=True)
class EvalFile:
    name: str
    audio: np.ndarray  # [N, T] float32


def _checked(name: str, audio: np.ndarray, channels: int, sample_rate: int) -> EvalFile:
    """[N, T] audio at the model's rate -> EvalFile, or an error naming the file."""
    if audio.shape[0] != channels:
        raise EvalInputError(f"{name}: has {audio.shape[0]} channels, the model has {channels}")
    if audio.shape[1] < MIN_SECONDS * sample_rate:
        seconds = audio.shape[1] / sample_rate
        raise EvalInputError(f"{name}: {seconds:.2f} s is too short (need >= {MIN_SECONDS} s)")
    if not np.all(np.isfinite(audio)):
        raise EvalInputError(f"{name}: contains NaN or infinite samples")
    return EvalFile(name, np.ascontiguousarray(audio, dtype=np.float32))


def _dataset_files(
    root: Path, sample_rate: int, max_frames: int | None
) -> list[tuple[str, np.ndarray]]:
    """(name, [N, T] audio) of each file in the dataset's valid split, read from its shard."""
    manifest = load_manifest(root)  # ManifestError (a ValueError) names the problem
    if int(manifest["sample_rate"]) != sample_rate:
        raise EvalInputError(
            f"{root}: dataset is at {manifest['sample_rate']} Hz, the model at {sample_rate} Hz "
            f"(prepare it with --sr {sample_rate})"
        )
    valid = [f for f in manifest["files"] if f["split"] == "valid"]
    if not valid:
        raise EvalInputError(f"{root}: dataset has no files in its 'valid' split")
    out = []
    for entry in valid:
        shard = root / entry["shard"]
        try:
            frames = np.load(shard, mmap_mode="r")  # [T, N]
        except (OSError, ValueError) as err:
            raise EvalInputError(f"{shard}: unreadable shard ({err})") from err
        if frames.ndim != 2:
            raise EvalInputError(f"{shard}: shard is not a [frames, channels] array")
        name = f"{root.name}/valid/{Path(str(entry['source'])).name}"
        out.append((name, np.asarray(frames[:max_frames]).T))
    return out


def load_inputs(
    paths: list[str | Path], channels: int, sample_rate: int, max_seconds: float | None = None
) -> list[EvalFile]:
    """Audio files (resampled to `sample_rate`), folders of audio files and prepared dataset
    folders (their 'valid' split) -> files [N, T], checked for the model, cropped to
    `max_seconds`."""
    max_frames = None if max_seconds is None else int(round(max_seconds * sample_rate))
    files: list[EvalFile] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / MANIFEST_NAME).exists():
            found = _dataset_files(path, sample_rate, max_frames)
        else:
            found = []
            for file in audio_files(path):
                audio, _ = read_audio(file, sample_rate)  # AudioFileError names the file
                found.append((str(file), audio[:, :max_frames]))
        files += [_checked(name, audio, channels, sample_rate) for name, audio in found]
    return files
