"""Baselines, alignment and present sets on synthetic signals with known structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from mcrave.evaluation.alignment import correlation_matrix, nearest_present, xcorr_peak
from mcrave.evaluation.baselines import phase_blind_oracle, wiener_baselines
from mcrave.evaluation.metrics import d_snr, score, si_sdr
from mcrave.evaluation.present_sets import auto_present_sets, parse_present_sets

SR = 44100


def _filtered_pair(seconds: float, seed: int, noise_db: float):
    """L = h * R + noise: h a short random FIR, noise `noise_db` below h * R."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    right = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) * 0.05
    h = rng.standard_normal(16) * np.exp(-np.arange(16) / 4.0)
    clean = np.convolve(right, h)[:n]
    noise = rng.standard_normal(n)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (noise_db / 20)
    return clean + noise, right


def test_wiener_recovers_filtered_channel():
    """The issue's sanity test: on L = h*R + noise (-30 dB) Wiener reaches >= 20 dB."""
    left, right = _filtered_pair(4.0, seed=0, noise_db=-30.0)
    half = left.size // 2
    est = wiener_baselines(right[None], left, slice(0, half), slice(half, None))
    scored = slice(half, None)
    for name in ("wiener", "wiener_pm", "oracle"):
        assert si_sdr(left[scored], est[name][scored]) >= 20.0, name
        assert d_snr(left[scored], est[name][scored], right[scored]) >= 20.0, name
    # and the spatial cues of the estimated pair are near-perfect
    s = score(left[scored], right[scored], est["wiener_pm"][scored], right[scored], SR)
    assert s["d_ild"] < 0.5 and s["d_icc"] < 0.05 and abs(s["w_err"]) < 0.5


def test_power_matching_undoes_mmse_shrinkage():
    """With a weakly coherent target the MMSE estimate is too quiet; PM restores its power."""
    left, right = _filtered_pair(4.0, seed=1, noise_db=0.0)
    half = left.size // 2
    est = wiener_baselines(right[None], left, slice(0, half), slice(half, None))
    target_db = 10 * np.log10(np.mean(left[half:] ** 2))
    assert 10 * np.log10(np.mean(est["wiener"][half:] ** 2)) < target_db - 2.0
    assert 10 * np.log10(np.mean(est["wiener_pm"][half:] ** 2)) == pytest.approx(target_db, abs=0.5)
    # the oracle is fitted on the scored half, so it does at least as well there
    scored = slice(half, None)
    assert (
        d_snr(left[scored], est["oracle"][scored], right[scored])
        >= d_snr(left[scored], est["wiener"][scored], right[scored]) - 1e-9
    )


def test_phase_blind_oracle_keeps_magnitudes_not_waveform():
    """Same long-term spectrum as the target, uncorrelated waveform: the generative ceiling."""
    left, _ = _filtered_pair(2.0, seed=4, noise_db=-30.0)
    blind = phase_blind_oracle(left, seed=0)
    assert np.mean(blind**2) == pytest.approx(np.mean(left**2), rel=0.1)
    assert abs(np.corrcoef(left, blind)[0, 1]) < 0.1
    assert np.array_equal(blind, phase_blind_oracle(left, seed=0))  # seeded: reports reproduce


def test_wiener_uses_several_present_channels():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 2 * SR))
    target = 0.7 * a - 0.4 * np.roll(b, 5) + 1e-3 * rng.standard_normal(2 * SR)
    half = SR
    est = wiener_baselines(np.stack([a, b]), target, slice(0, half), slice(half, None))
    assert si_sdr(target[half:], est["wiener"][half:]) > 25.0


def test_xcorr_finds_lag_and_nearest_channel():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(SR)
    lag, peak = xcorr_peak(x, np.concatenate([np.zeros(37), x[:-37]]), max_lag=100)
    assert lag == 37 and peak > 0.99
    assert xcorr_peak(x, np.zeros_like(x), 10) == (0, 0.0)
    audio = np.stack(
        [
            x,
            rng.standard_normal(SR),
            np.roll(x, 20) + 0.1 * rng.standard_normal(SR),
            rng.standard_normal(SR),
        ]
    )
    corr = correlation_matrix(audio, slice(0, SR), max_lag=441)
    assert corr[0, 2] > 0.9 and corr[0, 1] < 0.1 and np.allclose(corr, corr.T)
    assert nearest_present(corr, 0, [1, 2, 3]) == 2


def test_present_sets():
    assert auto_present_sets(2) == [(0,), (1,), (0, 1)]
    assert auto_present_sets(3) == [(0,), (1,), (2,), (1, 2), (0, 2), (0, 1), (0, 1, 2)]
    big = auto_present_sets(16)
    assert len(big) == 17 and big[-1] == tuple(range(16)) and big == auto_present_sets(16)
    assert parse_present_sets("R", 2, ("L", "R")) == [(1,)]
    assert parse_present_sets("3,1", 4, ("a", "b", "c", "d")) == [(1, 3)]
    for bad in ("5", "x", "1,1"):
        with pytest.raises(ValueError, match="--present"):
            parse_present_sets(bad, 4, ("a", "b", "c", "d"))
