"""`mcrave new/info/export/infer` as a user runs them (real subprocesses, real files)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mcrave.cli.main import main


def mcrave(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "mcrave.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert (
        mcrave("new", "--config", "test", "--channels", "2", "-o", "m.ckpt", cwd=d).returncode == 0
    )
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((6000, 2)) * 0.1).astype(np.float32)
    sf.write(d / "stereo.wav", stereo, 44100)
    sf.write(d / "right.wav", stereo[:, 1], 44100)
    sf.write(d / "three.wav", np.zeros((600, 3), np.float32), 44100)
    return d


def test_new_export_infer_flow(workdir):
    info = mcrave("info", "m.ckpt", "--json", cwd=workdir)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["channels"] == 2 and facts["ratio"] == 256 and facts["latency_samples"] > 0
    exp = mcrave("export", "m.ckpt", "-o", "m.ts", cwd=workdir)
    assert exp.returncode == 0 and (workdir / "m.ts").is_file(), exp.stderr
    run = mcrave(
        "infer", "m.ckpt", "stereo.wav", "out.wav", "--present", "1", "--chunk", "512", cwd=workdir
    )
    assert run.returncode == 0, run.stderr
    out, rate = sf.read(workdir / "out.wav", always_2d=True)
    assert out.shape == (6000, 2) and rate == 44100
    mono = mcrave(
        "infer",
        "m.ckpt",
        "right.wav",
        "out_mono.wav",
        "--present",
        "1",
        "--chunk",
        "512",
        cwd=workdir,
    )
    assert mono.returncode == 0, mono.stderr
    np.testing.assert_allclose(sf.read(workdir / "out_mono.wav", always_2d=True)[0], out, atol=1e-6)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["infer", "m.ckpt", "missing.wav", "o.wav"], "missing.wav"),
        (["infer", "m.ckpt", "three.wav", "o.wav"], "three.wav: has 3 channels"),
        (["infer", "m.ckpt", "stereo.wav", "o.wav", "--present", "4"], "out of range"),
        (["infer", "m.ckpt", "stereo.wav", "o.wav", "--present", ","], "empty"),
        (["infer", "m.ckpt", "stereo.wav", "o.wav", "--chunk", "100"], "--chunk"),
        (["info", "stereo.wav"], "stereo.wav"),
        (["new", "--channels", "2", "-o", "m.ckpt"], "exists"),
        (["export", "m.ckpt", "-o", "m.pt"], ".ts"),
    ],
)
def test_bad_input_exits_2_with_one_line(workdir, args, needle, capsys, monkeypatch):
    # in-process (the happy path above runs real subprocesses): same entry point, faster
    monkeypatch.chdir(workdir)
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
