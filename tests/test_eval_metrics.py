"""Properties of the evaluation metrics on signals whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from mcrave.evaluation.metrics import d_snr, score, si_sdr, w_err
from mcrave.evaluation.spatial import band_cues, cue_errors, erb_band_edges, wrap
from mcrave.evaluation.spectral import mss

SR = 44100


def _noise(seconds: float, seed: int) -> np.ndarray:
    """Pink-ish noise: broadband, so every ERB band has energy."""
    rng = np.random.default_rng(seed)
    return lfilter([1.0], [1.0, -0.7], rng.standard_normal(int(seconds * SR))) * 0.1


def test_mss_zero_on_identity_and_grows_with_error():
    x = _noise(1.0, 0)
    assert float(mss(x, x)) == 0.0
    assert 0.0 < float(mss(x, 0.9 * x)) < float(mss(x, 0.5 * x))
    assert float(mss(x, 0.5 * x)) < float(mss(x, _noise(1.0, 1)))
    assert math.isnan(float(mss(np.zeros_like(x), x)))  # silent reference: undefined


def test_mss_is_loudness_normalised_and_batches():
    x, y = _noise(1.0, 0), _noise(1.0, 1)
    assert float(mss(100 * x, 100 * y)) == pytest.approx(float(mss(x, y)), rel=1e-9)
    batched = mss(x, np.stack([x, y, 0.5 * x]))
    assert batched.shape == (3,)
    assert batched[1] == pytest.approx(float(mss(x, y)))


def test_erb_bands_span_50hz_to_16khz():
    edges = erb_band_edges(SR)
    assert edges.size == 33
    assert edges[0] == pytest.approx(50.0) and edges[-1] == pytest.approx(16000.0)
    assert np.all(np.diff(edges) > 0)


def test_cue_errors_of_pair_against_itself_are_zero():
    a, b = _noise(2.0, 0), _noise(2.0, 1) + 0.5 * _noise(2.0, 0)
    cues = band_cues(a, b, SR)
    assert cue_errors(cues, band_cues(a, b, SR)) == {"d_ild": 0.0, "d_icc": 0.0, "d_ipd": 0.0}


def test_known_ild_offset_is_measured():
    a, b = _noise(2.0, 0), _noise(2.0, 1)
    reference = band_cues(a, b, SR)
    louder = band_cues(a * 10 ** (6.0 / 20), b, SR)  # +6 dB on the first channel
    np.testing.assert_allclose(louder.ild - reference.ild, 6.0, atol=1e-6)
    assert cue_errors(reference, louder)["d_ild"] == pytest.approx(6.0, abs=1e-6)
    # clipping: a 60 dB offset counts as at most 40 dB of ILD
    assert np.abs(band_cues(a * 1000, b, SR).ild).max() <= 40.0


def test_ipd_of_pure_delay():
    delay = 8  # samples: 0.18 ms, phase slope -2 pi f delay / sr
    b = _noise(2.0, 2)
    a = np.concatenate([np.zeros(delay), b[:-delay]])
    cues = band_cues(a, b, SR)
    low = cues.centres < 1500
    expected = wrap(-2 * np.pi * cues.centres[low] * delay / SR)
    measured = np.median(cues.ipd[:, low], axis=0)
    np.testing.assert_allclose(wrap(measured - expected), 0.0, atol=0.05)
    assert np.median(cues.icc[:, low]) > 0.95


def test_wave_metrics():
    c, p = _noise(1.0, 0), _noise(1.0, 1)
    assert w_err(c, p, p) == -math.inf  # copy: image collapsed
    assert w_err(c, c, p) == 0.0
    assert d_snr(c, p, p) == 0.0
    assert d_snr(c, c, p) == math.inf
    assert si_sdr(c, 3.0 * c) > 100
    assert si_sdr(c, np.zeros_like(c)) == -math.inf
    noisy = c + 0.1 * p * np.sqrt(np.sum(c**2) / np.sum(p**2))  # 20 dB below c
    assert si_sdr(c, noisy) == pytest.approx(20.0, abs=0.2)


def test_score_of_truth_is_ideal():
    c, p = _noise(2.0, 0), _noise(2.0, 1) + 0.3 * _noise(2.0, 0)
    s = score(c, p, c, p, SR)
    assert s["mss"] == 0.0 and s["w_err"] == 0.0 and s["d_snr"] == math.inf
    assert s["d_ild"] == s["d_icc"] == s["d_ipd"] == 0.0


def test_gates_compare_model_with_baselines():
    from mcrave.evaluation.gates import check_gates

    row = dict.fromkeys(("si_sdr", "d_snr", "mss", "d_ild", "d_icc", "d_ipd"), 1.0)
    table = {
        "copy": {**row, "w_err": -math.inf},
        "copy_decoded": {**row, "w_err": -math.inf},
        "wiener_pm": {**row, "mss": 0.5, "w_err": -1.0},
        "model": {**row, "mss": 0.7, "d_ild": 0.9, "d_icc": 1.0, "w_err": -3.5},
    }
    gates = check_gates(table)
    assert gates["mss<copy"] and gates["mss<copy_decoded"] and not gates["mss<wiener_pm"]
    assert gates["d_ild<copy"] and gates["d_ild<wiener_pm"]
    assert not gates["d_icc<copy"]  # equal is not better
    assert not gates["abs_w_err<=3"]
    assert check_gates({"copy": table["copy"]}) == {}


def test_summary_groups_and_means():
    from mcrave.evaluation.report import summarise

    def row(case, present, system, value):
        return {
            "case": case,
            "present": present,
            "system": system,
            **dict.fromkeys(("si_sdr", "d_snr", "mss", "d_ild", "d_icc", "d_ipd"), value),
            "w_err": -math.inf if system == "copy" else value,
        }

    rows = [
        row("{a} -> b", [0], "model", 1.0),
        row("{a} -> b", [0], "copy", 3.0),
        row("{a,c,d} -> b", [0, 2, 3], "model", 2.0),
        row("{a,c,d} -> b", [0, 2, 3], "copy", 5.0),
        row("all -> a", [0, 1, 2, 3], "recon_all", float("nan")),
    ]
    summary = summarise(rows, ["copy", "model", "recon_all"], channels=4)
    assert list(summary) == [
        "all",
        "1 of 4 present",
        "3 of 4 present",
        "{a} -> b",
        "{a,c,d} -> b",
        "all -> a",
    ]
    assert summary["all"]["model"]["mss"] == 1.5 and summary["all"]["model"]["n"] == 2
    assert summary["3 of 4 present"]["copy"]["mss"] == 5.0
    assert summary["all"]["copy"]["w_err"] == -math.inf
    assert math.isnan(summary["all"]["recon_all"]["mss"])  # all undefined -> nan, not an error
    assert "recon_all" not in summary["1 of 4 present"]
