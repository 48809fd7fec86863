"""Soak test: many concurrent streams through the encoder and decoder services for a long time,
watching the services' resident memory (RSS) for growth.

Each of `--streams` workers opens an encoder -> decoder stream, sends `--stream-seconds` of audio
paced in real time (or as fast as credit allows if the services cannot keep up), ends it and
opens the next, until `--minutes` have passed. RSS of both service processes is sampled every
few seconds; growth is measured from the end of the warm-up (first 10 % of the run) to the end.

    python bench/soak.py                # 64 streams, 10 minutes (an otherwise idle machine)
    python bench/soak.py --quick        # smoke run: 4 streams, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mcrave_client import ClientError
from mcrave_client.aio import AsyncDecoderClient, AsyncEncoderClient, AsyncPipeline
from mcrave_client.framing import iter_chunks
from service_procs import publish_untrained, services, write_report


async def worker(
    pipe: AsyncPipeline,
    info,
    audio: np.ndarray,
    chunk: int,
    until: float,
    offset: float,
    stats: dict,
) -> None:
    period = chunk / info.sample_rate
    await asyncio.sleep(offset)
    while time.perf_counter() < until:

        async def paced(t0: float = time.perf_counter()):
            for i, block in enumerate(iter_chunks(audio, chunk)):
                await asyncio.sleep(max(0.0, t0 + (i + 1) * period - time.perf_counter()))
                yield block

        try:
            stream = await pipe.stream(info, [1], chunk)
            async for block in stream.run(paced()):
                stats["frames"] += block.audio.shape[1]
            stats["streams"] += 1
        except ClientError as err:
            stats["errors"].append(str(err))
            await asyncio.sleep(0.5)


async def soak(
    enc, dec, streams: int, seconds: float, stream_seconds: float, chunk: int, sample_every: float
) -> dict:
    pipe = AsyncPipeline(AsyncEncoderClient(enc.target), AsyncDecoderClient(dec.target))
    info = await pipe.model("soak")
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((1, int(stream_seconds * info.sample_rate)))).astype(
        np.float32
    )
    stats: dict = {"frames": 0, "streams": 0, "errors": []}
    start = time.perf_counter()
    until = start + seconds
    period = chunk / info.sample_rate
    tasks = [
        asyncio.create_task(worker(pipe, info, audio, chunk, until, i * period / streams, stats))
        for i in range(streams)
    ]
    samples = []
    while not all(t.done() for t in tasks):
        samples.append(
            {
                "t": time.perf_counter() - start,
                "encoder": enc.rss_bytes(),
                "decoder": dec.rss_bytes(),
            }
        )
        await asyncio.sleep(min(sample_every, max(0.1, until - time.perf_counter())))
    samples.append(
        {"t": time.perf_counter() - start, "encoder": enc.rss_bytes(), "decoder": dec.rss_bytes()}
    )
    await asyncio.gather(*tasks)
    await pipe.close()
    wall = time.perf_counter() - start
    return {
        "samples": samples,
        "wall_s": wall,
        "streams_completed": stats["streams"],
        "decoded_audio_s": stats["frames"] / info.sample_rate,
        "aggregate_xrt": stats["frames"] / info.sample_rate / wall,
        "errors": stats["errors"][:20],
        "error_count": len(stats["errors"]),
    }


def growth(samples: list[dict], service: str, warmup_s: float) -> dict:
    after = [s[service] for s in samples if s["t"] >= warmup_s] or [samples[-1][service]]
    base, final = after[0], samples[-1][service]
    return {
        "baseline_mb": base / 2**20,
        "final_mb": final / 2**20,
        "peak_mb": max(s[service] for s in samples) / 2**20,
        "growth_pct": 100.0 * (final - base) / base,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run (4 streams, seconds)")
    p.add_argument("--config", default="cpu-small", help="model preset (untrained weights)")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--stream-seconds", type=float, default=10.0, help="audio per stream")
    p.add_argument("--chunk", type=int, default=2048)
    p.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period (s)")
    p.add_argument("-o", "--output", default="bench/results/soak.json")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.streams, args.minutes = "test", 4, 0.1
        args.stream_seconds, args.chunk, args.sample_every = 1.0, 512, 0.5
    seconds = 60 * args.minutes
    with tempfile.TemporaryDirectory(prefix="mcrave-soak-") as tmp:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        publish_untrained(models, "soak", args.config, 2)
        with services(models, work, "--max-streams", str(max(64, 2 * args.streams))) as svc:
            enc, dec = svc
            run = asyncio.run(
                soak(
                    enc,
                    dec,
                    args.streams,
                    seconds,
                    args.stream_seconds,
                    args.chunk,
                    args.sample_every,
                )
            )
    warmup = 0.1 * seconds
    result = {
        "config": args.config,
        "streams": args.streams,
        "minutes": args.minutes,
        "chunk": args.chunk,
        **run,
        "rss": {s: growth(run["samples"], s, warmup) for s in ("encoder", "decoder")},
    }
    table = [
        "| service | RSS after warm-up (MB) | final (MB) | peak (MB) | growth |",
        "|---|---|---|---|---|",
    ]
    for name, g in result["rss"].items():
        table.append(
            f"| {name} | {g['baseline_mb']:.1f} | {g['final_mb']:.1f} | "
            f"{g['peak_mb']:.1f} | {g['growth_pct']:+.2f} % |"
        )
    table.append(
        f"\n{args.streams} concurrent streams for {run['wall_s']:.0f} s: "
        f"{run['streams_completed']} streams completed, "
        f"{run['decoded_audio_s']:.0f} s of audio decoded "
        f"({run['aggregate_xrt']:.1f}x RT aggregate), {run['error_count']} errors"
    )
    text = "\n".join(table)
    print(text)
    write_report(Path(args.output), result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
