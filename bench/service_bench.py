"""Service benchmark: the encoder and decoder services against the same model in-process.

Measures, with each service in its own `mcrave serve` process on loopback:
- throughput: one stream through encoder -> decoder as fast as credit allows, vs the model's
  StreamingEngine encode+decode in this process (same chunk, same threads per model call);
  speed is x realtime (audio seconds per wall second), and their ratio;
- added latency per chunk: one stream paced in real time; round trip from a chunk being sent to
  its decoded audio arriving, minus the in-process compute time of a chunk (p50/p99);
- concurrent real-time streams: K paced streams (starts spread over one chunk period); the largest
  K where every stream keeps real time (finishes < `--max-lag` after its audio ends), with the
  dynamic batcher (`--max-batch 16`) and without it (`--max-batch 1`), plus the mean batch size
  the servers report;
- N scaling: the throughput ratio for models of N channels.

    python bench/service_bench.py            # full run (minutes; an otherwise idle machine)
    python bench/service_bench.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from mcrave_client import DecoderClient, EncoderClient, Pipeline
from mcrave_client.aio import AsyncDecoderClient, AsyncEncoderClient, AsyncPipeline
from mcrave_client.framing import iter_chunks
from service_procs import publish_untrained, services, write_report

from mcrave.checkpoint import load_model
from mcrave.streaming import StreamingEngine


def quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) if values else float("nan")


def test_audio(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, frames))).astype(np.float32)


def in_process(model_dir: Path, audio: np.ndarray, present: list[int], chunk: int) -> dict:
    """StreamingEngine encode+decode over `audio` in chunks: x realtime and per-chunk times."""
    model, _ = load_model(str(model_dir))
    engine = StreamingEngine(model)
    mask = torch.zeros(1, engine.channels, dtype=torch.bool)
    mask[0, present] = True
    x = torch.from_numpy(audio)[None]
    frames = x.shape[-1] - x.shape[-1] % chunk
    es, ds = engine.new_encoder_state(1), engine.new_decoder_state(1)
    es, z = engine.encode_step(es, x[..., :chunk], mask)  # warm-up
    engine.decode_step(ds, z)
    es, ds = engine.new_encoder_state(1), engine.new_decoder_state(1)
    times = []
    start = time.perf_counter()
    for s in range(0, frames, chunk):
        t = time.perf_counter()
        es, z = engine.encode_step(es, x[..., s : s + chunk], mask)
        ds, _ = engine.decode_step(ds, z)
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    return {"xrt": frames / engine.sample_rate / wall, "chunk_s": times}


def service_throughput(
    pipeline: Pipeline, name: str, audio: np.ndarray, present: list[int], chunk: int
) -> float:
    info = pipeline.model(name)
    x = audio[present]
    with pipeline.stream(info, present, chunk) as warm:  # warm-up stream
        list(warm.run(iter_chunks(x[:, :chunk], chunk)))
    start = time.perf_counter()
    with pipeline.stream(info, present, chunk) as stream:
        for _ in stream.run(iter_chunks(x, chunk)):
            pass
    return x.shape[1] / info.sample_rate / (time.perf_counter() - start)


async def paced_streams(
    encoder: str,
    decoder: str,
    name: str,
    audio: np.ndarray,
    present: list[int],
    chunk: int,
    streams: int,
) -> dict:
    """`streams` concurrent real-time streams; per-chunk round trips and end lags."""
    pipe = AsyncPipeline(AsyncEncoderClient(encoder), AsyncDecoderClient(decoder))
    info = await pipe.model(name)
    period = chunk / info.sample_rate
    x = audio[present]
    n_chunks = x.shape[1] // chunk

    async def one(offset: float) -> tuple[list[float], float]:
        stream = await pipe.stream(info, present, chunk)
        t0 = time.perf_counter() + 0.2 + offset
        sent: dict[int, float] = {}

        async def paced():
            for i, block in enumerate(iter_chunks(x[:, : n_chunks * chunk], chunk)):
                await asyncio.sleep(max(0.0, t0 + (i + 1) * period - time.perf_counter()))
                sent[i] = time.perf_counter()
                yield block

        rtts = []
        async for block in stream.run(paced()):
            if not block.final and block.ack in sent:
                rtts.append(time.perf_counter() - sent[block.ack])
        return rtts, time.perf_counter() - (t0 + n_chunks * period)

    try:
        results = await asyncio.gather(*(one(i * period / streams) for i in range(streams)))
    finally:
        await pipe.close()
    rtts = [r for rs, _ in results for r in rs]
    return {"rtts": rtts, "end_lags": [lag for _, lag in results], "period": period}


def mean_batch(metrics_port: int) -> float:
    """Mean streams per forward from the service's Prometheus histogram."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    total = count = 0.0
    for line in text.decode().splitlines():
        if line.startswith("mcrave_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("mcrave_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count if count else float("nan")


def max_sustained(
    enc,
    dec,
    name: str,
    audio: np.ndarray,
    present: list[int],
    chunk: int,
    ladder: list[int],
    max_batch: int,
    max_lag: float,
) -> dict:
    """Largest K on `ladder` where every one of K paced streams keeps real time."""
    best, tried = 0, []
    for k in ladder:
        run = asyncio.run(paced_streams(enc.target, dec.target, name, audio, present, chunk, k))
        worst = max(run["end_lags"])
        ok = worst <= max_lag
        p99 = 1e3 * quantile(run["rtts"], 0.99)
        tried.append({"streams": k, "worst_end_lag_s": worst, "kept_up": ok, "rtt_p99_ms": p99})
        print(
            f"  max_batch={max_batch:<3} streams={k:<3} worst end lag {worst * 1e3:8.1f} ms "
            f"rtt p99 {p99:7.1f} ms {'ok' if ok else 'FELL BEHIND'}",
            flush=True,
        )
        if not ok:
            break
        best = k
    batch = {"encoder": mean_batch(enc.metrics_port), "decoder": mean_batch(dec.metrics_port)}
    return {
        "max_batch": max_batch,
        "max_streams_realtime": best,
        "runs": tried,
        "mean_batch": batch,
    }


def markdown(result: dict) -> str:
    lines = ["| N | in-process x RT | service x RT | ratio |", "|---|---|---|---|"]
    for row in result["throughput"]:
        lines.append(
            f"| {row['channels']} | {row['inprocess_xrt']:.1f} | {row['service_xrt']:.1f}"
            f" | {row['ratio']:.2f} |"
        )
    lat = result["latency"]
    lines += [
        "",
        "| per-chunk (ms) | p50 | p99 |",
        "|---|---|---|",
        f"| round trip (paced, 1 stream) | {lat['rtt_p50_ms']:.2f} | {lat['rtt_p99_ms']:.2f} |",
        f"| in-process compute | {lat['compute_p50_ms']:.2f} | {lat['compute_p99_ms']:.2f} |",
        f"| **added by the services** | {lat['added_p50_ms']:.2f} | {lat['added_p99_ms']:.2f} |",
    ]
    lines += ["", "| batching | max real-time streams | mean batch (enc/dec) |", "|---|---|---|"]
    for c in result["concurrency"]:
        mb = c["mean_batch"]
        lines.append(
            f"| max_batch={c['max_batch']} | {c['max_streams_realtime']} | "
            f"{mb['encoder']:.2f} / {mb['decoder']:.2f} |"
        )
    lines.append(f"\nbatched / unbatched real-time streams: {result['batching_gain']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run (test preset, seconds)")
    p.add_argument("--config", default="cpu-small", help="model preset (untrained weights)")
    p.add_argument("--channels", default="2,8,16", help="N values; the first is used for the rest")
    p.add_argument("--chunk", type=int, default=2048, help="frames per chunk")
    p.add_argument("--seconds", type=float, default=20.0, help="audio per throughput run")
    p.add_argument("--paced-seconds", type=float, default=10.0, help="audio per paced stream")
    p.add_argument("--streams", default="1,2,4,8,16,24,32,48,64", help="concurrency ladder")
    p.add_argument("--max-lag", type=float, default=0.5, help="s behind real time = fell behind")
    p.add_argument("--threads", type=int, default=1, help="torch threads per model call")
    p.add_argument("-o", "--output", default="bench/results/service_bench.json")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.channels, args.chunk = "test", "2", 512
        args.seconds, args.paced_seconds, args.streams = 1.0, 0.5, "1,2"
    torch.set_num_threads(args.threads)
    channel_list = [int(c) for c in args.channels.split(",")]
    with tempfile.TemporaryDirectory(prefix="mcrave-service-bench-") as tmp:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        for n in channel_list:
            publish_untrained(models, f"n{n}", args.config, n)
        sr = load_model(str(models / f"n{channel_list[0]}"))[0].sample_rate
        result: dict = {
            "config": args.config,
            "chunk": args.chunk,
            "threads": args.threads,
            "torch": torch.__version__,
            "throughput": [],
        }
        # two pairs started together: with the dynamic batcher (max 16) and without it (max 1)
        flags = (("--max-batch", "16"),) * 2 + (("--max-batch", "1"),) * 2
        # two pairs started together: with the dynamic batcher (max 16) and without it (max 1)
        flags = (("--max-batch", "16"),) * 2 + (("--max-batch", "1"),) * 2
        with services(
            models,
            work,
            "--max-streams",
            "256",
            threads=args.threads,
            names=("encoder", "decoder") * 2,
            per_service=flags,
        ) as running:
            enc, dec, enc1, dec1 = running
            pipeline = Pipeline(EncoderClient(enc.target), DecoderClient(dec.target))
            for n in channel_list:
                audio = test_audio(n, int(args.seconds * sr))
                present = list(range(1, n)) if n > 1 else [0]
                local = in_process(models / f"n{n}", audio, present, args.chunk)
                remote = service_throughput(pipeline, f"n{n}", audio, present, args.chunk)
                result["throughput"].append(
                    {
                        "channels": n,
                        "present": present,
                        "inprocess_xrt": local["xrt"],
                        "service_xrt": remote,
                        "ratio": remote / local["xrt"],
                    }
                )
                print(
                    f"N={n:<3} in-process {local['xrt']:.1f}x RT, service {remote:.1f}x RT",
                    flush=True,
                )
                if n == channel_list[0]:
                    compute = local["chunk_s"]
            pipeline.close()
            n = channel_list[0]
            present = list(range(1, n)) if n > 1 else [0]
            audio = test_audio(n, int(args.paced_seconds * sr), seed=1)
            paced = asyncio.run(
                paced_streams(enc.target, dec.target, f"n{n}", audio, present, args.chunk, 1)
            )
            ladder = [int(k) for k in args.streams.split(",")]
            audio = test_audio(n, int(args.paced_seconds * sr), seed=2)
            result["concurrency"] = [
                max_sustained(e, d, f"n{n}", audio, present, args.chunk, ladder, mb, args.max_lag)
                for e, d, mb in ((enc1, dec1, 1), (enc, dec, 16))
            ]
        base = statistics.median(compute)
        added = [r - base for r in paced["rtts"]]
        result["latency"] = {
            "rtt_p50_ms": 1e3 * quantile(paced["rtts"], 0.5),
            "rtt_p99_ms": 1e3 * quantile(paced["rtts"], 0.99),
            "compute_p50_ms": 1e3 * quantile(compute, 0.5),
            "compute_p99_ms": 1e3 * quantile(compute, 0.99),
            "added_p50_ms": 1e3 * quantile(added, 0.5),
            "added_p99_ms": 1e3 * quantile(added, 0.99),
            "chunk_ms": 1e3 * args.chunk / sr,
        }
    unbatched, batched = (c["max_streams_realtime"] for c in result["concurrency"])
    result["batching_gain"] = batched / unbatched if unbatched else float("nan")
    table = markdown(result)
    print("\n" + table)
    write_report(Path(args.output), result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
