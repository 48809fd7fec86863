"""Smoke runs of the service benches (--quick): real services, JSON + markdown written.

No timing is asserted: only that every measurement was made and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sdk_helpers import REPO


def run_bench(script: str, out) -> dict:
    run = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert out.with_suffix(".md").read_text().startswith("|")
    return json.loads(out.read_text())


@pytest.mark.slow
def test_service_bench_quick(tmp_path):
    result = run_bench("service_bench.py", tmp_path / "service.json")
    (row,) = result["throughput"]
    assert row["channels"] == 2 and row["service_xrt"] > 0 and row["inprocess_xrt"] > 0
    for mode, leg in (("direct", "to_decoder"), ("relayed", "encoder_to_decoder")):
        latency = result["latency"][mode]
        assert set(latency) >= {"added_p50_ms", "added_p99_ms", "rtt_p99_ms"}
        assert latency["chunks_traced"] > 0 and leg in latency["parts_ms"]
    assert [c["max_batch"] for c in result["concurrency"]] == [1, 16]
    assert all(c["runs"] for c in result["concurrency"])
    assert result["concurrency"][0]["mean_batch"]["encoder"] == pytest.approx(1.0)


@pytest.mark.slow
def test_soak_quick(tmp_path):
    result = run_bench("soak.py", tmp_path / "soak.json")
    assert result["error_count"] == 0 and result["streams_completed"] >= 4
    assert len(result["samples"]) >= 3
    assert all(result["rss"][s]["final_mb"] > 10 for s in ("encoder", "decoder"))


@pytest.mark.slow
def test_bridge_bench_quick(tmp_path):
    result = run_bench("bridge_bench.py", tmp_path / "bridge.json")
    idle, loaded = result["rows"]
    assert (idle["load_streams"], loaded["load_streams"]) == (0, 1)
    for row in (idle, loaded):
        assert row["distinct_frames"] > 100 and row["frames_received"] >= row["distinct_frames"]
        assert row["latency_target_ms"] > 0 and row["jitter_p99_ms"] >= row["jitter_p50_ms"]
