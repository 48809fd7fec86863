"""Service benchmark: the encoder and decoder services against the same model in-process.

Measures, with each service in its own `mcrave serve` process on loopback:
- throughput: one stream through encoder -> decoder as fast as credit allows, vs the model's
  StreamingEngine encode+decode in this process (same chunk, same threads per model call);
  speed is x realtime (audio seconds per wall second), and their ratio;
- added latency per chunk: one stream paced in real time; round trip from a chunk being sent to
  its decoded audio arriving, minus that chunk's compute (its encoder and decoder forwards, as
  the services' batchers time them: `MCRAVE_STEP_TRACE`, services/common/batcher.py), p50/p99,
  with where the rest goes (client pacing, the way to and from each service, batcher wait,
  executor hops) and, beside it, the same model in-process paced the same way (a step after
  ~40 ms asleep runs slower than back to back, so the paced run is the fair baseline); once
  direct (client -> encoder -> client -> decoder -> client) and once relayed (the encoder
  forwards to the decoder: client -> encoder -> decoder -> client);
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
import json
import socket
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


def free_port() -> int:
    """A loopback port free now (for a service whose address another must know in advance)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_audio(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, frames))).astype(np.float32)


def in_process(
    model_dir: Path, audio: np.ndarray, present: list[int], chunk: int, paced: bool = False
) -> dict:
    """StreamingEngine encode + decode over `audio` in chunks, the decoder fed the present
    channels' audio as the services' pipeline does: x realtime and per-chunk compute times.
    `paced`: one chunk per chunk period (sleeping in between, like a real-time stream)."""
    model, _ = load_model(str(model_dir))
    engine = StreamingEngine(model)
    mask = torch.zeros(1, engine.channels, dtype=torch.bool)
    mask[0, present] = True
    x = torch.from_numpy(audio)[None]
    x_present = x * mask[..., None]  # what the decoder gets: absent channels silent
    frames = x.shape[-1] - x.shape[-1] % chunk
    period = chunk / engine.sample_rate
    es, ds = engine.new_encoder_state(1), engine.new_decoder_state(1)
    es, z = engine.encode_step(es, x[..., :chunk], mask)  # warm-up
    engine.decode_step(ds, z, x_present[..., :chunk], mask)
    es, ds = engine.new_encoder_state(1), engine.new_decoder_state(1)
    times = []
    start = time.perf_counter()
    for i, s in enumerate(range(0, frames, chunk)):
        if paced:
            time.sleep(max(0.0, start + (i + 1) * period - time.perf_counter()))
        t = time.perf_counter()
        es, z = engine.encode_step(es, x[..., s : s + chunk], mask)
        ds, _ = engine.decode_step(ds, z, x_present[..., s : s + chunk], mask)
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
    relay: bool = False,
) -> dict:
    """`streams` concurrent real-time streams: per chunk the time it was due, sent, its latents
    reached the client (to go on to the decoder; not when `relay`ed) and its decoded audio
    arrived; end lags."""
    pipe = AsyncPipeline(AsyncEncoderClient(encoder), AsyncDecoderClient(decoder))
    info = await pipe.model(name)
    period = chunk / info.sample_rate
    x = audio[present]
    n_chunks = x.shape[1] // chunk

    async def one(offset: float) -> tuple[list[dict], float]:
        stream = await pipe.stream(info, present, chunk, relay=relay)
        t0 = time.perf_counter() + 0.2 + offset
        stamps = [{"due": t0 + (i + 1) * period} for i in range(n_chunks)]

        async def paced():
            for i, block in enumerate(iter_chunks(x[:, : n_chunks * chunk], chunk)):
                await asyncio.sleep(max(0.0, stamps[i]["due"] - time.perf_counter()))
                stamps[i]["sent"] = time.perf_counter()
                yield block

        async def encoded(latents):  # PipelineStream.run, with a stamp between the two streams
            async for item in latents:
                if not item.final:
                    stamps[item.chunk.ack]["encoded"] = time.perf_counter()
                yield item

        decoded = (
            stream.run(paced())
            if relay
            else stream.decoder.run(encoded(stream.encoder.run(paced())))
        )
        async for block in decoded:
            if block.ack < n_chunks:  # not the decoded tail flush nor the end marker
                stamps[block.ack]["decoded"] = time.perf_counter()
        return stamps, time.perf_counter() - (t0 + n_chunks * period)

    try:
        results = await asyncio.gather(*(one(i * period / streams) for i in range(streams)))
    finally:
        await pipe.close()
    chunks = [c for stamps, _ in results for c in stamps]
    rtts = [c["decoded"] - c["sent"] for c in chunks]
    return {"chunks": chunks, "rtts": rtts, "end_lags": [lag for _, lag in results]}


def read_trace(path: Path, pid: int) -> list[dict]:
    """The batcher's step records (MCRAVE_STEP_TRACE) of the service with process id `pid`."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted((r for r in rows if r["pid"] == pid), key=lambda r: r["submitted"])


# the two ways a chunk goes through the services: via the client, or relayed by the encoder
MODES = ("direct", "relayed")

# the parts of one chunk's round trip, in order (name, what)
PARTS = (
    ("pacing", "client pacing: sent - due (not in the round trip)"),
    ("to_encoder", "client -> encoder step submitted (client, gRPC, server read)"),
    ("encoder_wait", "encoder batcher wait"),
    ("encoder_hops", "encoder hand-offs (to the worker and back; one loop pass when on the loop)"),
    ("encoder_compute", "encoder forward"),
    ("from_encoder", "encoder step done -> latents at the client (reply, gRPC, client)"),
    ("to_decoder", "client -> decoder step submitted"),
    ("encoder_to_decoder", "relayed: encoder step done -> decoder step submitted"),
    ("decoder_wait", "decoder batcher wait"),
    ("decoder_hops", "decoder hand-offs"),
    ("decoder_compute", "decoder forward"),
    ("from_decoder", "decoder step done -> audio at the client"),
    ("round_trip", "round trip: sent -> decoded audio at the client"),
    ("added", "added = round trip - this chunk's encoder and decoder forwards"),
)


def breakdown(chunks: list[dict], enc_steps: list[dict], dec_steps: list[dict]) -> dict:
    """Each chunk's round trip cut into PARTS (ms lists; the parts of the other mode stay empty)
    by the services' step records: a chunk's encoder steps are those submitted between its send
    and its latents reaching the client (relayed: its decoded audio arriving), its decoder steps
    those between that (relayed: its last encoder step's end) and its decoded audio arriving
    (one stream, in order)."""

    def within(steps: list[dict], lo: float, hi: float) -> list[dict]:
        return [s for s in steps if lo <= s["submitted"] <= hi]

    parts: dict[str, list[float]] = {name: [] for name, _ in PARTS}
    for c in chunks:
        relayed = "encoded" not in c
        enc = within(enc_steps, c["sent"], c["decoded" if relayed else "encoded"])
        dec = within(
            dec_steps, enc[-1]["resumed"] if relayed and enc else c.get("encoded", 0), c["decoded"]
        )
        if not enc or not dec:
            continue
        row = {
            "pacing": c["sent"] - c["due"],
            "to_encoder": enc[0]["submitted"] - c["sent"],
            "from_decoder": c["decoded"] - dec[-1]["resumed"],
            "round_trip": c["decoded"] - c["sent"],
        }
        if relayed:
            row["encoder_to_decoder"] = dec[0]["submitted"] - enc[-1]["resumed"]
        else:
            row["from_encoder"] = c["encoded"] - enc[-1]["resumed"]
            row["to_decoder"] = dec[0]["submitted"] - c["encoded"]
        for side, steps in (("encoder", enc), ("decoder", dec)):
            row[f"{side}_wait"] = sum(s["dispatched"] - s["submitted"] for s in steps)
            row[f"{side}_hops"] = sum(
                s["started"] - s["dispatched"] + s["resumed"] - s["ended"] for s in steps
            )
            row[f"{side}_compute"] = sum(s["ended"] - s["started"] for s in steps)
        row["added"] = row["round_trip"] - row["encoder_compute"] - row["decoder_compute"]
        for name, value in row.items():
            parts[name].append(1e3 * value)
    return parts


def latency(
    chunks: list[dict],
    enc_steps: list[dict],
    dec_steps: list[dict],
    paced_s: list[float],
    hot_s: list[float],
    chunk_ms: float,
) -> dict:
    """One mode's paced chunks: added latency and its parts (ms), beside the in-process steps."""
    parts = {k: v for k, v in breakdown(chunks, enc_steps, dec_steps).items() if v}
    rtts = [c["decoded"] - c["sent"] for c in chunks]
    vs_local = [r - statistics.median(paced_s) for r in rtts]
    return {
        "chunk_ms": chunk_ms,
        "chunks": len(rtts),
        "chunks_traced": len(parts["added"]),
        "rtt_p50_ms": 1e3 * quantile(rtts, 0.5),
        "rtt_p99_ms": 1e3 * quantile(rtts, 0.99),
        "added_p50_ms": quantile(parts["added"], 0.5),
        "added_p99_ms": quantile(parts["added"], 0.99),
        "added_vs_inprocess_p50_ms": 1e3 * quantile(vs_local, 0.5),
        "added_vs_inprocess_p99_ms": 1e3 * quantile(vs_local, 0.99),
        "inprocess_paced_p50_ms": 1e3 * quantile(paced_s, 0.5),
        "inprocess_paced_p99_ms": 1e3 * quantile(paced_s, 0.99),
        "inprocess_hot_p50_ms": 1e3 * quantile(hot_s, 0.5),
        "inprocess_hot_p99_ms": 1e3 * quantile(hot_s, 0.99),
        "parts_ms": {
            n: {"p50": quantile(v, 0.5), "p99": quantile(v, 0.99)} for n, v in parts.items()
        },
    }


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
    traced = ", ".join(f"{m} {lat[m]['chunks_traced']} of {lat[m]['chunks']}" for m in MODES)
    lines += [
        "",
        f"| per chunk, one real-time stream ({traced} chunks traced), ms | "
        + " | ".join(f"{m} p50 | {m} p99" for m in MODES)
        + " |",
        "|---|" + "---|---|" * len(MODES),
    ]

    def cells(parts: dict, name: str) -> str:
        part = parts.get(name)
        return f"{part['p50']:.2f} | {part['p99']:.2f}" if part else "- | -"

    for name, what in PARTS:
        bold = "**" if name == "added" else ""
        row = " | ".join(cells(lat[m]["parts_ms"], name) for m in MODES)
        lines.append(f"| {bold}{what}{bold} | {row} |")
    for key, what in (
        ("inprocess_paced", "in-process compute, paced like the stream"),
        ("inprocess_hot", "in-process compute, back to back"),
        ("added_vs_inprocess", "round trip - in-process paced compute p50"),
    ):
        row = " | ".join(
            f"{lat[m][key + '_p50_ms']:.2f} | {lat[m][key + '_p99_ms']:.2f}" for m in MODES
        )
        lines.append(f"| {what} | {row} |")
    lines += ["", "| batching | max real-time streams | mean batch (enc/dec) |", "|---|---|---|"]
    for c in result["concurrency"]:
        mb = c["mean_batch"]
        lines.append(
            f"| max_batch={c['max_batch']} | {c['max_streams_realtime']} | "
            f"{mb['encoder']:.2f} / {mb['decoder']:.2f} |"
        )
    ratios = ", ".join(f"N={r['channels']} {r['ratio']:.2f}" for r in result["throughput"])
    lines += [
        "",
        *(
            f"- added latency per chunk, {m}: p50 {lat[m]['added_p50_ms']:.2f} ms, p99 "
            f"{lat[m]['added_p99_ms']:.2f} ms (target p99 <= 3 ms)"
            for m in MODES
        ),
        f"- service / in-process throughput: {ratios} (target >= 0.95)",
        f"- batched / unbatched real-time streams: {result['batching_gain']:.2f}x (target >= 3x)",
    ]
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
        # the batched encoder relays to the batched decoder, so that one needs a known port
        relay_port = free_port()
        flags = (
            ("--max-batch", "16", "--relay-to", f"127.0.0.1:{relay_port}"),
            ("--max-batch", "16"),
            ("--max-batch", "1"),
            ("--max-batch", "1"),
        )
        trace = work / "steps.jsonl"
        with services(
            models,
            work,
            "--max-streams",
            "256",
            threads=args.threads,
            names=("encoder", "decoder") * 2,
            ports=(0, relay_port, 0, 0),
            per_service=flags,
            env={"MCRAVE_STEP_TRACE": str(trace)},
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
                    hot = local["chunk_s"]
            pipeline.close()
            n = channel_list[0]
            present = list(range(1, n)) if n > 1 else [0]
            audio = test_audio(n, int(args.paced_seconds * sr), seed=1)
            local = in_process(models / f"n{n}", audio, present, args.chunk, paced=True)
            paced: dict[str, list[dict]] = {mode: [] for mode in MODES}
            for _ in range(2):  # alternating, so a drift of this machine's speed hits both
                for mode in MODES:
                    run = asyncio.run(
                        paced_streams(
                            enc.target,
                            dec.target,
                            f"n{n}",
                            audio,
                            present,
                            args.chunk,
                            1,
                            relay=mode == "relayed",
                        )
                    )
                    paced[mode] += run["chunks"]
            ladder = [int(k) for k in args.streams.split(",")]
            audio = test_audio(n, int(args.paced_seconds * sr), seed=2)
            result["concurrency"] = [
                max_sustained(e, d, f"n{n}", audio, present, args.chunk, ladder, mb, args.max_lag)
                for e, d, mb in ((enc1, dec1, 1), (enc, dec, 16))
            ]
        # the services write their step records when they stop
        steps = read_trace(trace, enc.proc.pid), read_trace(trace, dec.proc.pid)
        result["latency"] = {
            mode: latency(chunks, *steps, local["chunk_s"], hot, 1e3 * args.chunk / sr)
            for mode, chunks in paced.items()
        }
    unbatched, batched = (c["max_streams_realtime"] for c in result["concurrency"])
    result["batching_gain"] = batched / unbatched if unbatched else float("nan")
    table = markdown(result)
    print("\n" + table)
    write_report(Path(args.output), result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
