"""What many channels cost: streaming speed and peak memory against the channel count N.

For each N, a cpu-small model (spatial stage on) streams chunks of 2048 samples with half the
channels present, through the spatial stage and the latent-only path, 16 such streams batched
(aggregate x RT), and runs 10 s offline (`infer_array`) in a fresh process whose peak RSS is read
back. Speed is audio seconds per wall second (x RT: one stream of N channels; per channel = x RT x
N).

    python bench/channels_bench.py              # N in 2, 9, 64, 299 (minutes)
    python bench/channels_bench.py --quick      # N=2, short (smoke run)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from mcrave.config import preset
from mcrave.model import MCRave
from mcrave.streaming import StreamingEngine

OFFLINE_SNIPPET = r"""
import json, sys, time, numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from mcrave.config import preset
from mcrave.inference import infer_array
from mcrave.model import MCRave
n, seconds = int(sys.argv[1]), float(sys.argv[2])
torch.manual_seed(0)
model = MCRave(preset("cpu-small", channels=n).model)
audio = (np.random.default_rng(0).standard_normal((n, int(seconds * 44100))) * 0.1).astype(np.float32)
t = time.perf_counter()
infer_array(model, audio[::2], present=list(range(0, n, 2)))
wall = time.perf_counter() - t
# VmHWM, not ru_maxrss: the latter survives exec, so it would count the parent's memory at fork
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"wall": wall, "peak_mb": peak_kb / 1024}))
"""


def stream_xrt(
    engine: StreamingEngine, n: int, chunk: int, spatial: bool, seconds: float, batch: int = 1
) -> float:
    """x RT of `batch` streams stepped together (aggregate audio seconds per wall second):
    encode + decode per chunk, half the channels present."""
    x = torch.randn(batch, n, chunk) * 0.1
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask[:, ::2] = True
    enc, dec = engine.new_encoder_state(batch), engine.new_decoder_state(batch)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    for i in range(1000):
        t = time.perf_counter()
        enc, z = engine.encode_step(enc, x, mask)
        dec, _ = engine.decode_step(dec, z, x, mask) if spatial else engine.decode_step(dec, z)
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
        if len(times) >= 3 and time.perf_counter() > deadline:
            break
    return batch * chunk / engine.sample_rate / statistics.median(times)


def offline(n: int, seconds: float, threads: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SNIPPET, str(n), str(seconds), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"offline_xrt": seconds / result["wall"], "offline_peak_mb": result["peak_mb"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: N=2; short timings")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--offline-seconds", type=float, default=10.0, help="offline file length")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results/channels_bench.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    counts = (2,) if args.quick else (2, 9, 64, 299)
    seconds, offline_s = (0.3, 1.0) if args.quick else (3.0, args.offline_seconds)
    rows = []
    for n in counts:
        torch.manual_seed(0)
        model = MCRave(preset("cpu-small", channels=n).model)
        engine = StreamingEngine(model, "cpu")
        spatial = stream_xrt(engine, n, 2048, True, seconds)
        latent = stream_xrt(engine, n, 2048, False, seconds)
        batched = stream_xrt(engine, n, 2048, True, seconds, batch=16)
        stage = sum(p.numel() for p in model.decoder.spatial.parameters())
        row = {
            "channels": n,
            "parameters": sum(p.numel() for p in model.parameters()),
            "spatial_parameters": stage,
            "stream2048_spatial_xrt": spatial,
            "stream2048_latent_only_xrt": latent,
            "stream2048_spatial_channel_xrt": spatial * n,
            "stream2048_b16_spatial_xrt": batched,
            **offline(n, offline_s, args.threads),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    header = (
        "| N | params | stage params | stream x RT (spatial) | per channel | stream x RT "
        f"(latent-only) | 16 streams x RT (spatial) | offline {offline_s:g} s x RT | offline peak MB |"
    )
    lines = [header, "|---" * 9 + "|"]
    for r in rows:
        lines.append(
            f"| {r['channels']} | {r['parameters'] / 1e6:.2f} M | {r['spatial_parameters'] / 1e3:.0f} k"
            f" | {r['stream2048_spatial_xrt']:.2f} | {r['stream2048_spatial_channel_xrt']:.1f}"
            f" | {r['stream2048_latent_only_xrt']:.2f} | {r['stream2048_b16_spatial_xrt']:.2f}"
            f" | {r['offline_xrt']:.2f}"
            f" | {r['offline_peak_mb']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"threads": args.threads, "chunk": 2048, "offline_seconds": offline_s}
    args.out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
