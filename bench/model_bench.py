"""Model benchmark: parameters, offline and streaming speed (x realtime), peak memory.

Speed is audio seconds per wall second (x RT, higher is better). Streaming runs encode + decode
per step through `StreamingEngine` (the path the services use) for one stream and for 16 streams
batched together (aggregate audio seconds). When a side Python with acids-rave is given
(`--rave-python`, see bench/rave_side_venv.sh), causal RAVE v2 is timed in the same run as nn~
runs it (its scripted export, weight norm removed) and ratios are printed.

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
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from mcrave.config import preset
from mcrave.export import script_nn_tilde
from mcrave.model import MCRave
from mcrave.runtime import RUNTIMES
from mcrave.streaming import StreamingEngine

RAVE_SNIPPET = r"""
import json, os, statistics, sys, time, torch, gin
torch.set_num_threads(int(sys.argv[1]))
import rave
import cached_conv as cc
cc.use_cached_conv(True)  # streaming convs, as in RAVE's nn~ export
from scripts.export import VariationalScriptedRAVE  # import before parsing the gin configs
configs = os.path.join(os.path.dirname(rave.__file__), "configs")
gin.add_config_file_search_path(os.path.dirname(rave.__file__))
gin.add_config_file_search_path(configs)
gin.parse_config_files_and_bindings([os.path.join(configs, "v2.gin"), os.path.join(configs, "causal.gin")], [])
buffer, seconds = int(sys.argv[2]), float(sys.argv[3])

def xrt(step, batch):
    with torch.no_grad():
        for _ in range(2):
            step()
        times = []
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end or len(times) < 3:
            t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
    return batch * buffer / 44100 / statistics.median(times)

out = {"export": {}, "eager_wn": {}}
for batch in (1, 16):
    x = torch.randn(batch, 1, buffer)
    # what nn~ runs: weight norm removed, RAVE's own export class scripted, forward per buffer
    model = rave.RAVE().eval()
    for m in model.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    exported = torch.jit.script(VariationalScriptedRAVE(pretrained=model).eval())
    out["export"][batch] = xrt(lambda: exported(x), batch)
    eager = rave.RAVE().eval()  # the old, handicapped anchor: eager, weight norm still on
    out["eager_wn"][batch] = xrt(
        lambda: eager.decode(eager.encoder.reparametrize(eager.encode(x))[0]), batch
    )
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


def offline_speed(engine: StreamingEngine, x: Tensor, mask: Tensor, seconds: float) -> float:
    """One pass over the whole input through the inference model (the offline path)."""

    def offline() -> None:
        enc, dec = engine.new_encoder_state(1), engine.new_decoder_state(1)
        with torch.no_grad():
            z, _ = engine.model.encoder(x, mask, list(enc.tensors))
            engine.model.decoder(z, list(dec.tensors))

    return x.shape[-1] / engine.sample_rate / median_time(offline, seconds, min_runs=2)


def ts_speed(
    scripted: torch.jit.ScriptModule,
    channels: int,
    rate: int,
    buffer: int,
    batch: int,
    seconds: float,
) -> float:
    """What Max runs: the exported module's `forward` (encode + decode) once per buffer."""
    x = torch.randn(batch, channels, buffer) * 0.1
    with torch.no_grad():
        return batch * buffer / rate / median_time(lambda: scripted(x), seconds)


def speed_of(model: MCRave, runtime: str, seconds: float) -> Callable[[int, int], float]:
    """(buffer, batch) -> x RT of one runtime: an engine runtime, or the nn~ export
    (`nn~ .ts`, or `nn~ .ts PRECISION` for the reduced-precision exports)."""
    if runtime.startswith("nn~ .ts"):
        precision = runtime.removeprefix("nn~ .ts").strip() or "float32"
        scripted = script_nn_tilde(model, precision=precision)
        return lambda b, n: ts_speed(scripted, model.cfg.channels, model.sample_rate, b, n, seconds)
    engine = StreamingEngine(model, "cpu", runtime=runtime)
    return lambda b, n: stream_speed(engine, b, n, seconds)


NN_TILDE_RUNTIMES = ("nn~ .ts", "nn~ .ts int8")  # what Max runs: float32, and the int8 export


def bench_model(
    name: str, channels: int, buffers: list[int], seconds: float, offline_s: float
) -> list[dict]:
    """One row per runtime: each engine runtime, and the nn~ `.ts` exports."""
    reset_peak_rss()
    torch.manual_seed(0)
    model = MCRave(preset(name, channels=channels).model).eval()
    base = {
        "config": name,
        "channels": channels,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "latency_samples": model.latency,
    }
    t = -(-int(offline_s * model.sample_rate) // model.ratio) * model.ratio
    x = torch.randn(1, channels, t) * 0.1
    mask = torch.ones(1, channels, dtype=torch.bool)
    offline = offline_speed(StreamingEngine(model, "cpu", runtime="eager"), x, mask, seconds)
    rows = []
    for runtime in (*RUNTIMES, *NN_TILDE_RUNTIMES):
        speed = speed_of(model, runtime, seconds)
        row = {**base, "runtime": runtime, "offline_xrt": offline if runtime == "eager" else None}
        for buffer in buffers:
            for batch in (1, 16):
                row[f"stream{buffer}_b{batch}_xrt"] = (
                    speed(buffer, batch) if buffer % model.ratio == 0 else None
                )
        rows.append(row)
    for row in rows:
        row["peak_rss_mb"] = peak_rss_mb()
    return rows


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
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    return {anchor: {int(k): v for k, v in speeds.items()} for anchor, speeds in measured.items()}


def fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def rave_ratios(rows: list[dict], rave: dict) -> list[dict]:
    """mcrave v2 N=1 at 2048 (each runtime) over RAVE v2 timed in the same run, as nn~ runs it
    (`export`) and, labelled, the old eager anchor with weight norm on (`eager_wn`)."""
    out = []
    for row in rows:
        if row["config"] != "v2" or row["channels"] != 1 or row.get("stream2048_b1_xrt") is None:
            continue
        for anchor, speeds in rave.items():
            out.append(
                {
                    "mcrave runtime": row["runtime"],
                    "RAVE anchor": anchor,
                    "1 stream": row["stream2048_b1_xrt"] / speeds[1],
                    "16 batched": row["stream2048_b16_xrt"] / speeds[16],
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (test preset, N=1,2)")
    p.add_argument(
        "--models",
        default="v2:1,v2:2,cpu-small:2,cpu-small:9,cpu-small:64,cpu-small:299",
        help="comma-separated PRESET:CHANNELS",
    )
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
        args.models, args.buffers, args.seconds = "test:1,test:2", "512", 0.05
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for spec in args.models.split(","):
        name, channels = spec.split(":")
        new = bench_model(
            name,
            int(channels),
            [int(b) for b in args.buffers.split(",")],
            args.seconds,
            offline_s=1.0 if args.quick else 10.0,
        )
        rows += new
        print("\n".join(markdown(new).splitlines()[2:]), flush=True)
    result: dict = {"threads": args.threads, "torch": torch.__version__, "rows": rows}
    print("\n" + markdown(rows))
    text = markdown(rows) + "\n"
    if args.rave_python:
        rave = bench_rave(args.rave_python, args.threads, 2048, args.seconds)
        result["rave_v2_stream2048"] = rave
        if rave:
            result["ratios"] = rave_ratios(rows, rave)
            anchors = ", ".join(
                f"{k}: 1 stream {v[1]:.2f}x, 16 batched {v[16]:.2f}x" for k, v in rave.items()
            )
            text += f"\nRAVE v2 causal, stream 2048 ({anchors})\n\n" + markdown(result["ratios"])
            print(text.split("\n\n", 1)[1] if "\n\n" in text else text)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(text + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
