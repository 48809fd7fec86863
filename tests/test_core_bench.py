"""Smoke runs of the model benchmarks (timings are reported by the benches, never asserted)."""

import json
import subprocess
import sys


def quick_rows(script: str, out, *extra: str) -> list[dict]:
    """Run `bench/SCRIPT --quick -o OUT ...` and return the rows of its JSON."""
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick", "-o", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())["rows"]


def test_model_bench_quick(tmp_path):
    out = tmp_path / "mb.json"
    rows = quick_rows("model_bench.py", out)
    runtimes = [
        "eager",
        "torchscript",
        "torchscript-bf16",
        "torchscript-int8",
        "nn~ .ts",
        "nn~ .ts int8",
    ]
    assert [(r["channels"], r["runtime"]) for r in rows] == [
        (n, rt) for n in (1, 2) for rt in runtimes
    ]
    assert all(r["stream512_b1_xrt"] > 0 and r["stream512_b16_xrt"] > 0 for r in rows)
    assert all(r["offline_xrt"] > 0 for r in rows if r["runtime"] == "eager")
    assert out.with_suffix(".md").read_text().startswith("| config |")


def test_channels_bench_quick(tmp_path):
    rows = quick_rows("channels_bench.py", tmp_path / "cb.json", "--threads", "1")
    assert [r["channels"] for r in rows] == [2]
    assert all(r["stream2048_spatial_xrt"] > 0 and r["offline_peak_mb"] > 0 for r in rows)


def test_threads_bench_quick(tmp_path):
    rows = quick_rows("threads_bench.py", tmp_path / "tb.json")
    assert [(r["load"], r["mode"], r["threads"]) for r in rows] == [
        ("idle", "offline", "default"),
        ("busy", "offline", "default"),
    ]
    assert all(r["x_rt"] > 0 for r in rows)
