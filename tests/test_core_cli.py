"""`mcrave new/info/export/infer` as a user runs them (real subprocesses, real files)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

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
    assert mcrave("export", "m.ckpt", "-o", "nn.ts", cwd=d).returncode == 0
    rng = np.random.default_rng(0)
    stereo = (rng.standard_normal((6000, 2)) * 0.1).astype(np.float32)
    sf.write(d / "stereo.wav", stereo, 44100)
    sf.write(d / "right.wav", stereo[:, 1], 44100)
    sf.write(d / "three.wav", np.zeros((600, 3), np.float32), 44100)
    return d


def test_new_export_infer_flow(workdir, capsys, monkeypatch):
    """In-process (torch is loaded already); the subprocess contract is the folder test's."""
    monkeypatch.chdir(workdir)
    assert main(["info", "m.ckpt", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["channels"] == 2 and facts["ratio"] == 256 and facts["latency_samples"] > 0
    assert (workdir / "nn.ts").is_file()  # the fixture's `mcrave export`
    assert (
        main(["infer", "m.ckpt", "stereo.wav", "out.wav", "--present", "1", "--chunk", "512"]) == 0
    )
    out, rate = sf.read(workdir / "out.wav", always_2d=True)
    assert out.shape == (6000, 2) and rate == 44100
    # a name works wherever a present set is given; one channel in, both out
    assert (
        main(["infer", "m.ckpt", "right.wav", "out_mono.wav", "--present", "R", "--chunk", "512"])
        == 0
    )
    np.testing.assert_allclose(sf.read(workdir / "out_mono.wav", always_2d=True)[0], out, atol=1e-6)
    bf16 = ["infer", "m.ckpt", "stereo.wav", "out_bf16.wav", "--present", "1"]
    assert main([*bf16, "--runtime", "torchscript-bf16"]) == 0
    fast = sf.read(workdir / "out_bf16.wav", always_2d=True)[0]
    assert 0 < np.abs(fast - out).max() < 2e-2 * np.abs(out).max()  # close, not equal
    assert main(["export", "m.ckpt", "-o", "int8.ts", "--precision", "int8"]) == 0
    assert torch.jit.load(str(workdir / "int8.ts")).get_methods() == ["encode", "decode", "forward"]


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
        (["infer", "nn.ts", "stereo.wav", "o.wav"], "nn.ts: is a TorchScript export (for nn~)"),
        (["info", "right.wav"], "right.wav: is not a checkpoint"),
        (["infer", "m.ckpt", "stereo.wav", "o.wav", "--threads", "0"], "--threads 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(workdir, args, needle, capsys, monkeypatch):
    # in-process (the happy path above runs real subprocesses): same entry point, faster
    monkeypatch.chdir(workdir)
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines


def test_infer_a_folder_into_a_folder_and_ctrl_c(workdir):
    """Batch generation: every audio file of a folder (recursively) lands in the output folder
    under the same relative name, at the input's sample rate. Ctrl-C mid-batch ends with one line and exit 130, and what was
    written stays whole (no temporary files left)."""
    import signal

    src = workdir / "batch"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, rate in (("a.wav", 44100), ("sub/b.flac", 48000)):
        sf.write(src / name, (rng.standard_normal((3000, 2)) * 0.1).astype(np.float32), rate)
    run = mcrave("infer", "m.ckpt", "batch", "batch_out", "--present", "1", cwd=workdir)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()  # no terminal: timestamped lines, one per file, a summary
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d mcrave infer: "
    assert [bool(re.match(stamp + r"\[\d/2\] wrote ", line)) for line in lines] == [
        True,
        True,
        False,
    ]
    assert re.match(stamp + "done: 2 files", lines[-1]), lines
    for name, rate in (("a.wav", 44100), ("sub/b.wav", 48000)):  # written at the input's rate
        out, got = sf.read(workdir / "batch_out" / name, always_2d=True)
        assert got == rate and abs(out.shape[0] - 3000) <= 1 and out.shape[1] == 2

    many = workdir / "many"
    many.mkdir()
    long = (rng.standard_normal((44100 * 20, 2)) * 0.1).astype(np.float32)
    for i in range(6):
        sf.write(many / f"{i}.wav", long, 44100)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcrave.cli.main", "infer", "m.ckpt", "many", "many_out"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    first = proc.stdout.readline()  # the first file is done: the second is being computed
    assert "mcrave infer: [1/6] wrote" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip() == "mcrave infer: interrupted", err
    written = sorted(p.name for p in (workdir / "many_out").iterdir())
    assert written and len(written) < 6 and all(not n.startswith(".") for n in written)
    for name in written:
        assert sf.read(workdir / "many_out" / name)[0].shape == long.shape
