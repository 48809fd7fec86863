"""`mcrave train` argument handling: typed --set overrides, help."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
