"""Exact resume, SIGTERM/SIGINT and kill-safety of `mcrave train` (real subprocesses, test preset)."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from training_helpers import progress, run_env, train_cmd, write_dataset

from mcrave.checkpoint import load_checkpoint
from mcrave.cli.train import main as train_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"))


def _run(cmd, timeout=240, **env):
    proc = subprocess.run(cmd, env=run_env(**env), capture_output=True, text=True, timeout=timeout)
    return proc


def _assert_same_state(a, b):
    for key in a["model_state"]:
        assert torch.equal(a["model_state"][key], b["model_state"][key]), key
    for key in a["extra"]["discriminator"]:
        assert torch.equal(a["extra"]["discriminator"][key], b["extra"]["discriminator"][key])
    for opt in ("opt_g", "opt_d"):
        sa, sb = a["extra"][opt]["state"], b["extra"][opt]["state"]
        assert sa.keys() == sb.keys() and len(sa) > 0
        for idx in sa:
            for name in sa[idx]:
                assert torch.equal(sa[idx][name], sb[idx][name]), (opt, idx, name)
        assert a["extra"][opt]["param_groups"] == b["extra"][opt]["param_groups"]


def test_sigterm_at_odd_step_past_phase_switch_then_resume_is_exact(dataset, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    proc = _run(train_cmd(dataset, full, "--steps", "18"))
    assert proc.returncode == 0, proc.stderr

    # the trainer sends itself a real SIGTERM after step 13 (phase 2 began at 10; D steps 10, 14)
    proc = _run(train_cmd(dataset, split, "--steps", "18"), MCRAVE_FAULT="sigterm_at:13")
    assert proc.returncode == 0, proc.stderr
    assert "stopped by SIGTERM at step 13" in proc.stderr
    stop = progress(split)[-1]
    assert stop["event"] == "stop" and stop["step"] == 13 and stop["reason"] == "SIGTERM"
    interrupted = load_checkpoint(split / "last.ckpt")
    assert interrupted["step"] == 13 and interrupted["extra"]["phase"] == 2

    proc = _run(train_cmd(dataset, split, "--steps", "18", "--resume"))
    assert proc.returncode == 0, proc.stderr
    a, b = load_checkpoint(full / "last.ckpt"), load_checkpoint(split / "last.ckpt")
    assert a["step"] == b["step"] == 18
    _assert_same_state(a, b)
    # the validation's latent ranking (for the nn~ export) travels with the run and its resume
    for key in ("mean", "components", "explained"):
        assert torch.equal(a["latent_pca"][key], b["latent_pca"][key])
    # and the run really trained: weights moved away from the step-13 state
    assert any(
        not torch.equal(a["model_state"][k], interrupted["model_state"][k])
        for k in a["model_state"]
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_external_signal_writes_a_checkpoint_and_exits_zero(dataset, tmp_path, sig):
    run_dir = tmp_path / "run"
    cmd = train_cmd(dataset, run_dir, "--steps", "100000", "--metrics-port", "0")
    proc = subprocess.Popen(
        cmd, env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not any(e["event"] == "step" and e["step"] >= 3 for e in progress(run_dir)):
            assert proc.poll() is None and time.monotonic() < deadline, "trainer did not start"
            time.sleep(0.2)
        port = progress(run_dir)[0]["metrics_port"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stop = progress(run_dir)[-1]
    assert stop["event"] == "stop" and stop["reason"] == sig.name
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert ckpt["step"] == stop["step"] >= 3
    assert (run_dir / "checkpoints" / f"step-{stop['step']:08d}.ckpt").exists()

    scraped = {
        s.name: s for f in text_string_to_metric_families(metrics.decode()) for s in f.samples
    }
    assert scraped["mcrave_train_steps_total"].value >= 3
    assert scraped["mcrave_train_realtime_factor"].value > 0
    losses = {
        s.labels["name"]
        for f in text_string_to_metric_families(metrics.decode())
        if f.name == "mcrave_train_loss"
        for s in f.samples
    }
    assert {"spectral", "multiband", "interchannel", "kl"} <= losses
    tb = EventAccumulator(str(run_dir / "tensorboard"))
    tb.Reload()
    assert len(tb.Scalars("loss/spectral")) >= 3


def test_kill_during_checkpoint_keeps_the_previous_one(dataset, tmp_path):
    run_dir = tmp_path / "run"
    assert _run(train_cmd(dataset, run_dir, "--steps", "5")).returncode == 0
    # SIGKILL between fsync and rename of the step-10 checkpoint
    proc = _run(
        train_cmd(dataset, run_dir, "--steps", "10", "--resume"),
        MCRAVE_FAULT="kill_before_rename",
    )
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == 5
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == [
        "step-00000005.ckpt"
    ]
    proc = _run(train_cmd(dataset, run_dir, "--steps", "10", "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == 10


def test_bad_input_exits_2_with_one_line(dataset, tmp_path, capsys):
    def run(*args: str) -> tuple[int, str]:
        code = train_main(train_cmd(dataset, tmp_path / "run", *args)[3:])
        return code, capsys.readouterr().err

    code = train_main(["train", str(tmp_path / "nope"), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "manifest.json" in err and len(err.strip().splitlines()) == 1
    code, err = run("--resume")
    assert code == 2 and "nothing to resume" in err
    code, err = run("--set", "train.bogus=1")
    assert code == 2 and "train.bogus" in err
    code, err = run("--set", "train.crop_frames=1000")
    assert code == 2 and "not a multiple of the model ratio" in err
    assert not (tmp_path / "run").exists()
    assert run("--steps", "1")[0] == 0
    bigger = write_dataset(tmp_path / "bigger", files=5)
    code = train_main(["train", str(bigger), "-o", str(tmp_path / "run"), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "data order differs" in err and len(err.strip().splitlines()) == 1
