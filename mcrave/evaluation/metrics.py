"""Channel-inference metrics, one function each (protocol and definitions:
mcrave/evaluation/README.md).

Notation: c = true missing channel, c_hat = its estimate, p = the nearest present channel.
Waveform metrics (si_sdr, d_snr) are reported but are not the gate for a generative decoder.
"""

from __future__ import annotations

import numpy as np

from mcrave.evaluation.spatial import band_cues, cue_errors
from mcrave.evaluation.spectral import mss

METRICS = ("si_sdr", "d_snr", "mss", "d_ild", "d_icc", "d_ipd", "w_err")
# lower is better for these; higher for si_sdr and d_snr; w_err is best at 0
LOWER_IS_BETTER = ("mss", "d_ild", "d_icc", "d_ipd")


def _energy(x: np.ndarray) -> float:
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def _db_ratio(num: float, den: float) -> float:
    """10 log10(num/den) with 0/x = -inf and x/0 = +inf, never a warning."""
    if num == 0.0 and den == 0.0:
        return float("nan")
    if num == 0.0:
        return float("-inf")
    if den == 0.0:
        return float("inf")
    return float(10.0 * np.log10(num / den))


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR (dB) of `estimate` against `reference` [T], both made zero-mean."""
    ref = np.asarray(reference, dtype=np.float64) - np.mean(reference)
    est = np.asarray(estimate, dtype=np.float64) - np.mean(estimate)
    if _energy(est) == 0.0:
        return float("-inf")
    alpha = float(np.dot(est, ref)) / max(_energy(ref), 1e-30)
    target = alpha * ref
    return _db_ratio(_energy(target), _energy(est - target))


def d_snr(c: np.ndarray, c_hat: np.ndarray, p: np.ndarray) -> float:
    """Gain over copying: 10 log10(|c-p|^2 / |c-c_hat|^2) dB; copy = 0, truth = +inf."""
    c = np.asarray(c, dtype=np.float64)
    return _db_ratio(_energy(c - p), _energy(c - c_hat))


def w_err(c: np.ndarray, c_hat: np.ndarray, p: np.ndarray) -> float:
    """Image width error 10 log10(|c_hat-p|^2 / |c-p|^2) dB: 0 ideal, -inf collapsed, >0 too wide."""
    c_hat = np.asarray(c_hat, dtype=np.float64)
    return _db_ratio(_energy(c_hat - p), _energy(np.asarray(c, dtype=np.float64) - p))


def score_systems(
    c: np.ndarray,
    p: np.ndarray,
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    sample_rate: int,
) -> dict[str, dict[str, float]]:
    """All metrics of several estimates of missing channel `c` given present channel `p` [T].

    `outputs` maps a system name to its output pair (c_hat, p_out) [T] each: what a listener hears,
    so `p_out` is `p` when present channels pass through and the decoded `p` otherwise. The spatial
    errors and w_err compare the output pair with the reference pair (c, p); d_snr is relative to
    copying the true `p`. The reference analyses are shared between systems.
    """
    ref_cues = band_cues(c, p, sample_rate)
    spectral = mss(c, np.stack([c_hat for c_hat, _ in outputs.values()]))
    scores = {}
    for (name, (c_hat, p_out)), mss_value in zip(outputs.items(), spectral, strict=True):
        out = {
            "si_sdr": si_sdr(c, c_hat),
            "d_snr": d_snr(c, c_hat, p),
            "mss": float(mss_value),
            "w_err": w_err(c, c_hat, p_out),
            **cue_errors(ref_cues, band_cues(c_hat, p_out, sample_rate)),
        }
        scores[name] = {metric: out[metric] for metric in METRICS}
    return scores


def score(
    c: np.ndarray, p: np.ndarray, c_hat: np.ndarray, p_out: np.ndarray, sample_rate: int
) -> dict[str, float]:
    """All metrics of one output pair (c_hat, p_out); see `score_systems`."""
    return score_systems(c, p, {"system": (c_hat, p_out)}, sample_rate)["system"]
