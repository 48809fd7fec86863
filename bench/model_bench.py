"""Model benchmark: parameters, offline and streaming speed (x realtime), peak memory.

Speed is audio seconds per wall second (x RT, higher is better). Streaming runs encode + decode
per step through `StreamingEngine` (the path the services use) for one stream and for 16 streams
batched together (aggregate audio seconds). When a side Python with acids-rave is given
(`--rave-python`, see bench/rave_side_venv.sh), causal RAVE v2 is timed in the same run (eager,
with its cached streaming convs) and ratios are printed.

    python bench/model_bench.py               # full grid (minutes)
    python bench/model_bench.py --quick       # smoke run
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

RAVE_SNIPPET = r"""
import json, os, statistics, sys, time, torch, gin
torch.set_num_threads(int(sys.argv[1]))
import rave
import cached_conv as cc
cc.use_cached_conv(True)  # streaming convs, as in RAVE's nn~ export
configs = os.path.join(os.path.dirname(rave.__file__), "configs")
gin.add_config_file_search_path(os.path.dirname(rave.__file__))
gin.add_config_file_search_path(configs)
gin.parse_config_files_and_bindings([os.path.join(configs, "v2.gin"), os.path.join(configs, "causal.gin")], [])
model = rave.RAVE().eval()
buffer = int(sys.argv[2])
seconds = float(sys.argv[3])
out = {}
for batch in (1, 16):
    x = torch.randn(batch, 1, buffer)
    with torch.no_grad():
        step = lambda: model.decode(model.encoder.reparametrize(model.encode(x))[0])
        for _ in range(2):
            step()
        times = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 3:
            t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    out[batch] = batch * buffer / 44100 / statistics.median(times)
print(json.dumps(out))
"""


def median_time(fn, min_seconds: float, min_runs: int = 3) -> float:
    fn()  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + min_seconds
    while time.perf_counter() < deadline or len(times) < min_runs:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def stream_speed(engine: StreamingEngine, buffer: int, batch: int, seconds: float) -> float:
    enc, dec = engine.new_encoder_state(batch), engine.new_decoder_state(batch)
    x = torch.randn(batch, engine.channels, buffer) * 0.1
    mask = torch.ones(batch, engine.channels, dtype=torch.bool)
    state = {"enc": enc, "dec": dec}

    def step() -> None:
        state["enc"], z = engine.encode_step(state["enc"], x, mask)
        state["dec"], _ = engine.decode_step(state["dec"], z)

    return batch * buffer / engine.sample_rate / median_time(step, seconds)


def bench_model(
    name: str, channels: int, buffers: list[int], seconds: float, offline_s: float
) -> dict:
    reset_peak_rss()
    torch.manual_seed(0)
    model = MCRave(preset(name, channels=channels).model).eval()
    engine = StreamingEngine(model, "cpu")
    row: dict = {
        "config": name,
        "channels": channels,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "ratio": model.ratio,
        "latency_samples": model.latency,
    }
    t = -(-int(offline_s * model.sample_rate) // model.ratio) * model.ratio
    x = torch.randn(1, channels, t) * 0.1
    mask = torch.ones(1, channels, dtype=torch.bool)

    def offline() -> None:
        enc, dec = (
            list(engine.new_encoder_state(1).tensors),
            list(engine.new_decoder_state(1).tensors),
        )
        with torch.no_grad():
            z, _ = engine.model.encoder(x, mask, enc)
            engine.model.decoder(z, dec)

    row["offline_xrt"] = t / model.sample_rate / median_time(offline, seconds, min_runs=2)
    for buffer in buffers:
        for batch in (1, 16):
            key = f"stream{buffer}_b{batch}_xrt"
            row[key] = (
                stream_speed(engine, buffer, batch, seconds) if buffer % model.ratio == 0 else None
            )
    row["peak_rss_mb"] = peak_rss_mb()
    return row


def bench_rave(python: str, threads: int, buffer: int, seconds: float) -> dict | None:
    proc = subprocess.run(
        [python, "-c", RAVE_SNIPPET, str(threads), str(buffer), str(seconds)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        print(f"RAVE not measured: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (test preset, N=1,2)")
    p.add_argument("--configs", default="test,cpu-small,v2")
    p.add_argument("--channels", default="1,2,9,64,299")
    p.add_argument("--buffers", default="512,2048,8192")
    p.add_argument(
        "--seconds", type=float, default=2.0, help="minimum timing window per measurement"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--rave-python", default=None, help="python of a side venv with acids-rave installed"
    )
    p.add_argument("-o", "--output", default="bench/results/model_bench.json")
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.channels, args.buffers, args.seconds = "test", "1,2", "512", 0.05
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.configs.split(","):
        for channels in map(int, args.channels.split(",")):
            rows.append(
                bench_model(
                    name,
                    channels,
                    [int(b) for b in args.buffers.split(",")],
                    args.seconds,
                    offline_s=1.0 if args.quick else 10.0,
                )
            )
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    result: dict = {"threads": args.threads, "torch": torch.__version__, "rows": rows}
    print("\n" + markdown(rows))
    if args.rave_python:
        rave = bench_rave(args.rave_python, args.threads, 2048, args.seconds)
        result["rave_v2_stream2048"] = rave
        ours = next((r for r in rows if r["config"] == "v2" and r["channels"] == 1), None)
        if rave and ours:
            result["ratios"] = {
                "single_stream_2048_vs_rave": ours["stream2048_b1_xrt"] / rave[1],
                "batched16_2048_vs_rave": ours["stream2048_b16_xrt"] / rave[16],
            }
            print(
                f"\nRAVE v2 (causal, cached convs) stream 2048: 1 stream {rave[1]:.1f}x RT, "
                f"16 streams {rave[16]:.1f}x RT"
            )
            print(
                f"mcrave v2 / RAVE v2: single stream {result['ratios']['single_stream_2048_vs_rave']:.2f}, "
                f"16 batched {result['ratios']['batched16_2048_vs_rave']:.2f}"
            )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
