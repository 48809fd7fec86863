"""Signal-processing baselines for a missing channel: silence, copy, Wiener, Wiener-PM, oracle,
and the phase-blind oracle.

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
    target_power: np.ndarray  # [bins] mean |C|^2 over the fit frames
    estimate_power: np.ndarray  # [bins] mean |C_hat|^2 over the fit frames


def _filter(weights: np.ndarray, spec_p: np.ndarray) -> np.ndarray:
    """C_hat = W^H P per bin: weights [bins, P], spec_p [P, bins, frames] -> [bins, frames]."""
    return np.einsum("bp,pbt->bt", np.conj(weights), spec_p)


def fit_wiener(spec_p: np.ndarray, spec_c: np.ndarray, frames: slice) -> WienerFilter:
    """W(f) = R_pp(f)^-1 r_pc(f) over `frames` of present spectra [P, bins, frames] and the
    target's [bins, frames]."""
    sp, sc = spec_p[..., frames], spec_c[..., frames]
    stacked = np.moveaxis(sp, 0, 1)  # [bins, P, frames]
    r_pp = stacked @ np.conj(np.swapaxes(stacked, 1, 2))  # [bins, P, P]
    r_pc = stacked @ np.conj(sc)[:, :, None]  # [bins, P, 1]
    n_present = sp.shape[0]
    load = REGULARISATION * np.trace(r_pp, axis1=1, axis2=2).real / n_present + 1e-12
    weights = np.linalg.solve(r_pp + load[:, None, None] * np.eye(n_present), r_pc)[..., 0]
    return WienerFilter(
        weights=weights,
        target_power=np.mean(np.abs(sc) ** 2, axis=-1),
        estimate_power=np.mean(np.abs(_filter(weights, sp)) ** 2, axis=-1),
    )


def wiener_baselines(
    present: np.ndarray, target: np.ndarray, fit_span: slice, score_span: slice
) -> dict[str, np.ndarray]:
    """Full-length estimates [T] of `target` from `present` [P, T]: `wiener` and `wiener_pm`
    fitted on `fit_span`, `oracle` fitted on `score_span` (the span that will be scored).

    `wiener_pm` rescales each bin so its long-term power equals the target's on the fit span,
    which undoes the MMSE filter's shrinkage of poorly predictable bins.
    """
    length = present.shape[-1]
    spec_p, spec_c = _spec(present), _spec(target)  # [P, bins, frames], [bins, frames]
    fitted = fit_wiener(spec_p, spec_c, _frames(fit_span, length))
    oracle = fit_wiener(spec_p, spec_c, _frames(score_span, length))
    estimate = _filter(fitted.weights, spec_p)
    power_ratio = fitted.target_power / np.maximum(fitted.estimate_power, 1e-30)
    return {
        "wiener": _unspec(estimate, length),
        "wiener_pm": _unspec(estimate * np.sqrt(power_ratio)[:, None], length),
        "oracle": _unspec(_filter(oracle.weights, spec_p), length),
    }


def phase_blind_oracle(target: np.ndarray, seed: int) -> np.ndarray:
    """The target's own STFT magnitudes with random phases, resynthesised: [T] -> [T].

    What a decoder that gets every spectral magnitude right but does not reproduce the waveform
    scores: a generative decoder at a few hundred latent values per second is one. The
    multiscale spectral distance compares magnitudes at five frame sizes, so it still rewards
    waveform coherence (copy and Wiener keep the present channel's fine structure); this row
    shows how much of a gap is that. A reference, never a competitor (it reads the target).
    """
    target = target.astype(np.float64)
    spec = _spec(target)
    phases = np.exp(2j * np.pi * np.random.default_rng(seed).random(spec.shape))
    blind = _unspec(np.abs(spec) * phases, target.shape[-1])
    # overlapping frames with unrelated phases add incoherently (~1/4 of the power at 75 %
    # overlap, equally in every bin): one gain restores the target's level
    return blind * np.sqrt(np.mean(target**2) / max(float(np.mean(blind**2)), 1e-30))
