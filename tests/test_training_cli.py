"""`mcrave train` argument handling: typed --set overrides, --init-from, help."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from training_helpers import run_env, train_cmd, write_dataset

from mcrave.checkpoint import load_checkpoint
from mcrave.cli.train import apply_overrides
from mcrave.config import preset


def test_overrides_are_typed_like_the_field():
    cfg = apply_overrides(
        preset("test"),
        [
            "train.phase1_steps=20",
            "train.lr=5e-4",
            "model.noise=false",
            "train.betas=0.8,0.99",
            "model.dilations=1,2",
        ],
    )
    assert cfg.train.phase1_steps == 20 and cfg.train.lr == 5e-4
    assert cfg.model.noise is False
    assert cfg.train.betas == (0.8, 0.99) and cfg.model.dilations == (1, 2)
    assert cfg.model.channels == 2  # untouched fields stay


@pytest.mark.parametrize(
    "item",
    [
        "train.nope=1",
        "phase1_steps=3",
        "train.phase1_steps",
        "train.phase1_steps=x",
        "model.noise=maybe",
        "model.projection=bogus",
    ],
)
def test_bad_overrides_name_the_item(item):
    with pytest.raises(ValueError, match="--set"):
        apply_overrides(preset("test"), [item])


def test_help_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "mcrave.cli.main", "train", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0 and "--metrics-port" in proc.stdout


def test_init_from_copies_every_matching_tensor(tmp_path):
    """A 3-channel run warm-started from a stereo one shares all but its first and last convs."""
    stereo = write_dataset(tmp_path / "stereo", channels=2, files=1)
    three = write_dataset(tmp_path / "three", channels=3, files=1)
    run = lambda *a: subprocess.run(a, capture_output=True, text=True, env=run_env(), timeout=300)  # noqa: E731
    assert run(*train_cmd(stereo, tmp_path / "a", "--steps", "2")).returncode == 0
    source = tmp_path / "a" / "last.ckpt"
    proc = run(*train_cmd(three, tmp_path / "b", "--max-steps", "0", "--init-from", str(source)))
    assert proc.returncode == 0, proc.stderr
    copied, total = map(int, re.search(r"(\d+) of (\d+) tensors", proc.stdout).groups())
    assert 0 < copied < total
    a = load_checkpoint(source)["model_state"]
    b = load_checkpoint(tmp_path / "b" / "last.ckpt")["model_state"]
    same = [k for k in b if k in a and a[k].shape == b[k].shape]
    assert len(same) == copied and all(torch.equal(a[k], b[k]) for k in same)
    assert b["encoder.inp.conv.parametrizations.weight.original1"].shape[1] == 3 * 8 + 3
    bad = run(*train_cmd(three, tmp_path / "b", "--resume", "--init-from", str(source)))
    assert bad.returncode == 2 and "--init-from" in bad.stderr


def test_redirected_run_prints_timestamped_progress_and_a_summary(tmp_path):
    """Without a terminal (a log file, a trainer job) the run says what it does, line by line."""
    data = write_dataset(tmp_path / "d", channels=2, files=1)
    proc = subprocess.run(
        train_cmd(data, tmp_path / "run", "--max-steps", "4", "--log-every", "2"),
        capture_output=True,
        text=True,
        env=run_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d mcrave train: "
    lines = proc.stdout.splitlines()
    steps = [ln for ln in lines if re.match(stamp + r"step [24]/4 loss \S+ spectral \S+", ln)]
    assert len(steps) == 2 and all("steps/s" in ln and "ETA" in ln for ln in steps), proc.stdout
    assert any(re.match(stamp + r"step 4: checkpoint .*step-00000004\.ckpt$", ln) for ln in lines)
    assert re.match(stamp + r"done \(done\) at step 4 after .*last checkpoint ", lines[-1])
    assert "it/s" not in proc.stderr and "step/s" not in proc.stderr  # no bar off a terminal
