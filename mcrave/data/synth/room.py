"""Shoebox-room impulse responses for arbitrary microphone arrays, in numpy.

Hybrid model, the usual one in room acoustics:
- **early part** (first `t_mix` seconds): exact image sources (Allen & Berkley) with band-limited
  fractional delays, 1/r spreading, wall reflection coefficient from Sabine's formula and the
  microphone's polar pattern evaluated at each image's direction of arrival. It is recomputed per
  source position, so moving sources get correct, changing delays and levels.
- **late tail**: a diffuse field built as a sum of plane waves from many directions, each an
  exponentially decaying noise (faster decay at high frequencies) that reaches every microphone
  with its own propagation delay and polar gain. Spaced microphones therefore get the physical
  sinc-shaped coherence, coincident cardioids a partially correlated tail. Its level follows
  diffuse-field theory (critical distance r_c = 0.057 sqrt(V / RT60)).

Own implementation rather than pyroomacoustics: we need per-image microphone directivity (for
coincident XY/Blumlein pairs), block-wise moving sources and byte-stable output across versions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

SPEED_OF_SOUND = 343.0
# first-order polar patterns: gain = a + (1 - a) cos(angle to the mic axis)
PATTERNS = {"omni": 1.0, "subcardioid": 0.7, "cardioid": 0.5, "supercardioid": 0.37, "figure8": 0.0}
_SINC_HALF = 16  # fractional-delay filter: 32-tap Hann-windowed sinc
_CROSSOVER_TAPS = 63
# reverberation time per band relative to the nominal (mid-band) rt60: walls and air absorb highs
# more. Band edges (Hz) between the three bands; the early part uses the upper edge only.
BAND_EDGES = (500.0, 4000.0)
BAND_RT_SCALES = (1.15, 1.0, 0.6)


@dataclass(frozen=True)
class Mic:
    pos: tuple[float, float, float]
    pattern: str = "omni"
    axis: tuple[float, float, float] = (0.0, 1.0, 0.0)  # unit vector the capsule points at

    def gain(self, directions: np.ndarray) -> np.ndarray:
        """Polar gain for sounds arriving *from* unit `directions` (K, 3)."""
        a = PATTERNS[self.pattern]
        return a + (1.0 - a) * directions @ np.asarray(self.axis)


@dataclass(frozen=True)
class Room:
    dims: tuple[float, float, float]
    rt60: float

    @property
    def volume(self) -> float:
        return float(np.prod(self.dims))

    def beta(self, rt_scale: float = 1.0) -> float:
        """Wall reflection coefficient from Sabine, alpha = 0.161 V / (S RT60), for a band whose
        reverberation time is rt_scale * rt60."""
        lx, ly, lz = self.dims
        surface = 2 * (lx * ly + lx * lz + ly * lz)
        alpha = 0.161 * self.volume / (surface * self.rt60 * rt_scale)
        return float(np.sqrt(1.0 - np.clip(alpha, 0.02, 0.98)))

    @property
    def critical_distance(self) -> float:
        return 0.057 * float(np.sqrt(self.volume / self.rt60))


def fractional_impulses(delays: np.ndarray, gains: np.ndarray, length: int) -> np.ndarray:
    """Sum of band-limited impulses: row m gets gains[m, k] at delays[m, k] samples. -> (M, length)"""
    taps = np.arange(-_SINC_HALF + 1, _SINC_HALF + 1)
    base = np.floor(delays).astype(np.int64)
    idx = base[..., None] + taps
    frac = idx - delays[..., None]
    kernel = np.sinc(frac) * (0.5 + 0.5 * np.cos(np.pi * frac / _SINC_HALF))
    out = np.zeros((delays.shape[0], length))
    for m in range(delays.shape[0]):
        keep = (idx[m] >= 0) & (idx[m] < length)
        out[m] = np.bincount(idx[m][keep], (gains[m, :, None] * kernel[m])[keep], minlength=length)
    return out


def early_response(
    room: Room, src: np.ndarray, mics: list[Mic], sr: int, t_mix: float, fade: float = 0.01
) -> np.ndarray:
    """Image-source response up to t_mix (tapered over `fade` s around it). -> (M, L) float64"""
    t_end = t_mix + fade / 2
    dims = np.asarray(room.dims)
    reach = SPEED_OF_SOUND * t_end
    n_max = int(np.ceil(reach / (2 * dims.min()))) + 1
    m = np.arange(-n_max, n_max + 1)
    # per axis: image coordinate (1 - 2p) s + 2 m L and its reflection count |m - p| + |m|
    coord, order = [], []
    for a in range(3):
        p = np.array([0, 1])
        coord.append(((1 - 2 * p)[None, :] * src[a] + 2 * m[:, None] * dims[a]).ravel())
        order.append((np.abs(m[:, None] - p[None, :]) + np.abs(m)[:, None]).ravel())
    images = np.stack(np.meshgrid(*coord, indexing="ij"), -1).reshape(-1, 3)
    refl = (order[0][:, None, None] + order[1][None, :, None] + order[2][None, None, :]).ravel()
    pos = np.array([mic.pos for mic in mics])
    near = (
        np.linalg.norm(images - pos.mean(0), axis=1)
        <= reach + np.linalg.norm(pos - pos.mean(0), axis=1).max()
    )
    images, refl = images[near], refl[near]
    vec = images[None, :, :] - pos[:, None, :]  # (M, K, 3) from mic toward image
    dist = np.maximum(np.linalg.norm(vec, axis=-1), 0.05)
    t = dist / SPEED_OF_SOUND
    taper = np.clip((t_end - t) / fade, 0.0, 1.0)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    directivity = np.stack([mic.gain(vec[i] / dist[i][:, None]) for i, mic in enumerate(mics)])
    length = int(np.ceil(t_end * sr)) + 2 * _SINC_HALF
    mid, high = (
        fractional_impulses(
            t * sr, room.beta(scale) ** refl[None, :] / dist * directivity * taper, length
        )
        for scale in BAND_RT_SCALES[1:]
    )
    # two-way split at the upper band edge: highs fade faster with each reflection (the direct
    # path is the same in both, so it passes untouched); linear-phase FIR, applied zero-phase
    lowpass = signal.firwin(_CROSSOVER_TAPS, BAND_EDGES[1], fs=sr)
    return high + signal.oaconvolve(mid - high, lowpass[None], mode="same", axes=1)


def _sphere_directions(k: int, rng: np.random.Generator) -> np.ndarray:
    """k roughly uniform unit vectors (Fibonacci lattice), randomly rotated."""
    i = np.arange(k) + 0.5
    z = 1 - 2 * i / k
    phi = np.pi * (1 + 5**0.5) * i
    d = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], -1)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return d @ (q * np.sign(np.diag(r)))


def late_tail(
    room: Room,
    mics: list[Mic],
    sr: int,
    t_mix: float,
    rng: np.random.Generator,
    directions: int = 32,
    fade: float = 0.01,
) -> np.ndarray:
    """Diffuse reverberant tail from t_mix - fade/2 on, calibrated against a 1/r direct path. -> (M, L)

    Plane-wave delays are rounded to whole samples (<= 11 us error): enough for diffuse coherence.
    """
    length = int(min(room.rt60 * 1.1, 2.5) * sr) + 1
    n_fft = 1 << int(np.ceil(np.log2(length)))
    t = np.arange(n_fft) / sr
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    # three decay bands with smooth log-frequency crossovers at BAND_EDGES
    logf = np.log2(np.maximum(freqs, 1.0))
    x1 = np.clip((logf - np.log2(BAND_EDGES[0])) + 0.5, 0, 1)
    x2 = np.clip((logf - np.log2(BAND_EDGES[1])) + 0.5, 0, 1)
    masks = [1 - x1, x1 - x2, x2]
    # diffuse energy 1 / r_c^2 relative to a direct path at 1 m: sum_n A^2 exp(-13.8 n / (sr RT))
    # = 1 / r_c^2 with r_c^2 = 0.057^2 V / RT gives A^2 = 13.8 / (0.057^2 V sr), the same for
    # every band; each band decays from t = 0 at its own rate, as the image sources do
    level = np.sqrt(13.8 / (room.critical_distance**2 * sr * room.rt60) / directions)
    start = t_mix - fade / 2
    onset = np.clip((t - start) / fade, 0.0, 1.0)
    onset = (0.5 - 0.5 * np.cos(np.pi * onset)) * (t < length / sr)
    noise = rng.standard_normal((directions, n_fft))
    spectra = np.zeros((directions, freqs.size), complex)
    for mask, scale in zip(masks, BAND_RT_SCALES, strict=True):
        env = level * np.exp(-6.91 * t / (room.rt60 * scale)) * onset
        spectra += mask * np.fft.rfft(noise * env, axis=1)
    waves = np.fft.irfft(spectra, n_fft, axis=1)[:, :length]
    dirs = _sphere_directions(directions, rng)
    pos = np.array([mic.pos for mic in mics])
    # a plane wave arriving from direction u reaches a mic at offset p earlier by (u . p) / c
    lead = np.rint((pos - pos.mean(0)) @ dirs.T / SPEED_OF_SOUND * sr).astype(int)  # (M, K)
    pad = int(np.abs(lead).max())
    padded = np.pad(waves, ((0, 0), (pad, pad)))
    out = np.zeros((len(mics), length))
    for i, mic in enumerate(mics):
        gains = mic.gain(dirs)
        for k in range(directions):
            out[i] += gains[k] * padded[k, pad + lead[i, k] : pad + lead[i, k] + length]
    return out


def room_response(
    room: Room, src: np.ndarray, mics: list[Mic], sr: int, t_mix: float, rng: np.random.Generator
) -> np.ndarray:
    """Full static impulse response (early + tail). -> (M, L)"""
    early = early_response(room, src, mics, sr, t_mix)
    tail = late_tail(room, mics, sr, t_mix, rng)
    out = np.zeros((len(mics), max(early.shape[1], tail.shape[1])))
    out[:, : early.shape[1]] += early
    out[:, : tail.shape[1]] += tail
    return out
