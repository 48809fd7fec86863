"""Signal-processing baselines for a missing channel: silence, copy, Wiener, Wiener-PM, oracle.

The Wiener filter is the per-bin complex MMSE estimate of the missing channel from the present
ones, i.e. the best linear time-invariant predictor. Fitted on a file's first half and scored on
its second, it is the bar a learned model has to clear; fitted on the scored half (oracle) it is
the LTI ceiling, not a competitor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import istft
from scipy.signal import stft as scipy_stft

WIENER_FFT = 2048  # 46 ms at 44.1 kHz: resolves the 1-2 ms lags of spaced pairs
WIENER_HOP = 512
# diagonal loading relative to the mean present-channel power per bin; keeps silent bins finite
REGULARISATION = 1e-6


def _spec(x: np.ndarray) -> np.ndarray:
    """[..., T] -> [..., bins, frames] (scipy layout), Hann, 75 % overlap, invertible."""
    return scipy_stft(x, nperseg=WIENER_FFT, noverlap=WIENER_FFT - WIENER_HOP, boundary="even")[2]


def _unspec(spec: np.ndarray, length: int) -> np.ndarray:
    y = istft(spec, nperseg=WIENER_FFT, noverlap=WIENER_FFT - WIENER_HOP, boundary=True)[1]
    y = y[..., :length]
    return np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])


def _frames(span: slice, length: int) -> slice:
    """STFT frames whose centres fall inside the sample span (frame k is centred at k*hop)."""
    start, stop, _ = span.indices(length)
    return slice(-(-start // WIENER_HOP), -(-stop // WIENER_HOP))


@dataclass(frozen=True)
class WienerFilter:
    """Per-bin weights [bins, P] over the present channels, plus long-term powers for PM."""

    weights: np.ndarray
    target_power: np.ndarray  # [bins] mean |C|^2 over the fit span
    estimate_power: np.ndarray  # [bins] mean |C_hat|^2 over the fit span


def fit_wiener(present: np.ndarray, target: np.ndarray, span: slice) -> WienerFilter:
    """Fit W(f) = R_pp(f)^-1 r_pc(f) on `span` of present [P, T] -> target [T]."""
    spec_p = _spec(present)[..., _frames(span, present.shape[-1])]  # [P, bins, frames]
    spec_c = _spec(target)[..., _frames(span, target.shape[-1])]  # [bins, frames]
    spec_p = np.moveaxis(spec_p, 0, 1)  # [bins, P, frames]
    r_pp = spec_p @ np.conj(np.swapaxes(spec_p, 1, 2))  # [bins, P, P]
    r_pc = spec_p @ np.conj(spec_c)[:, :, None]  # [bins, P, 1]
    n_present = present.shape[0]
    load = REGULARISATION * np.trace(r_pp, axis1=1, axis2=2).real / n_present + 1e-12
    r_pp = r_pp + load[:, None, None] * np.eye(n_present)
    weights = np.linalg.solve(r_pp, r_pc)[..., 0]  # [bins, P]
    estimate = np.einsum("bp,bpt->bt", np.conj(weights), spec_p)
    return WienerFilter(
        weights=weights,
        target_power=np.mean(np.abs(spec_c) ** 2, axis=-1),
        estimate_power=np.mean(np.abs(estimate) ** 2, axis=-1),
    )


def apply_wiener(flt: WienerFilter, present: np.ndarray, power_match: bool = False) -> np.ndarray:
    """Estimate [T] of the target from present [P, T]; `power_match` rescales each bin so its
    long-term power equals the target's (on the fit span): Wiener-PM, which undoes MMSE shrinkage."""
    spec_p = _spec(present)  # [P, bins, frames]
    gains = np.conj(flt.weights).T[:, :, None]  # [P, bins, 1]
    estimate = np.sum(gains * spec_p, axis=0)
    if power_match:
        ratio = flt.target_power / np.maximum(flt.estimate_power, 1e-30)
        estimate = estimate * np.sqrt(ratio)[:, None]
    return _unspec(estimate, present.shape[-1])


def wiener_baselines(
    present: np.ndarray, target: np.ndarray, fit_span: slice, score_span: slice
) -> dict[str, np.ndarray]:
    """Full-length estimates [T] of `target` from `present` [P, T]: wiener and wiener_pm fitted on
    `fit_span`, oracle fitted on `score_span` (the span that will be scored)."""
    fitted = fit_wiener(present, target, fit_span)
    return {
        "wiener": apply_wiener(fitted, present),
        "wiener_pm": apply_wiener(fitted, present, power_match=True),
        "oracle": apply_wiener(fit_wiener(present, target, score_span), present),
    }
