"""Smoke run of the model benchmark (timings are reported by the bench, never asserted)."""

import json
import subprocess
import sys


def test_model_bench_quick(tmp_path):
    out = tmp_path / "mb.json"
    proc = subprocess.run(
        [sys.executable, "bench/model_bench.py", "--quick", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["channels"] for r in rows] == [1, 2]
    assert all(r["offline_xrt"] > 0 and r["stream512_b16_xrt"] > 0 for r in rows)
    assert out.with_suffix(".md").read_text().startswith("| config |")
