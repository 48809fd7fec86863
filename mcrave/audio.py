"""Audio file reading and writing with errors that name the file, and soxr resampling."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from mcrave.atomic import fsync_dir

log = logging.getLogger(__name__)


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".aif", ".aiff", ".w64", ".caf", ".mp3", ".opus"}


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


def audio_files(path: str | Path) -> list[Path]:
    """A file -> [it]; a folder -> its audio files (by suffix, recursively, sorted): every command
    that reads audio takes folders the same way."""
    path = Path(path)
    if path.is_dir():
        found = sorted(
            q for q in path.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_SUFFIXES
        )
        if not found:
            raise AudioFileError(
                f"{path}: folder has no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})"
            )
        return found
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read `path` as float32 [channels, samples]; resample to `sample_rate` (soxr) if given."""
    path = Path(path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"{path}: cannot read audio ({exc})") from exc
    audio = np.ascontiguousarray(data.T)
    if audio.shape[1] == 0:
        raise AudioFileError(f"{path}: file has no samples")
    if sample_rate is not None and rate != sample_rate:
        log.warning("%s: resampling %d Hz -> %d Hz", path, rate, sample_rate)
        audio, rate = resample(audio, rate, sample_rate), sample_rate
    return audio, rate


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """[channels, samples] from `rate` to `target` Hz (soxr HQ), float32."""
    if rate == target:
        return audio
    import soxr

    return np.ascontiguousarray(soxr.resample(audio.T, rate, target, quality="HQ").T, np.float32)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write [channels, samples] as 32-bit float WAV (or the extension's format), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        subtype = "FLOAT" if path.suffix.lower() in (".wav", ".w64", "") else None
        sf.write(
            tmp,
            np.asarray(audio, np.float32).T,
            sample_rate,
            subtype=subtype,
            format="WAV" if path.suffix == "" else None,
        )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path
