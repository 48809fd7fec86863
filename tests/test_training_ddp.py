"""Data-parallel training through a real `torchrun` (2 gloo ranks) against one process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from training_helpers import progress, run_env, write_dataset

from mcrave.checkpoint import load_checkpoint
from mcrave.config import Config
from mcrave.data.dataset import CropDataset
from mcrave.model import MCRave
from mcrave.training.data import BatchPlan, mix_seed
from mcrave.training.discriminator import Discriminator
from mcrave.training.distributed import DistInfo

ARGS = [
    "--config",
    "test",
    "--threads",
    "1",
    "--seed",
    "5",
    "--steps",
    "8",
    "--set",
    "train.phase1_steps=3",
    "--set",
    "train.d_every=2",
    # the spatial stage's zero-initialised heads turn summation-order noise into Adam's sign-like
    # steps (gap 0.09 vs 0.026 with the stage's losses weighted 0, on the same runs); that its
    # losses split exactly over ranks is checked in test_training_trainer.py instead
    "--set",
    "train.spatial_weight=0",
]


def test_ranks_read_disjoint_rows_of_the_same_global_batches(tmp_path):
    crops = CropDataset(write_dataset(tmp_path), "train", 1000, seed=1, crops_per_epoch=11)
    single = BatchPlan(crops, 4, seed=1, info=DistInfo())
    ranks = [BatchPlan(crops, 2, seed=1, info=DistInfo(r, 2)) for r in range(2)]
    for step in range(12):  # crosses several epochs of 11 crops
        rows = [plan.positions(step) for plan in ranks]
        assert not set(rows[0]) & set(rows[1])
        assert rows[0] + rows[1] == single.positions(step)
    seen = [p for step in range(11) for p in single.positions(step)]  # 44 rows = 4 epochs
    for epoch in range(4):
        assert sorted(i for e, i in seen if e == epoch) == list(range(11))
    assert single.state() == ranks[0].state()
    both = np.concatenate([plan.audio(3) for plan in ranks])
    assert np.array_equal(both, single.audio(3).numpy())


def _initial(cfg: Config, seed: int) -> tuple[dict, dict]:
    torch.manual_seed(mix_seed(seed, 0x1417))  # the trainer's initialisation
    model = MCRave(cfg.model)
    disc = Discriminator(cfg.model.channels, cfg.train.disc_capacity)
    return model.state_dict(), disc.state_dict()


def _relative_change_gap(init: dict, a: dict, b: dict) -> float:
    da = torch.cat([(a[k] - init[k]).flatten() for k in init])
    db = torch.cat([(b[k] - init[k]).flatten() for k in init])
    assert da.norm() > 0
    return float((da - db).norm() / da.norm())


def _listing(run_dir):
    return sorted(
        p.relative_to(run_dir).as_posix()
        for p in run_dir.rglob("*")
        if "tensorboard" not in p.parts
    )


@pytest.mark.slow
def test_two_ranks_match_one_process_and_stop_together(tmp_path):
    dataset = write_dataset(tmp_path / "ds")
    one, two = tmp_path / "one", tmp_path / "two"
    cmd = [sys.executable, "-m", "mcrave.cli.main", "train", str(dataset), *ARGS]
    proc = subprocess.run(
        [*cmd, "-o", str(one), "--set", "train.batch_size=4"],
        timeout=240,
        env=run_env(MCRAVE_FAULT="sigterm_at:5"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    # rank 1 alone gets SIGTERM after step 5 (phase 2, a discriminator step); rank 0 must follow
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mcrave.cli.main",
        "train",
        str(dataset),
        *ARGS,
    ]
    proc = subprocess.run(
        [*torchrun, "-o", str(two), "--set", "train.batch_size=2"],
        timeout=300,
        env=run_env(MCRAVE_FAULT="sigterm_at:5@1"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "stopped by SIGTERM at step 5 (rank 1)" in proc.stderr
    assert "stopped by peer-signal at step 5 (rank 0)" in proc.stderr

    a, b = load_checkpoint(one / "last.ckpt"), load_checkpoint(two / "last.ckpt")
    assert a["step"] == b["step"] == 5
    assert a["extra"]["data_order"] == b["extra"]["data_order"]
    model0, disc0 = _initial(Config.from_dict(a["config"]), seed=5)
    # Float summation order differs, so the runs agree only to rounding, which Adam's nearly
    # sign-like early steps amplify for near-zero gradients. Measure that floor: the same single
    # process with 2 threads instead of 1 (only the summation order changes). A wrong data split
    # or unaveraged gradients give a gap of ~1.
    proc = subprocess.run(
        [*cmd, "-o", str(tmp_path / "threads"), "--set", "train.batch_size=4", "--threads", "2"],
        timeout=240,
        env=run_env(MCRAVE_FAULT="sigterm_at:5"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    c = load_checkpoint(tmp_path / "threads" / "last.ckpt")

    def weights(ck: dict) -> tuple[dict, dict]:
        return ck["model_state"], ck["extra"]["discriminator"]

    for init, x, y, z in zip((model0, disc0), weights(a), weights(b), weights(c), strict=True):
        rounding = _relative_change_gap(init, x, z)
        ranks = _relative_change_gap(init, x, y)
        # the 2-thread run no longer perturbs these small ops (its gap measured 7e-8), while the
        # 1-vs-2-rank gap of the same recipe is 0.026 with the spatial stage off or weighted 0:
        # Adam's sign-like first steps on near-zero gradients; a wrong split gives ~1
        assert ranks < max(3 * rounding, 0.05) and ranks < 0.3, (ranks, rounding)

    # only rank 0 wrote: one writer in the log, one TensorBoard file, the same files as one process
    events = progress(two)
    assert [e["world"] for e in events if e["event"] == "start"] == [2]
    assert [e["step"] for e in events if e["event"] == "stop"] == [5]
    assert len(list((two / "tensorboard").iterdir())) == 1
    assert _listing(two) == _listing(one)
