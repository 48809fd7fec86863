"""Whole-file inference through the services, aligned exactly like `mcrave infer`.

The encoder flushes zeros covering the model latency at the end of a stream, so the decoded
audio is the input delayed by `latency` samples: the result is `decoded[:, latency:latency + T]`.
The present channels' audio goes to the decoder with the latents (its spatial stage builds the
missing channels from it), like `mcrave infer`; `latent_only=True` is `mcrave infer --latent-only`.
A file is finite, so a connection lost mid-way (UNAVAILABLE) restarts it from the top after a
backoff: streams are stateful and cannot resume on a fresh server.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from mcrave_client.channels import parse_channel_set
from mcrave_client.errors import ClientError
from mcrave_client.framing import iter_chunks
from mcrave_client.pipeline import Pipeline
from mcrave_client.types import ModelInfo

Progress = Callable[[int], None]  # called with the number of output frames just completed


def select_present(audio: np.ndarray, present: Iterable[int], channels: int) -> np.ndarray:
    """The present channels of `audio`: all N channels given, or exactly the present ones."""
    present = tuple(present)
    if not present or list(present) != sorted(set(present)):
        raise ClientError(f"present channels must be distinct and increasing, got {list(present)}")
    if present[-1] >= channels or present[0] < 0:
        raise ClientError(f"present channels {list(present)} out of range for {channels} channels")
    if audio.shape[0] == channels:
        return audio[list(present)]
    if audio.shape[0] == len(present):
        return audio
    raise ClientError(
        f"audio has {audio.shape[0]} channels; the model takes {channels} "
        f"(or just the {len(present)} present ones)"
    )


def default_chunk(info: ModelInfo, frames: int) -> int:
    """The largest server-allowed chunk, but no longer than the (ratio-rounded) input."""
    cap = info.max_chunk - info.max_chunk % info.ratio if info.max_chunk else frames
    needed = -(-max(frames, 1) // info.ratio) * info.ratio
    return max(info.ratio, min(cap, needed))


def infer_array(
    pipeline: Pipeline,
    audio: np.ndarray,
    present: Iterable[int],
    *,
    model: str | ModelInfo | None = None,
    chunk: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    latent_only: bool = False,
) -> np.ndarray:
    """All N channels `(N, T)` inferred from the present channels of `audio` (N or |present| rows)."""
    info = model if isinstance(model, ModelInfo) else pipeline.model(model)
    present = tuple(present)
    x = np.ascontiguousarray(select_present(np.asarray(audio, np.float32), present, info.channels))
    frames = x.shape[1]
    chunk = chunk or default_chunk(info, frames)
    delays = list(pipeline.encoder.backoff.delays())
    for attempt in range(len(delays) + 1):
        try:
            return _run_once(pipeline, info, x, present, chunk, seed, progress, latent_only)
        except ClientError as err:
            if err.code != grpc.StatusCode.UNAVAILABLE or attempt == len(delays):
                raise
        time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def _run_once(
    pipeline: Pipeline,
    info: ModelInfo,
    x: np.ndarray,
    present: tuple[int, ...],
    chunk: int,
    seed: int,
    progress: Progress | None,
    latent_only: bool,
) -> np.ndarray:
    frames = x.shape[1]
    blocks, have, reported = [], 0, 0
    with pipeline.stream(info, present, chunk, seed=seed, latent_only=latent_only) as stream:
        for block in stream.run(iter_chunks(x, chunk)):
            blocks.append(block.audio)
            have += block.audio.shape[1]
            done = min(frames, max(0, have - stream.info.latency))
            if progress and done > reported:
                progress(done - reported)
                reported = done
        latency = stream.info.latency
    out = np.concatenate(blocks, axis=1) if blocks else np.zeros((info.channels, 0), np.float32)
    if out.shape[1] < latency + frames:
        raise ClientError(
            f"decoder returned {out.shape[1]} frames, expected at least {latency + frames} "
            "(input plus latency)"
        )
    return out[:, latency : latency + frames]


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """`(channels, frames)` float32 and the sample rate, with a one-line error on failure."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        raise ClientError(f"{path}: cannot read audio ({_one_line(exc)})") from None
    return np.ascontiguousarray(data.T), rate


def write_audio(path: Path, audio: np.ndarray, rate: int) -> None:
    """Write atomically (temp file in the same folder, fsync, rename): never a half file."""
    path = Path(path)
    fmt = sf.available_formats().get(path.suffix.lstrip(".").upper())
    if fmt is None:
        raise ClientError(f"{path}: unknown audio file type {path.suffix!r}")
    subtype = "FLOAT" if path.suffix.lower() == ".wav" else None  # keep wav output exact
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            sf.write(fh, audio.T, rate, subtype=subtype, format=path.suffix.lstrip(".").upper())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; a written file gets the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def infer_file(
    pipeline: Pipeline,
    in_path: Path,
    out_path: Path,
    present: str | Iterable[int],
    *,
    model: str | None = None,
    version: int = 0,
    chunk: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    latent_only: bool = False,
) -> tuple[ModelInfo, tuple[int, ...]]:
    """Read `in_path`, infer all channels from `present` (indices or the model's channel names),
    write `out_path` at the input's sample rate; returns the model and the present indices.

    Input at another rate is resampled to the model's (soxr HQ) and the result back, the policy
    `mcrave infer` follows."""
    audio, rate = read_audio(Path(in_path))
    info = pipeline.model(model, version)
    chosen = parse_channel_set(
        present if isinstance(present, str) else tuple(present),
        info.channels,
        info.channel_names,
    )
    if not np.isfinite(audio).all():
        raise ClientError(f"{in_path}: contains NaN or infinite samples")
    try:
        select_present(audio, chosen, info.channels)
    except ClientError as err:
        raise ClientError(f"{in_path}: {err}") from None
    if not Path(out_path).parent.is_dir():
        raise ClientError(f"{out_path}: folder {Path(out_path).parent} does not exist")
    out = infer_array(
        pipeline,
        resample(audio, rate, info.sample_rate),
        chosen,
        model=info,
        chunk=chunk,
        seed=seed,
        progress=progress,
        latent_only=latent_only,
    )
    write_audio(Path(out_path), resample(out, info.sample_rate, rate), rate)
    return info, chosen


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`(channels, frames)` from `rate` to `target` Hz (soxr HQ, as the core resamples)."""
    if rate == target:
        return audio
    import soxr

    return np.ascontiguousarray(soxr.resample(audio.T, rate, target, quality="HQ").T, np.float32)


def default_file_mode() -> int:
    """The mode `open()` would give a new file (0666 less the umask): temp files start 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
