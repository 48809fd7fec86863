"""Smoke run of bench/onnx_bench.py: the ONNX export runs under onnxruntime and equals the engine
(timings are reported by the bench, never asserted)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime", reason="pip install onnxruntime (dev extra)")
pytest.importorskip(
    "onnxscript", reason="pip install onnxscript (dev extra: torch.onnx's exporter)"
)


def test_onnx_bench_quick(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, "bench/onnx_bench.py", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["config"], r["channels"], r["runtime"]) for r in rows] == [
        ("cpu-small", 2, rt) for rt in ("torchscript", "eager", "onnxruntime-conv")
    ]
    assert all(r["latent_b1_xrt"] > 0 and r["latent_b2_xrt"] > 0 for r in rows)
    (model,) = result["models"]
    diffs = model["variants"]["conv"]["max_abs_diff"]
    assert set(diffs) == {"latents", "audio_latent"}
    assert max(diffs.values()) <= 1e-4, diffs
