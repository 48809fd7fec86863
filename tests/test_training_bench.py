"""Smoke test of bench/train_bench.py --quick (real run, test preset; no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_bench_quick_writes_json_and_table(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "train_bench.py"),
            "--quick",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["preset"] == "test" and row["batch"] == 4 and row["crop"] == 8192
    for key in ("phase1_step_s", "phase2_step_s", "phase1_x_realtime", "phase2_x_realtime"):
        assert row[key] > 0
    assert result["rave_v2"].startswith("not measured")
    assert "| test | 2 | 4 x 8192 |" in proc.stdout
