"""Lag measurement by cross-correlation, to check that model outputs are latency-compensated and to
pick the present channel nearest to a missing one."""

from __future__ import annotations

import numpy as np


def xcorr_peak(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, normalised peak) of the cross-correlation of two signals [T].

    lag > 0 means `delayed` lags `reference` by that many samples (delayed[t] ~ reference[t-lag]);
    the peak is |correlation| / (|reference| |delayed|), in [0, 1]; (0, 0.0) when either is silent.
    """
    reference = np.asarray(reference, dtype=np.float64)
    delayed = np.asarray(delayed, dtype=np.float64)
    norm = np.sqrt(np.sum(reference**2) * np.sum(delayed**2))
    if norm == 0.0:
        return 0, 0.0
    n = reference.size + delayed.size
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.conj(np.fft.rfft(reference, size)) * np.fft.rfft(delayed, size), size)
    max_lag = min(max_lag, reference.size - 1, delayed.size - 1)
    lags = np.arange(-max_lag, max_lag + 1)
    values = corr[lags % size]
    best = int(np.argmax(np.abs(values)))
    return int(lags[best]), float(np.abs(values[best]) / norm)


def correlation_matrix(audio: np.ndarray, span: slice, max_lag: int) -> np.ndarray:
    """[N, N] peak |normalised cross-correlation| (any lag up to `max_lag`) of the channels of
    audio [N, T] on `span`; the diagonal is 1."""
    n = audio.shape[0]
    corr = np.eye(n)
    for a in range(n):
        for b in range(a + 1, n):
            corr[a, b] = corr[b, a] = xcorr_peak(audio[a, span], audio[b, span], max_lag)[1]
    return corr


def nearest_present(corr: np.ndarray, target: int, present: list[int]) -> int:
    """The present channel most correlated with `target` (corr from `correlation_matrix`); ties go
    to the smaller index distance. Arrays have no geometry in our data, so "nearest" is measured,
    on the span the Wiener filter is fitted on."""
    return min(present, key=lambda q: (-round(float(corr[target, q]), 6), abs(q - target), q))
