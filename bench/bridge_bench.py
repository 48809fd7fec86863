"""Bridge benchmark: OSC pacing jitter, end-to-end latency, underruns/overruns.

A stereo file is streamed (paced in real time) through `mcrave-bridge`'s engine with the
encoder and decoder services in their own processes; a UDP socket in this process stands in for
Max's `udpreceive` and timestamps every `/mcrave/latent` packet. Reported:
- pacing jitter: |interval between packets - frame period|, p50/p99 (target p99 < 2 ms), with
  arrivals stamped by liblo's oscdump in its own process when installed (real-time priority, else
  niceness -10, when permitted: Max's scheduler thread runs above normal work too), and the same
  as the bridge sent them ("sent": the pacer's own clock; the pacer asks for the same priority:
  mcrave_client/bridge/priority.py);
- end-to-end latency from an audio frame being available at the source to (a) its latent
  frame arriving over OSC and (b) its decoded audio arriving (model latency included),
  p50/p99, next to the target: model latency + one buffer + jitter buffer (prefill) + 10 ms;
- underruns/overruns, idle and with a loaded decoder (`--load` extra streams hammering it from
  another process).

    python bench/bridge_bench.py            # cpu-small model, 20 s per scenario
    python bench/bridge_bench.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from mcrave_client import DecoderClient, EncoderClient, Pipeline
from mcrave_client.bridge.control import Bridge
from mcrave_client.bridge.osc import LATENT, parse
from mcrave_client.bridge.priority import raise_priority
from mcrave_client.bridge.sources import FileSource
from mcrave_client.framing import iter_chunks
from service_procs import publish_untrained, services, write_report


def quantile(values, q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) if len(values) else float("nan")


class Receiver:
    """Stands in for Max's udpreceive and records (arrival time, frame index) per latent.

    liblo's oscdump, a separate C process, stamps each message on arrival (its printed time tag)
    so the bridge's own threads and GIL do not colour the measurement; without liblo a socket
    thread in this process does it.
    """

    NTP_EPOCH = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)

    def __init__(self, workdir: Path) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.arrivals: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._dump = None
        self.priority = ""
        if shutil.which("oscdump"):
            self.sock.close()
            self._log = workdir / f"oscdump-{self.port}.txt"
            with open(self._log, "w") as fh:
                self._dump = subprocess.Popen(["oscdump", "-L", str(self.port)], stdout=fh)
            # as Max's scheduler thread: above the services' load, like the pacer (when permitted)
            self.priority = raise_priority(self._dump.pid)
            time.sleep(0.3)
        else:
            self.sock.settimeout(0.2)
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        self.method = "oscdump" if self._dump else "python socket"

    def _run(self) -> None:
        self.priority = raise_priority(threading.get_native_id())
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            now = time.perf_counter()
            for address, args in parse(data):
                if address == LATENT:
                    self.arrivals.append((now, args[1]))

    def close(self) -> None:
        if self._dump is None:
            self._stop.set()
            self._thread.join()
            self.sock.close()
            return
        self._dump.terminate()
        self._dump.wait()
        to_perf = time.time() - time.perf_counter()  # wall clock -> perf_counter clock
        for line in self._log.read_text().splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[1] == LATENT:
                secs, frac = (int(x, 16) for x in parts[0].split("."))
                wall = secs - self.NTP_EPOCH + frac / 2**32
                self.arrivals.append((wall - to_perf, int(parts[4])))


def load_decoder(
    decoder: str, encoder: str, model: str, streams: int, running, stop, seconds: float
) -> None:
    """Background streams through encoder and decoder as fast as credit allows, until `stop`;
    `running` is set once every one has had a reply. Run in its own process, as other clients
    of the services would be (load threads in the bridge's process would also take the GIL
    from its pacer)."""
    replied = threading.Barrier(streams, action=running.set)

    def hammer() -> None:
        with Pipeline(EncoderClient(encoder), DecoderClient(decoder)) as pipe:
            info = pipe.model(model)
            x = np.zeros((1, int(seconds * info.sample_rate)), np.float32)
            while not stop.is_set():
                with pipe.stream(info, (1,), 8 * info.ratio) as stream:
                    for _ in stream.run(iter_chunks(x, 8 * info.ratio)):
                        if not running.is_set():
                            replied.wait()
                        if stop.is_set():
                            break

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(10)


def scenario(enc, dec, path: Path, chunk_frames: int, load: int, seconds: float) -> dict:
    receiver = Receiver(path.parent)
    spawn = multiprocessing.get_context("spawn")
    load_running, stop_load = spawn.Event(), spawn.Event()
    loader = None
    if load:
        args = (dec.target, enc.target, "bench", load, load_running, stop_load, seconds)
        loader = spawn.Process(target=load_decoder, args=args, daemon=True)
        loader.start()
        if not load_running.wait(60):
            raise RuntimeError("the decoder load did not start")
    sources = []

    def make_source(info, chunk):
        sources.append(FileSource(str(path), info.channels, info.sample_rate, chunk))
        return sources[-1]

    bridge = Bridge(
        EncoderClient(enc.target),
        DecoderClient(dec.target),
        model="bench",
        present=(1,),
        make_source=make_source,
        send_to=("127.0.0.1", receiver.port),
        chunk_frames=chunk_frames,
    )
    server = threading.Thread(target=bridge.serve, daemon=True)
    server.start()
    try:
        bridge.handle_local("/mcrave/start")
        session = bridge.session
        bridge.ended.wait(seconds + 60)
        time.sleep(0.3)
    finally:
        stop_load.set()
        if loader is not None:
            loader.join(15)
            if loader.is_alive():
                loader.kill()
        bridge.close()
        server.join()
        receiver.close()
    info, t0 = session.info, sources[0].t0
    period = info.ratio / info.sample_rate
    times = [t for t, _ in receiver.arrivals]
    jitter = np.abs(np.diff(times) - period) if len(times) > 1 else []
    sent = list(session.stats.sent_times)  # (frame, time after its send) in the bridge
    sent_jitter = [
        abs(t1 - t0 - period) for (i0, t0), (i1, t1) in zip(sent, sent[1:]) if i1 == i0 + 1
    ]
    first: dict[int, float] = {}
    for t, index in receiver.arrivals:
        first.setdefault(index, t)
    to_latent = [t - (t0 + (k + 1) * period) for k, t in first.items()]
    to_audio = [
        t - (t0 + (end - info.latency) / info.sample_rate)
        for end, t in session.stats.decoded_times
        if end > info.latency
    ]
    target = (info.latency + chunk_frames * info.ratio + bridge.prefill * info.ratio) / (
        info.sample_rate
    ) + 0.010
    return {
        "load_streams": load,
        "receiver": receiver.method,
        "frames_received": len(times),
        "distinct_frames": len(first),
        "underruns": session.jitter.underruns,
        "overruns": session.jitter.overruns,
        "late_ticks": session.stats.late_ticks,
        "jitter_p50_ms": 1e3 * quantile(jitter, 0.5),
        "jitter_p99_ms": 1e3 * quantile(jitter, 0.99),
        "sender_jitter_p50_ms": 1e3 * quantile(sent_jitter, 0.5),
        "sender_jitter_p99_ms": 1e3 * quantile(sent_jitter, 0.99),
        "pacer_priority": session.stats.pacer_priority,
        "receiver_priority": receiver.priority,
        "latent_latency_p50_ms": 1e3 * quantile(to_latent, 0.5),
        "latent_latency_p99_ms": 1e3 * quantile(to_latent, 0.99),
        "audio_latency_p50_ms": 1e3 * quantile(to_audio, 0.5),
        "audio_latency_p99_ms": 1e3 * quantile(to_audio, 0.99),
        "latency_target_ms": 1e3 * target,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| decoder load | jitter p50/p99 (ms) | sent p50/p99 (ms) | audio->latent p50/p99 (ms) | "
        "audio->decoded p50/p99 (ms) | target (ms) | underruns | overruns |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['load_streams']} streams | {r['jitter_p50_ms']:.2f} / {r['jitter_p99_ms']:.2f} | "
            f"{r['sender_jitter_p50_ms']:.2f} / {r['sender_jitter_p99_ms']:.2f} | "
            f"{r['latent_latency_p50_ms']:.1f} / {r['latent_latency_p99_ms']:.1f} | "
            f"{r['audio_latency_p50_ms']:.1f} / {r['audio_latency_p99_ms']:.1f} | "
            f"{r['latency_target_ms']:.1f} | {r['underruns']} | {r['overruns']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run (test preset, 1 s)")
    p.add_argument("--config", default="cpu-small", help="model preset (untrained weights)")
    p.add_argument("--seconds", type=float, default=20.0, help="audio per scenario")
    p.add_argument("--chunk-frames", type=int, default=2, help="latent frames per chunk")
    p.add_argument("--load", type=int, default=4, help="extra decoder streams in the load run")
    p.add_argument("-o", "--output", default="bench/results/bridge_bench.json")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.seconds, args.load = "test", 1.0, 1
    with tempfile.TemporaryDirectory(prefix="mcrave-bridge-bench-") as tmp:
        work = Path(tmp)
        models = work / "models"
        models.mkdir()
        publish_untrained(models, "bench", args.config, 2)
        with services(models, work) as (enc, dec):
            info = EncoderClient(enc.target).get_model("bench")
            rng = np.random.default_rng(0)
            frames = int(args.seconds * info.sample_rate)
            sf.write(
                work / "in.wav",
                (0.1 * rng.standard_normal((frames, 2))).astype(np.float32),
                info.sample_rate,
                subtype="FLOAT",
            )
            rows = [
                scenario(enc, dec, work / "in.wav", args.chunk_frames, load, args.seconds)
                for load in (0, args.load)
            ]
    result = {"config": args.config, "chunk_frames": args.chunk_frames, "rows": rows}
    table = markdown(rows)
    print(table)
    write_report(Path(args.output), result, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
