"""Magnitude STFTs and RAVE's multiscale spectral distance (mss), in numpy.

Evaluation runs on long files and many candidate outputs at once, so everything broadcasts over
leading axes and never touches torch.
"""

from __future__ import annotations

import numpy as np

MSS_SCALES = (2048, 1024, 512, 256, 128)
MSS_EPS = 1e-7
# mss is level-sensitive: both signals get the one gain that brings the reference to this RMS,
# so level errors of the estimate still count but a quiet file scores like a loud one
MSS_REF_RMS = 0.1


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Complex STFT of `x` [..., T] -> [..., frames, n_fft//2+1].

    Hann window, reflect-padded by n_fft//2 on both sides (torch.stft's `center=True`), so every
    sample lies under full windows.
    """
    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    mode = "reflect" if x.shape[-1] > pad else "constant"
    xp = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode=mode)
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft, axis=-1)[..., ::hop, :]
    return np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)


def mss(
    reference: np.ndarray, estimate: np.ndarray, scales: tuple[int, ...] = MSS_SCALES
) -> np.ndarray:
    """RAVE multiscale spectral distance, loudness-normalised (lower is better; mss(x, x) = 0).

    Sum over n in `scales` (hop n/4) of mean((X-Y)^2)/mean(X^2) + mean|log(X+eps) - log(Y+eps)|
    on magnitudes X (reference) and Y (estimate). Both signals are scaled by the gain that puts the
    reference at `MSS_REF_RMS`. Shapes: one reference [T] against estimates [..., T] -> [...]; the
    reference is analysed once and the estimates one at a time, so memory stays O(T). NaN for a
    silent reference.
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.ndim != 1 or estimate.shape[-1] != reference.shape[-1]:
        raise ValueError(
            f"mss: reference [T] and estimates [..., T], got {reference.shape} and {estimate.shape}"
        )
    rms = float(np.sqrt(np.mean(reference**2)))
    if rms == 0.0:  # nothing to normalise to: undefined, and left out of means
        return np.full(estimate.shape[:-1], np.nan)
    gain = MSS_REF_RMS / rms
    refs = []
    for n in scales:
        mag = np.abs(stft(reference * gain, n, n // 4))
        refs.append((n, mag, np.log(mag + MSS_EPS), max(float(np.mean(mag**2)), 1e-20)))
    flat = estimate.reshape(-1, estimate.shape[-1])
    out = np.empty(flat.shape[0])
    for i, est in enumerate(flat):
        total = 0.0
        for n, ref_mag, ref_log, ref_energy in refs:
            est_mag = np.abs(stft(est * gain, n, n // 4))
            total += float(np.mean((ref_mag - est_mag) ** 2)) / ref_energy
            total += float(np.mean(np.abs(ref_log - np.log(est_mag + MSS_EPS))))
        out[i] = total
    return out.reshape(estimate.shape[:-1])
