"""Synthetic corpus: byte-level determinism and the inter-channel structure it promises."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from mcrave.data.synth.corpus import synth_corpus
from mcrave.data.synth.material import MATERIALS, render_material
from mcrave.data.synth.scenes import render_scene, sample_scene

SR = 44100


def _xcorr_peak_ms(a: np.ndarray, b: np.ndarray, max_ms: float = 5.0) -> tuple[float, float]:
    """Lag (ms) maximising sum a[n + k] b[n] within +-max_ms, and the normalised peak value."""
    c = signal.correlate(a, b, mode="full", method="fft")
    lags = signal.correlation_lags(len(a), len(b))
    keep = np.abs(lags) <= int(max_ms * SR / 1e3)
    k = int(np.argmax(c[keep]))
    return lags[keep][k] / SR * 1e3, c[keep][k] / np.sqrt(np.sum(a * a) * np.sum(b * b))


def test_cli_same_seed_same_bytes_and_valid_files(tmp_path):
    args = ["--layout", "stereo", "--minutes", "0.05", "--seed", "7", "--file-seconds", "1.5"]
    cmd = [sys.executable, "-m", "mcrave.cli.main", "synth", str(tmp_path / "a"), *args, "-q"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    synth_corpus(tmp_path / "b", "stereo", 0.05, 7, file_seconds=1.5)
    synth_corpus(tmp_path / "c", "stereo", 0.05, 8, file_seconds=1.5)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["scenes.json", "synth_7_0000.wav", "synth_7_0001.wav"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = (tmp_path / "c" / "synth_8_0000.wav").read_bytes()
    assert other != (tmp_path / "a" / "synth_7_0000.wav").read_bytes()
    doc = json.loads((tmp_path / "a" / "scenes.json").read_text())
    assert doc["channels"] == 2 and doc["sample_rate"] == SR and len(doc["files"]) == 2
    for entry in doc["files"]:
        audio, sr = sf.read(tmp_path / "a" / entry["file"])
        assert sr == SR and audio.shape == (int(1.5 * SR), 2)
        assert 0.05 < np.abs(audio).max() < 1.0
        assert np.all(np.std(audio, axis=0) > 1e-3)


def _gcc_phat_peak_ms(a: np.ndarray, b: np.ndarray, max_ms: float = 5.0) -> float:
    """Same lag convention as _xcorr_peak_ms, with PHAT whitening (robust for tonal material)."""
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    cross = np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n))
    c = np.fft.irfft(cross / (np.abs(cross) + 1e-12), n)
    m = int(max_ms * SR / 1e3)
    window = np.concatenate([c[-m:], c[: m + 1]])
    return (int(np.argmax(window)) - m) / SR * 1e3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spaced_pair_correlates_at_1_to_2_ms(seed):
    rng = np.random.default_rng(seed)
    scene = sample_scene("stereo", 4.0, rng, kind="spaced_pair")
    x = render_scene(scene, SR, rng).astype(np.float64)
    lag = _gcc_phat_peak_ms(x[0], x[1])
    assert 0.95 <= abs(lag) <= 2.0, (lag, scene["sources"])
    # the peak is one source's direct path: correlate(L, R) peaks at t_L - t_R = -tdoa[1]
    assert min(abs(lag + s["tdoa_ms"][1]) for s in scene["sources"]) < 0.1


def test_spaced_pair_plain_correlation_peaks_off_zero_for_speech():
    rng = np.random.default_rng(1)
    scene = sample_scene("stereo", 4.0, rng, kind="spaced_pair")
    scene["sources"] = [dict(scene["sources"][0], material="speech")]
    x = render_scene(scene, SR, rng).astype(np.float64)
    lag, peak = _xcorr_peak_ms(x[0], x[1])
    zero = np.sum(x[0] * x[1]) / np.sqrt(np.sum(x[0] ** 2) * np.sum(x[1] ** 2))
    assert lag == pytest.approx(-scene["sources"][0]["tdoa_ms"][1], abs=0.1)
    assert 1.0 <= abs(lag) <= 2.0 and peak > abs(zero) + 0.2, (lag, peak, zero)


def test_panned_source_has_expected_level_and_time_difference():
    rng = np.random.default_rng(3)
    scene = {
        "kind": "studio",
        "channels": 2,
        "duration_s": 3.0,
        "peak_dbfs": -3.0,
        "noise_dbfs": -120.0,
        "reverb": {"room": {"dims": [6, 5, 3], "rt60": 0.5}, "send_db": -300.0},
        "sources": [
            {
                "material": "speech",
                "level_db": 0.0,
                "pan": -0.5,
                "itd_ms": 0.6,
                "ild_db": [0.0, 20 * np.log10(np.tan(np.pi / 8))],
                "tdoa_ms": [0.0, 0.6],
            }
        ],
    }
    x = render_scene(scene, SR, rng).astype(np.float64)
    ild = 10 * np.log10(np.sum(x[1] ** 2) / np.sum(x[0] ** 2))
    assert ild == pytest.approx(scene["sources"][0]["ild_db"][1], abs=0.1)  # -7.66 dB
    assert _gcc_phat_peak_ms(x[0], x[1]) == pytest.approx(-0.6, abs=1.5e3 / SR)
    # one dry source: coherent up to the half-sample grid error of a 26.46-sample lag
    assert _xcorr_peak_ms(x[0], x[1])[1] > 0.9


def test_sampled_studio_scene_annotations_match_pan_law():
    scene = sample_scene("stereo", 2.0, np.random.default_rng(5), kind="studio")
    for s in scene["sources"]:
        expected = 20 * np.log10(np.tan((s["pan"] + 1) * np.pi / 4))
        assert s["ild_db"][1] == pytest.approx(expected, abs=1e-3)
        assert abs(s["tdoa_ms"][1]) == pytest.approx(s["itd_ms"], abs=1e-4)
        assert np.sign(s["tdoa_ms"][1]) == -np.sign(s["pan"])  # the far channel is delayed


def test_coincident_xy_pair_has_level_but_no_time_difference():
    rng = np.random.default_rng(11)
    scene = sample_scene("stereo", 3.0, rng, kind="xy")
    scene["sources"] = scene["sources"][:1]
    x = render_scene(scene, SR, rng).astype(np.float64)
    lag, _ = _xcorr_peak_ms(x[0], x[1])
    assert abs(lag) <= 1.5e3 / SR
    src = scene["sources"][0]
    assert src["tdoa_ms"][1] == 0.0
    ild = 10 * np.log10(np.sum(x[1] ** 2) / np.sum(x[0] ** 2))
    # the diffuse tail pulls the level difference toward 0 but keeps its sign
    assert np.sign(ild) == np.sign(src["ild_db"][1]) and abs(ild) > 0.3, (ild, src)


def test_moving_source_sweeps_the_time_difference():
    """A source walking from far left to far right of a 1 m pair flips the lag's sign."""
    rng = np.random.default_rng(2)
    center = np.array([5.0, 1.5, 1.6])
    scene = {
        "kind": "array",
        "shape": "line",
        "channels": 2,
        "duration_s": 4.0,
        "peak_dbfs": -3.0,
        "noise_dbfs": -120.0,
        "room": {"dims": [10.0, 8.0, 3.5], "rt60": 0.3},
        "mics": [
            {"pos": list(center - [0.5, 0, 0]), "pattern": "omni", "axis": [0, 1, 0]},
            {"pos": list(center + [0.5, 0, 0]), "pattern": "omni", "axis": [0, 1, 0]},
        ],
        "sources": [
            {
                "material": "drums",
                "level_db": 0.0,
                "speed_mps": 1.0,
                "path": [list(center + [-2.0, 1.5, 0]), list(center + [2.0, 1.5, 0])],
            }
        ],
    }
    x = render_scene(scene, SR, rng).astype(np.float64)
    first = _gcc_phat_peak_ms(x[0, :SR], x[1, :SR])
    last = _gcc_phat_peak_ms(x[0, -SR:], x[1, -SR:])
    assert first < -0.8 and last > 0.8, (first, last)  # L is reached first, then R


@pytest.mark.parametrize("layout", ["mics4", "mics8", "3"])
def test_arrays_render_sane_channels(layout):
    rng = np.random.default_rng(4)
    scene = sample_scene(layout, 2.0, rng)
    x = render_scene(scene, SR, rng)
    n = {"mics4": 4, "mics8": 8, "3": 3}[layout]
    assert x.shape == (n, 2 * SR) and x.dtype == np.float32
    assert np.isfinite(x).all() and 0.05 < np.abs(x).max() < 1.0
    corr = np.corrcoef(x)
    assert np.all(corr[np.triu_indices(n, 1)] < 0.9999)  # no duplicated channels
    for s in scene["sources"]:
        aperture = np.ptp(np.array([m["pos"] for m in scene["mics"]]), axis=0)
        assert np.max(np.abs(s["tdoa_ms"])) <= np.linalg.norm(aperture) / 343 * 1e3 + 1e-3


def test_materials_are_finite_normalised_and_distinct():
    spectra = {}
    for kind in MATERIALS:
        x = render_material(kind, 2.0, 16000, np.random.default_rng(0))
        assert x.shape == (32000,) and np.isfinite(x).all()
        active = np.abs(x) > 1e-4 * np.abs(x).max()
        assert np.sqrt(np.mean(x[active] ** 2)) == pytest.approx(1.0, rel=1e-6)
        spectra[kind] = np.log(signal.welch(x, 16000, nperseg=1024)[1] + 1e-12)
    kinds = list(spectra)
    for i, a in enumerate(kinds):
        for b in kinds[i + 1 :]:
            assert np.corrcoef(spectra[a], spectra[b])[0, 1] < 0.995, (a, b)
