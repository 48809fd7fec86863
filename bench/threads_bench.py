"""`mcrave infer` wall time by thread count, on an idle machine and beside a busy process.

A user runs `mcrave infer` while something else computes (a DAW, a training run, a second
infer). Torch's default (one OpenMP thread per core) then fights the other process for the
cores; this bench measures what each setting costs, in x realtime, for an offline pass and for
chunked streaming (`--chunk 2048`), so the CLI default is chosen on numbers:

    python bench/threads_bench.py [--quick] [--model models/demo-stereo] [--seconds 40]

"busy" runs a second process that keeps one core fully occupied with matrix products (torch, one
thread) for the whole measurement. Each cell is one `mcrave infer` subprocess, timed around the
whole command (start-up included, as a user waits for it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
BUSY = (
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(512, 512)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a)\n"
)


def music_like(path: Path, seconds: float, rate: int = 44100) -> None:
    """Two decorrelated channels of harmonic tones with noise: no real data needed to time."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    base = sum(
        np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (k + 1)
        for k, f in enumerate((110, 220, 330, 495))
    )
    left = 0.2 * base + 0.02 * rng.standard_normal(t.size)
    right = 0.2 * np.roll(base, 37) + 0.02 * rng.standard_normal(t.size)
    sf.write(path, np.stack([left, right], 1).astype(np.float32), rate, subtype="FLOAT")


def time_infer(model: str, audio: Path, out: Path, threads: str, chunk: int | None) -> float:
    cmd = [
        sys.executable,
        "-m",
        "mcrave.cli.main",
        "infer",
        model,
        str(audio),
        str(out),
        "--present",
        "R",
    ]
    if threads != "default":
        cmd += ["--threads", threads]
    if chunk:
        cmd += ["--chunk", str(chunk)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/demo-stereo")
    p.add_argument("--seconds", type=float, default=40.0, help="length of the test file")
    p.add_argument("--threads", default="default,1,2", help="settings to time (comma-separated)")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s file, default threads, offline"
    )
    p.add_argument("-o", "--output", type=Path, default=ROOT / "bench/results/threads_bench.json")
    args = p.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    chunks = (None,) if args.quick else (None, 2048)
    settings = ["default"] if args.quick else args.threads.split(",")
    rows = []
    print("| load | mode | threads | wall s | x RT |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        audio, out = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        music_like(audio, seconds)
        for load in ("idle", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
            try:
                if busy:
                    time.sleep(1.0)  # let it start computing
                for chunk in chunks:
                    for threads in settings:
                        wall = time_infer(args.model, audio, out, threads, chunk)
                        rows.append(
                            {
                                "load": load,
                                "mode": f"chunk {chunk}" if chunk else "offline",
                                "threads": threads,
                                "wall_s": round(wall, 2),
                                "x_rt": round(seconds / wall, 2),
                            }
                        )
                        print(
                            f"| {load} | {rows[-1]['mode']} | {threads} | {wall:.2f} | "
                            f"{seconds / wall:.2f} |",
                            flush=True,
                        )
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model, "seconds": seconds, "cores": os.cpu_count(), "rows": rows}
    args.output.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
