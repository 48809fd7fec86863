"""Dry, mono source material: synthesised instruments, speech-like voices, drums and noise.

Everything is vectorised numpy/scipy and driven by one `numpy.random.Generator`, so a seed fixes
every sample. The aim is not realism of any single instrument but the *variety* a codec meets:
sustained harmonic tones, plucked decays, inharmonic FM spectra, formant-shaped voiced speech with
pauses, and broadband transients.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import signal

MATERIALS = ("pluck", "fm", "additive", "bass", "speech", "drums", "noise")
_SCALES = {
    "major_pent": (0, 2, 4, 7, 9),
    "minor_pent": (0, 3, 5, 7, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
# vowel formants (F1, F2, F3) in Hz, adult averages
_VOWELS = (
    (730, 1090, 2440),
    (530, 1840, 2480),
    (270, 2290, 3010),
    (570, 840, 2410),
    (300, 870, 2240),
    (660, 1720, 2410),
    (490, 1350, 1690),
)


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _env_ad(n: int, sr: int, attack: float, decay_t60: float) -> np.ndarray:
    """Linear attack then exponential decay reaching -60 dB after `decay_t60` seconds."""
    t = np.arange(n) / sr
    env = np.exp(-6.91 * t / max(decay_t60, 1e-3))
    na = min(n, max(1, int(attack * sr)))
    env[:na] *= np.linspace(0.0, 1.0, na, endpoint=False)
    return env


def _release(x: np.ndarray, sr: int, seconds: float = 0.02) -> np.ndarray:
    nr = min(len(x), max(1, int(seconds * sr)))
    x[-nr:] *= np.linspace(1.0, 0.0, nr)
    return x


def _pluck(f0: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string, computed one period at a time (each period depends only on the last)."""
    n = max(int(dur * sr), 8)
    period = max(2, int(round(sr / f0 - 0.5)))  # the two-tap average adds half a sample of delay
    t60 = rng.uniform(0.6, 3.0) * (220.0 / f0) ** 0.3
    g = 0.001 ** (1.0 / (f0 * t60))
    bright = rng.uniform(0.1, 0.7)
    exc = signal.lfilter([1.0 - bright], [1.0, -bright], rng.standard_normal(period))
    y = np.zeros(n + period + 1)
    y[1 : 1 + period] = exc - exc.mean()  # y[k] stored at index k + 1 so y[-1] = 0
    for start in range(period, n, period):
        stop = min(start + period, n)
        y[start + 1 : stop + 1] = (
            0.5
            * g
            * (y[start + 1 - period : stop + 1 - period] + y[start - period : stop - period])
        )
    return _release(y[1 : n + 1], sr)


def _fm(f0: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = max(int(dur * sr), 8)
    t = np.arange(n) / sr
    ratio = rng.choice([1.0, 2.0, 3.0, 3.5, 1.414])
    index = rng.uniform(0.5, 5.0)
    env = _env_ad(n, sr, rng.uniform(0.002, 0.03), rng.uniform(0.4, 2.5))
    ienv = _env_ad(n, sr, 0.001, rng.uniform(0.2, 1.5))
    y = env * np.sin(2 * np.pi * f0 * t + index * ienv * np.sin(2 * np.pi * f0 * ratio * t))
    return _release(y, sr)


# harmonic voices: partial count and ranges for (spectral tilt, attack s, T60 s, upper-partial damping)
_HARMONIC_VOICES = {
    "additive": (12, (0.8, 2.0), (0.02, 0.2), (2.0, 8.0), (0.0, 0.0)),  # organ/pad-like, chords
    "bass": (10, (0.7, 1.3), (0.003, 0.008), (0.8, 2.0), (2.0, 8.0)),  # plucked-bass-like
}


def _harmonic(voice: str, f0: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of harmonics with vibrato; damping makes upper partials decay faster (brightness fall)."""
    partials, *ranges = _HARMONIC_VOICES[voice]
    tilt, attack, t60, damping = (rng.uniform(lo, hi) for lo, hi in ranges)
    n = max(int(dur * sr), 8)
    t = np.arange(n) / sr
    depth, rate = rng.uniform(0.0, 0.004), rng.uniform(4.0, 6.5)
    vib = 1.0 + depth * np.sin(2 * np.pi * rate * t) * np.minimum(t / 0.3, 1)
    phase = 2 * np.pi * np.cumsum(f0 * vib) / sr
    y = np.zeros(n)
    for k in range(1, partials + 1):
        if k * f0 >= 0.45 * sr:
            break
        amp = k**-tilt * rng.uniform(0.5, 1.0)
        y += amp * np.exp(-damping * (k - 1) * t) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return _release(y * _env_ad(n, sr, attack, t60), sr, 0.05)


_INSTRUMENTS: dict[str, tuple[Callable[..., np.ndarray], tuple[int, int], float]] = {
    # name: (note renderer, midi range, note-length multiplier)
    "pluck": (_pluck, (48, 76), 1.5),
    "fm": (_fm, (50, 84), 1.2),
    "additive": (partial(_harmonic, "additive"), (48, 72), 1.0),
    "bass": (partial(_harmonic, "bass"), (28, 48), 1.0),
}


def _melody(kind: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Notes on a random scale and tempo: a random walk over scale degrees with rests and chords."""
    render, (lo, hi), length = _INSTRUMENTS[kind]
    n = int(seconds * sr)
    out = np.zeros(n + sr * 4)
    beat = 60.0 / rng.uniform(70, 150)
    scale = _SCALES[rng.choice(list(_SCALES))]
    root = int(rng.integers(lo, lo + 12))
    pitches = [root + 12 * o + s for o in range(4) for s in scale if lo <= root + 12 * o + s <= hi]
    pos = int(rng.integers(len(pitches)))
    t = rng.uniform(0, beat)
    while t < seconds:
        dur = beat * rng.choice([0.5, 1.0, 1.0, 2.0, 4.0 if kind == "additive" else 1.0])
        if rng.random() < 0.15:
            dur = beat * 0.5  # a short rest
        else:
            chord = [0, 2] if kind == "additive" and rng.random() < 0.4 else [0]
            for c in chord:
                f0 = _midi_hz(pitches[min(pos + c, len(pitches) - 1)])
                note = render(f0, dur * length, sr, rng) * rng.uniform(0.5, 1.0)
                i = int(t * sr)
                out[i : i + len(note)] += note[: len(out) - i]
        pos = int(np.clip(pos + rng.integers(-2, 3), 0, len(pitches) - 1))
        t += dur
    return out[:n]


def _speech(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Phrases of syllables: glottal pulse trains with intonation through vowel formant filters,
    preceded by fricative or plosive noise, separated by pauses."""
    n = int(seconds * sr)
    out = np.zeros(n + 2 * sr)
    f_base = rng.uniform(95, 130) if rng.random() < 0.5 else rng.uniform(170, 240)
    tilt_b, tilt_a = signal.butter(1, 300 / (sr / 2))  # glottal spectral roll-off
    t = rng.uniform(0.0, 0.5)
    while t < seconds:
        syllables = int(rng.integers(3, 12))
        for s in range(syllables):
            start = int(t * sr)
            if start >= n:
                break
            if rng.random() < 0.5:  # consonant onset
                ncons = int(rng.uniform(0.01, 0.09) * sr)
                lo = rng.uniform(1500, 5000)
                b, a = signal.butter(2, [lo / (sr / 2), min(0.95, 2.2 * lo / (sr / 2))], "band")
                burst = signal.lfilter(b, a, rng.standard_normal(ncons)) * np.hanning(ncons)
                burst /= np.sqrt(np.mean(burst**2)) + 1e-12
                out[start : start + ncons] += burst * rng.uniform(0.05, 0.3)
                start += ncons
            nv = int(rng.uniform(0.08, 0.25) * sr)
            decline = 1.0 - 0.25 * s / syllables
            f0 = f_base * decline * np.linspace(rng.uniform(0.9, 1.2), rng.uniform(0.85, 1.05), nv)
            f0 *= 1.0 + 0.01 * rng.standard_normal(nv).cumsum() / np.sqrt(np.arange(1, nv + 1))
            phase = np.cumsum(f0 / sr)
            pulses = np.diff(np.floor(phase), prepend=0.0)
            voiced = signal.lfilter(tilt_b, tilt_a, pulses) + 0.02 * rng.standard_normal(nv)
            for fk, bw in zip(
                _VOWELS[int(rng.integers(len(_VOWELS)))] + (3500,), (80, 100, 150, 250), strict=True
            ):
                fk *= rng.uniform(0.9, 1.1) * (1.15 if f_base > 150 else 1.0)
                r = np.exp(-np.pi * bw / sr)
                voiced = signal.lfilter(
                    [1 - r], [1, -2 * r * np.cos(2 * np.pi * fk / sr), r * r], voiced
                )
            voiced = np.diff(voiced, prepend=0.0)  # lip radiation
            voiced /= np.sqrt(np.mean(voiced**2)) + 1e-12
            env = np.sin(np.pi * np.linspace(0, 1, nv)) ** 0.7
            out[start : start + nv] += voiced * env * rng.uniform(0.6, 1.0)
            t = (start + nv) / sr + rng.uniform(0.0, 0.06)
        t += rng.uniform(0.25, 0.9)
    return out[:n]


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def decay(seconds: float, t60: float) -> tuple[np.ndarray, np.ndarray]:
        n = int(seconds * sr)
        return np.arange(n) / sr, _env_ad(n, sr, 0.0005, t60)

    t, env = decay(0.5, rng.uniform(0.25, 0.5))
    f = rng.uniform(45, 60) + rng.uniform(80, 150) * np.exp(-t / 0.03)
    kick = env * np.sin(2 * np.pi * np.cumsum(f) / sr)
    t, env = decay(0.3, rng.uniform(0.12, 0.25))
    b, a = signal.butter(2, [1000 / (sr / 2), 6000 / (sr / 2)], "band")
    snare = env * (
        signal.lfilter(b, a, rng.standard_normal(len(t))) + 0.4 * np.sin(2 * np.pi * 190 * t)
    )
    t, env = decay(0.12, rng.uniform(0.03, 0.09))
    b, a = signal.butter(2, 7000 / (sr / 2), "high")
    hat = env * signal.lfilter(b, a, rng.standard_normal(len(t)))
    return {"kick": kick, "snare": snare / np.abs(snare).max(), "hat": hat / np.abs(hat).max()}


def _drums(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * sr)
    out = np.zeros(n + sr)
    kit = _drum_kit(sr, rng)
    step = 60.0 / rng.uniform(80, 150) / 4
    pattern = {
        "kick": rng.random(16) < [0.9 if i % 4 == 0 else 0.15 for i in range(16)],
        "snare": rng.random(16) < [0.85 if i % 8 == 4 else 0.08 for i in range(16)],
        "hat": rng.random(16) < [0.8 if i % 2 == 0 else 0.4 for i in range(16)],
    }
    for k in range(int(seconds / step)):
        for name, hits in pattern.items():
            if hits[k % 16]:
                i = int((k * step + rng.normal(0, 0.003)) * sr)
                hit = kit[name] * rng.uniform(0.5, 1.0)
                i = max(i, 0)
                out[i : i + len(hit)] += hit
    return out[:n]


def _noise(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Sparse bursts of band-limited noise (doors, steps, traffic-like swells)."""
    n = int(seconds * sr)
    out = np.zeros(n + 2 * sr)
    t = rng.uniform(0, 0.5)
    while t < seconds:
        length = int(rng.uniform(0.02, 1.2) * sr)
        lo = rng.uniform(60, 4000)
        b, a = signal.butter(
            2, [lo / (sr / 2), min(0.95, rng.uniform(1.5, 6) * lo / (sr / 2))], "band"
        )
        burst = signal.lfilter(b, a, rng.standard_normal(length)) * _env_ad(
            length, sr, rng.uniform(0.001, 0.3), rng.uniform(0.05, 1.0)
        )
        i = int(t * sr)
        out[i : i + length] += burst / (np.abs(burst).max() + 1e-9)
        t += rng.uniform(0.1, 1.5)
    return out[:n]


FILE_PREFIX = "file:"


def file_material(path: str, offset_s: float, channel: int) -> str:
    """The material name of a real recording: one channel of `path` from `offset_s` on."""
    return f"{FILE_PREFIX}{path}@{offset_s:.3f}#{channel}"


def _file_excerpt(spec: str, seconds: float, sr: int) -> np.ndarray:
    """Read the excerpt a `file_material` name describes, resampled to `sr`, zero-padded."""
    import soundfile as sf
    import soxr

    path, _, rest = spec.removeprefix(FILE_PREFIX).rpartition("@")
    offset, _, channel = rest.partition("#")
    info = sf.info(path)
    frames = int(np.ceil(seconds * info.samplerate))
    audio, rate = sf.read(
        path, start=int(float(offset) * info.samplerate), frames=frames, always_2d=True
    )
    x = audio[:, int(channel) % audio.shape[1]].astype(np.float64)
    if rate != sr:
        x = soxr.resample(x, rate, sr)
    n = int(round(seconds * sr))
    return np.pad(x[:n], (0, max(0, n - len(x))))


def render_material(kind: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mono float64 signal of `kind` (see MATERIALS, or a `file_material` name for real music),
    normalised to unit RMS over its active part."""
    if kind.startswith(FILE_PREFIX):
        x = _file_excerpt(kind, seconds, sr)
    elif kind in _INSTRUMENTS:
        x = _melody(kind, seconds, sr, rng)
    elif kind == "speech":
        x = _speech(seconds, sr, rng)
    elif kind == "drums":
        x = _drums(seconds, sr, rng)
    elif kind == "noise":
        x = _noise(seconds, sr, rng)
    else:
        raise ValueError(f"unknown material {kind!r}; choose from {MATERIALS}")
    active = np.abs(x) > 1e-4 * (np.abs(x).max() + 1e-12)
    rms = np.sqrt(np.mean(x[active] ** 2)) if active.any() else 1.0
    return x / (rms + 1e-12)
