"""Per-band inter-channel cues of a channel pair (ILD, ICC, IPD) and their errors.

A generative decoder does not reproduce the waveform, so the spatial image is judged on the cues a
listener hears (parametric-stereo style): level difference, coherence and, at low frequencies,
phase difference, per ERB band and per ~93 ms segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcrave.evaluation.spectral import stft

N_BANDS = 32
F_LOW, F_HIGH = 50.0, 16000.0
ILD_CLIP_DB = 40.0
IPD_MAX_HZ = 1500.0
SEGMENT_SECONDS = 0.093
# band-segments whose reference energy is this far below the loudest one are not judged: cues of
# near-silence are noise
FLOOR_DB = 60.0


def _erb_number(f: np.ndarray | float) -> np.ndarray:
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(f, dtype=np.float64))


def _erb_to_hz(e: np.ndarray) -> np.ndarray:
    return (10.0 ** (e / 21.4) - 1.0) / 0.00437


def erb_band_edges(sample_rate: int, n_bands: int = N_BANDS) -> np.ndarray:
    """`n_bands + 1` edges (Hz) equally spaced on the ERB-number scale, 50 Hz to 16 kHz (or Nyquist)."""
    high = min(F_HIGH, 0.95 * sample_rate / 2)
    return _erb_to_hz(np.linspace(_erb_number(F_LOW), _erb_number(high), n_bands + 1))


def segment_fft_size(sample_rate: int) -> int:
    """Power-of-two STFT size closest to a ~93 ms segment (4096 at 44.1 kHz)."""
    return int(2 ** round(np.log2(SEGMENT_SECONDS * sample_rate)))


@dataclass(frozen=True)
class BandCues:
    """Cues of pair (a, b) per [segment, band]; `valid` marks band-segments with enough energy."""

    ild: np.ndarray  # dB, level of a over b, clipped to +-40
    icc: np.ndarray  # coherence magnitude in [0, 1]
    ipd: np.ndarray  # rad, phase of a relative to b
    energy: np.ndarray  # a and b band power summed
    centres: np.ndarray  # band centre frequencies (Hz), [bands]


def band_cues(a: np.ndarray, b: np.ndarray, sample_rate: int) -> BandCues:
    """Cues of the pair (a, b) [T] each, from one STFT with ~93 ms windows and half-window hop."""
    n_fft = segment_fft_size(sample_rate)
    spec_a = stft(a, n_fft, n_fft // 2)  # [frames, bins]
    spec_b = stft(b, n_fft, n_fft // 2)
    edges = erb_band_edges(sample_rate)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band_of_bin = np.searchsorted(edges, freqs, side="right") - 1  # -1 / n_bands: outside
    inside = (band_of_bin >= 0) & (band_of_bin < N_BANDS)
    # [bins, bands] one-hot, so band sums are one matmul; every band gets at least its nearest bin
    member = np.zeros((freqs.size, N_BANDS))
    member[np.nonzero(inside)[0], band_of_bin[inside]] = 1.0
    centres = np.sqrt(edges[:-1] * edges[1:])
    empty = member.sum(axis=0) == 0
    member[np.abs(freqs[:, None] - centres[None, empty]).argmin(axis=0), np.nonzero(empty)[0]] = 1.0
    power_a = (np.abs(spec_a) ** 2) @ member
    power_b = (np.abs(spec_b) ** 2) @ member
    cross = (spec_a * np.conj(spec_b)) @ member
    tiny = 1e-20
    ild = 10.0 * np.log10((power_a + tiny) / (power_b + tiny))
    icc = np.abs(cross) / np.sqrt((power_a + tiny) * (power_b + tiny))
    return BandCues(
        ild=np.clip(ild, -ILD_CLIP_DB, ILD_CLIP_DB),
        icc=np.clip(icc, 0.0, 1.0),
        ipd=np.angle(cross),
        energy=power_a + power_b,
        centres=centres,
    )


def wrap(phase: np.ndarray) -> np.ndarray:
    """Phase wrapped to (-pi, pi]."""
    return np.angle(np.exp(1j * phase))


def cue_errors(reference: BandCues, output: BandCues) -> dict[str, float]:
    """Mean |ILD| (dB), |ICC| and wrapped |IPD| (rad, bands below 1.5 kHz) errors of `output`.

    Only band-segments where the *reference* pair has energy within 60 dB of its loudest one count,
    so both pairs are judged on the same cells whatever the output does.
    """
    loudest = reference.energy.max(initial=0.0)
    valid = reference.energy > loudest * 10.0 ** (-FLOOR_DB / 10.0)
    if not valid.any():
        return {"d_ild": float("nan"), "d_icc": float("nan"), "d_ipd": float("nan")}
    low = valid & (reference.centres < IPD_MAX_HZ)[None, :]
    d_ipd = np.abs(wrap(output.ipd - reference.ipd))[low]
    return {
        "d_ild": float(np.abs(output.ild - reference.ild)[valid].mean()),
        "d_icc": float(np.abs(output.icc - reference.icc)[valid].mean()),
        "d_ipd": float(d_ipd.mean()) if d_ipd.size else float("nan"),
    }
