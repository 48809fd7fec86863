"""`mcrave eval` end to end on a tiny untrained model, and its input errors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from mcrave.checkpoint import save_checkpoint
from mcrave.cli.evaluate import main
from mcrave.cli.main import main as cli_main
from mcrave.config import preset
from mcrave.evaluation.metrics import METRICS
from mcrave.model import MCRave

SR = 44100


def _stereo(seconds: float, seed: int) -> np.ndarray:
    """[T, 2]: R coloured noise, L = R delayed 30 samples, 4 dB quieter, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    right = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) * 0.05
    left = 0.63 * np.concatenate([np.zeros(30), right[:-30]]) + 0.002 * rng.standard_normal(n)
    return np.stack([left, right], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    save_checkpoint(root / "model.ckpt", MCRave(preset("test", channels=2).model))
    sf.write(root / "a.wav", _stereo(2.5, 0), SR)
    sf.write(root / "mono.wav", _stereo(2.5, 1)[:, 0], SR)
    # a dataset prepared by `mcrave prepare`: only its valid files may be evaluated
    (root / "src").mkdir()
    for i in range(3):
        sf.write(root / "src" / f"s{i}.wav", _stereo(2.0, 2 + i), SR)
    args = ["prepare", str(root / "src"), "-o", str(root / "dataset"), "--channels", "2"]
    assert cli_main([*args, "--valid-fraction", "0.5", "-q"]) == 0
    return root


def test_eval_writes_report_json_md_png(workdir: Path):
    out = workdir / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        "eval",
        str(workdir / "model.ckpt"),
        str(workdir / "a.wav"),
        str(workdir / "dataset"),
        "-o",
        str(out),
        "--passthrough",
        "--chunk",
        "1024",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "mcrave.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # no terminal: timestamped lines, a header, one per scored file, then the summary
    lines = proc.stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d mcrave eval: "
    assert all(re.match(stamp, line) for line in lines), lines
    count = len(json.loads((out / "report.json").read_text())["files"])
    assert len(lines) == count + 2
    assert all(f"[{k}/{count}] scored " in lines[k] for k in range(1, count + 1)), lines
    assert "done: wrote" in lines[-1] and "scored cases" in lines[-1]
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "mcrave-eval-report"
    manifest = json.loads((workdir / "dataset" / "manifest.json").read_text())
    valid = [Path(f["source"]).name for f in manifest["files"] if f["split"] == "valid"]
    assert 0 < len(valid) < 3
    names = [f["name"] for f in report["files"]]
    assert names == [str(workdir / "a.wav")] + [f"dataset/valid/{v}" for v in valid]
    assert report["settings"]["present_sets"] == [[0], [1], [0, 1]]
    systems = [
        "silence",
        "copy",
        "copy_decoded",
        "wiener",
        "wiener_pm",
        "oracle",
        "phase_blind",
        "model",
        "model_coded",
        "model_latent",
        "model_pt",
        "coded_pt",
        "recon_all",
    ]
    assert report["systems"] == systems
    overall = report["summary"]["all"]
    assert set(overall) == set(systems) and set(METRICS) <= set(overall["model"])
    # each file: 2 single-channel cases, and 2 channels reconstructed
    assert overall["model"]["n"] == overall["recon_all"]["n"] == 2 * len(names)
    assert float(overall["copy"]["w_err"]) == -math.inf and overall["copy"]["d_snr"] == 0.0
    # a delayed, attenuated copy is LTI: the fitted baselines must beat copying it
    r_to_l = report["summary"]["{R} -> L"]
    assert r_to_l["wiener_pm"]["d_snr"] > 10.0
    assert r_to_l["wiener_pm"]["d_ild"] < r_to_l["copy"]["d_ild"]
    assert r_to_l["wiener_pm"]["mss"] < r_to_l["copy"]["mss"] < r_to_l["silence"]["mss"]
    assert set(report["gates"]) == set(report["summary"]) - {"all -> L", "all -> R"}
    # an untrained model (its spatial stage starts at the copy) must not beat a fitted LTI filter
    assert report["gates"]["all"]["mss<wiener_pm"] is False
    assert set(report["gates_coded"]) == set(report["gates"])
    assert "mss<model_latent" in report["gates"]["all"]
    rates = report["bitrate"]
    assert rates["raw_bits_per_second"] == pytest.approx(SR / 256 * 8 * 32)
    assert rates["kl_bits_per_second"] >= 0.0
    assert report["model"]["latency"] >= 0 and report["latency_check"]["checks"]
    md = (out / "report.md").read_text()
    for system in systems:
        assert f"| {system} |" in md
    for png in ("metrics.png", "spectrograms.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in md


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["{mono}"], "mono.wav: has 1 channels, the model has 2"),
        (["{missing}"], "nope.wav: no such file or folder"),
        (["{wav}", "--present", "Q"], "--present: 'Q'"),
        (["{wav}", "--chunk", "1000"], "chunk of 1000 samples"),
        (["{wav}", "--max-seconds", "0.5"], "too short"),
        (["{empty}"], "empty: folder has no audio files"),
    ],
)
def test_eval_bad_input_exits_2_with_one_line(workdir, capsys, extra, needle):
    paths = {
        "mono": workdir / "mono.wav",
        "missing": workdir / "nope.wav",
        "wav": workdir / "a.wav",
        "empty": workdir / "empty",
    }
    (workdir / "empty").mkdir(exist_ok=True)
    args = [a.format(**paths) for a in extra]
    code = main(["eval", str(workdir / "model.ckpt"), *args, "-o", str(workdir / "bad")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1
    assert not (workdir / "bad").exists()


def test_eval_rejects_unloadable_model(workdir, capsys):
    junk = workdir / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    code = main(["eval", str(junk), str(workdir / "a.wav"), "-o", str(workdir / "bad")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "junk.ckpt" in err and len(err.splitlines()) == 1


def test_eval_rejects_diverged_model(workdir, capsys):
    """A model with NaN weights must not be averaged into a report (NaN means are skipped)."""
    model = MCRave(preset("test", channels=2).model)
    with torch.no_grad():
        next(model.decoder.parameters()).fill_(float("nan"))
    save_checkpoint(workdir / "nan.ckpt", model)
    code = main(
        ["eval", str(workdir / "nan.ckpt"), str(workdir / "a.wav"), "-o", str(workdir / "bad")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "a.wav: model output is not finite" in err
    assert not (workdir / "bad").exists()


def test_a_folder_of_audio_is_read_like_its_files(workdir):
    """RAVE users keep held-out audio in folders: a folder without a manifest is its audio files
    (recursively, sorted); with a manifest it is a prepared dataset's valid split."""
    from mcrave.evaluation.sources import load_inputs

    files = load_inputs([workdir / "src"], 2, SR)
    assert [Path(f.name).name for f in files] == ["s0.wav", "s1.wav", "s2.wav"]
    assert all(f.audio.shape == (2, int(2.0 * SR)) for f in files)
    dataset = load_inputs([workdir / "dataset"], 2, SR)
    assert 0 < len(dataset) < 3 and all("/valid/" in f.name for f in dataset)
