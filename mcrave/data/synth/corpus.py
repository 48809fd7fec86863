"""A seeded corpus of multichannel WAV files plus `scenes.json` describing every file.

File i is drawn from `SeedSequence([seed, i])` alone, so files are independent of each other and
of how many are generated: the same (seed, i) always gives the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from mcrave.atomic import atomic_write, atomic_write_bytes
from mcrave.data.synth.scenes import channel_names, layout_channels, render_scene, sample_scene

CORPUS_FORMAT = "mcrave-synth"


def file_durations(minutes: float, file_seconds: float) -> list[float]:
    """Split the total duration into equal files of about `file_seconds` each."""
    total = minutes * 60.0
    if total <= 0 or file_seconds <= 0:
        raise ValueError("minutes and file length must be positive")
    count = max(1, round(total / file_seconds))
    return [total / count] * count


def music_catalogue(paths: Sequence[str | Path]) -> list[tuple[str, float]]:
    """(path, seconds) of every audio file in `paths` (files or folders), sorted by path."""
    from mcrave.audio import audio_files

    files = [f for p in paths for f in audio_files(p)]
    if not files:
        raise ValueError(f"no audio files in {[str(p) for p in paths]}")
    return [(str(f.resolve()), sf.info(f).duration) for f in sorted(files)]


def synth_file(
    layout: str,
    seed: int,
    index: int,
    duration_s: float,
    sr: int,
    music: Sequence[tuple[str, float]] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Scene and audio (frames, channels) float32 for file `index` of corpus `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    scene = sample_scene(layout, duration_s, rng, music=music)
    return render_scene(scene, sr, rng).T, scene


def synth_corpus(
    out_dir: str | Path,
    layout: str,
    minutes: float,
    seed: int,
    sr: int = 44100,
    file_seconds: float = 20.0,
    progress: bool = False,
    music: Sequence[tuple[str, float]] = (),
) -> dict[str, Any]:
    """Write `synth_<seed>_<i>.wav` files and `scenes.json` into out_dir; returns the JSON.

    WAVs are 24-bit PCM: libsndfile stamps float WAVs with the write time (PEAK chunk), which
    would break "same seed, same bytes"; 24 bits keep 144 dB of range, far below the noise floor.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_ch = layout_channels(layout)
    durations = file_durations(minutes, file_seconds)
    files = []
    width = max(4, int(math.log10(len(durations))) + 1)
    for i, duration in enumerate(durations):
        audio, scene = synth_file(layout, seed, i, duration, sr, music)
        name = f"synth_{seed}_{i:0{width}d}.wav"
        atomic_write(
            out / name, lambda f, a=audio: sf.write(f, a, sr, subtype="PCM_24", format="WAV")
        )
        files.append({"file": name, "index": i, **scene})
        if progress:
            materials = (Path(s["material"]).name for s in scene["sources"])
            print(
                f"[{i + 1}/{len(durations)}] {name}: {scene['kind']}, {', '.join(materials)}",
                flush=True,
            )
    doc = {
        "format": CORPUS_FORMAT,
        "version": 1,
        "layout": layout,
        "seed": seed,
        "sample_rate": sr,
        "channels": n_ch,
        "channel_names": channel_names(layout),
        "files": files,
    }
    atomic_write_bytes(out / "scenes.json", (json.dumps(doc, indent=1) + "\n").encode())
    return doc
