"""Prepare audio into a dataset: decode, resample, drop silence, split by file, shard, record.

Safety properties (each has a test):
- **validated first**: every input is checked (readable, channel count, groups) before anything is
  written, so a bad file aborts the run with a message naming it and nothing prepared is touched;
- **atomic**: each shard is written temp + fsync + rename, then the manifest is rewritten the same
  way, so a kill at any moment leaves a valid manifest whose shards all exist and are complete;
- **idempotent**: sources are identified by the sha256 of their bytes; a re-run skips those done
  (after a kill it simply resumes). Shard names derive from the hash, so a redone shard replaces an
  orphan from the killed run with identical content;
- **stable split**: a file's split depends only on (seed, its hash), so adding files later never
  moves earlier ones between train and valid.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from mcrave.atomic import atomic_write
from mcrave.data.inputs import InputError, Source, discover
from mcrave.data.manifest import MANIFEST, ManifestError, load_manifest, new_manifest, save_manifest
from mcrave.registry import sha256_file

SHARDS = "shards"


class PrepareError(ValueError):
    """A problem with the inputs or the dataset folder; the message says which and why."""


@dataclass(frozen=True)
class PrepareOptions:
    channels: int
    sample_rate: int = 44100
    valid_fraction: float | None = None  # None: the dataset's recorded value, else 0.1
    seed: int | None = None  # None: the dataset's recorded value, else 0
    channel_names: tuple[str, ...] = ()
    silence_db: float = -60.0  # a block is silent when every channel's RMS is below this (dBFS)
    silence_block: int = 1024
    min_silence_s: float = 0.5  # only silent runs at least this long are dropped


def remove_stale_temps(folder: Path) -> int:
    """Delete the temp files (`.NAME.tmp-PID`, see mcrave.atomic) a killed writer left behind."""
    stale = [p for p in folder.glob(".*.tmp-*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def source_sha256(source: Source) -> str:
    """Hash of the file, or of the ordered channel files' hashes for a group."""
    if len(source.paths) == 1:
        return sha256_file(source.paths[0])
    joined = "\n".join(["mcrave-channel-group", *(sha256_file(p) for p in source.paths)])
    return hashlib.sha256(joined.encode()).hexdigest()


def _split_score(sha: str, seed: int) -> float:
    """Uniform in [0, 1), fixed by (seed, file hash) alone."""
    return int(hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()[:13], 16) / 16**13


def split_of(sha: str, seed: int, valid_fraction: float) -> str:
    return "valid" if _split_score(sha, seed) < valid_fraction else "train"


def drop_silence(
    x: np.ndarray, sr: int, threshold_db: float, block: int, min_run_s: float
) -> np.ndarray:
    """Remove runs of >= min_run_s of blocks in which *all* channels are below threshold_db RMS."""
    n_blocks = -(-len(x) // block)
    padded = np.zeros((n_blocks * block, x.shape[1]), np.float32)
    padded[: len(x)] = x
    rms = np.sqrt(np.mean(padded.reshape(n_blocks, block, -1) ** 2, axis=1))
    silent = np.all(rms < 10 ** (threshold_db / 20), axis=1)
    min_blocks = max(1, int(np.ceil(min_run_s * sr / block)))
    drop = np.zeros(n_blocks, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start >= min_blocks:
            drop[start:stop] = True
    keep = np.repeat(~drop, block)[: len(x)]
    return x[keep]


def _decode(source: Source, sample_rate: int) -> np.ndarray:
    """(frames, N) float32 at `sample_rate`."""
    try:
        parts = [sf.read(str(p), dtype="float32", always_2d=True)[0] for p in source.paths]
    except Exception as e:
        raise PrepareError(f"{source.name}: decoding failed ({e})") from None
    x = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    if source.sample_rate != sample_rate and len(x):
        x = soxr.resample(x, source.sample_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepareError(
                f"{root}: another `mcrave prepare` is writing this dataset"
            ) from None
        yield


def _open_dataset(root: Path, opts: PrepareOptions) -> dict[str, Any]:
    """Existing manifest (checked against the options) or a fresh one."""
    if not (root / MANIFEST).exists():
        names = list(opts.channel_names) or (
            ["L", "R"] if opts.channels == 2 else [f"c{i}" for i in range(opts.channels)]
        )
        if len(names) != opts.channels:
            raise PrepareError(
                f"--channel-names gives {len(names)} names for {opts.channels} channels"
            )
        return new_manifest(
            opts.channels,
            opts.sample_rate,
            names,
            0 if opts.seed is None else opts.seed,
            0.1 if opts.valid_fraction is None else opts.valid_fraction,
        )
    try:
        doc = load_manifest(root)
    except ManifestError as e:
        raise PrepareError(str(e)) from None
    wanted = {"channels": opts.channels, "sample_rate": opts.sample_rate}
    wanted |= {} if opts.seed is None else {"seed": opts.seed}
    wanted |= {} if opts.valid_fraction is None else {"valid_fraction": opts.valid_fraction}
    have = {"channels": doc["channels"], "sample_rate": doc["sample_rate"], **doc["split"]}
    for key, value in wanted.items():
        if have[key] != value:
            raise PrepareError(
                f"{root}: dataset has {key}={have[key]}, but {value} was asked for "
                "(use a new dataset folder)"
            )
    return doc


def _ensure_valid_file(doc: dict[str, Any]) -> None:
    """With >= 2 files and a nonzero valid fraction, move the lowest-scoring file to valid if none is."""
    files = doc["files"]
    if (
        len(files) < 2
        or doc["split"]["valid_fraction"] <= 0
        or any(f["split"] == "valid" for f in files)
    ):
        return
    seed = doc["split"]["seed"]
    min(files, key=lambda f: _split_score(f["sha256"], seed))["split"] = "valid"


def prepare(
    inputs: list[str],
    root: str | Path,
    opts: PrepareOptions,
    log: Callable[[str], None] = print,
    before_rename: Callable[[], None] | None = None,
    rejected: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Prepare `inputs` into dataset `root` (created if needed); returns the manifest.
    `before_rename` runs inside every shard write (fault-injection tests).

    Raises PrepareError (bad input or dataset mismatch) before writing anything when it can.
    With a `rejected` list, a bad file (unreadable, wrong channel count, undecodable) is logged,
    appended as (name, reason) and skipped instead; it is not recorded in the manifest, so a
    fixed file is picked up by the next run.
    """
    try:
        sources = discover(inputs, opts.channels, rejected)
    except InputError as e:
        raise PrepareError(str(e)) from None
    for name, reason in rejected or []:
        log(f"{name}: skipped: {reason.removeprefix(name + ': ')}")
    if not sources:
        bad = f" ({len(rejected)} bad file(s) skipped, listed above)" if rejected else ""
        raise PrepareError(f"no usable audio files in {' '.join(inputs)}{bad}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / SHARDS).mkdir(exist_ok=True)
    with _locked(root):
        doc = _open_dataset(root, opts)
        for folder in (root, root / SHARDS):
            remove_stale_temps(folder)
        done = {f["sha256"] for f in doc["files"]} | {s["sha256"] for s in doc["skipped"]}
        sr, seed, fraction = (
            doc["sample_rate"],
            doc["split"]["seed"],
            doc["split"]["valid_fraction"],
        )
        for i, source in enumerate(sources, 1):
            tag = f"[{i}/{len(sources)}] {source.name}"
            sha = source_sha256(source)
            if sha in done:
                log(f"{tag}: already prepared, skipped")
                continue
            try:
                x = _decode(source, sr)
            except PrepareError as e:
                if rejected is None:
                    raise
                rejected.append((source.name, str(e)))
                log(f"{tag}: skipped: {str(e).removeprefix(source.name + ': ')}")
                continue
            kept = drop_silence(x, sr, opts.silence_db, opts.silence_block, opts.min_silence_s)
            if len(kept) == 0:
                doc["skipped"].append({"source": source.name, "sha256": sha, "reason": "silent"})
                log(f"{tag}: silent, skipped")
            else:
                shard = f"{SHARDS}/{sha[:16]}.npy"
                atomic_write(
                    root / shard, lambda f, a=kept: np.save(f, a), before_rename=before_rename
                )
                doc["files"].append(
                    {
                        "source": source.name,
                        "sources": [str(p) for p in source.paths],
                        "sha256": sha,
                        "split": split_of(sha, seed, fraction),
                        "shard": shard,
                        "frames": len(kept),
                        "duration_s": round(len(kept) / sr, 3),
                        "source_sample_rate": source.sample_rate,
                        "source_frames": source.frames,
                        "dropped_frames": len(x) - len(kept),
                    }
                )
                log(
                    f"{tag}: {len(kept) / sr:.1f} s ({(len(x) - len(kept)) / sr:.1f} s silence dropped)"
                    f" -> {shard} ({doc['files'][-1]['split']})"
                )
            done.add(sha)
            save_manifest(root, doc)
        _ensure_valid_file(doc)
        save_manifest(root, doc)
    return doc
