"""A real Prometheus server scrapes both services while audio streams; its rates match reality.

Skips when the `prometheus` binary is missing (scripts/apt-packages.txt installs it in CI).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mcrave_client.proto import (
    decoder_pb2,
    decoder_pb2_grpc,
    encoder_pb2,
    encoder_pb2_grpc,
    stream_pb2,
)
from services_helpers import SR, OpenStream, ServerThread, audio, channel, config, publish_tiny

from services.decoder.servicer import SERVICE as DECODER
from services.encoder.servicer import SERVICE as ENCODER

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed")

CHUNK = 1024
SPEED = 2.0  # the client streams at 2x real time
STREAM_S = 14.0  # wall seconds of streaming


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def _query(port: int, expr: str, at: float) -> float:
    result = _api(port, "query", query=expr, time=f"{at:.3f}")["result"]
    assert result, f"no data for {expr}"
    return sum(float(r["value"][1]) for r in result)


@pytest.fixture
def prometheus(tmp_path: Path):
    """Encoder + decoder and a Prometheus scraping both every second; yields (port, enc, dec)."""
    root = tmp_path / "models"
    root.mkdir()
    publish_tiny(root)
    enc, dec = ServerThread(ENCODER, root), ServerThread(DECODER, root)
    port = _free_port()
    cfg = tmp_path / "prometheus.yml"
    targets = [f"127.0.0.1:{s.running.metrics_port}" for s in (enc, dec)]
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: mcrave\n    static_configs:\n      - targets: {json.dumps(targets)}\n"
    )
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                active = _api(port, "targets")["activeTargets"]
                if len(active) == 2 and all(t["health"] == "up" for t in active):
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "Prometheus never scraped both services"
            time.sleep(0.2)
        yield port, enc, dec
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        enc.stop()
        dec.stop()


def _paced_pipeline(
    enc: ServerThread, dec: ServerThread, x: np.ndarray, seconds: float
) -> list[float]:
    """Stream x through encoder then decoder at SPEED x real time; returns each chunk's wall time."""
    period = CHUNK / SR / SPEED
    sent = []
    with channel(enc.target) as ech, channel(dec.target) as dch:
        es = OpenStream(encoder_pb2_grpc.EncoderServiceStub(ech).Encode)
        ds = OpenStream(decoder_pb2_grpc.DecoderServiceStub(dch).Decode)
        es.send(encoder_pb2.EncodeRequest(config=config(present=(1,), chunk=CHUNK)))
        ds.send(decoder_pb2.DecodeRequest(config=config(present=(), chunk=CHUNK)))
        es.recv()
        ds.recv()
        t0 = time.monotonic()
        while time.monotonic() < t0 + seconds:
            seq = len(sent)
            start = (seq * CHUNK) % (len(x) - CHUNK)
            pcm = np.ascontiguousarray(x[start : start + CHUNK, [1]]).tobytes()
            es.send(encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=pcm)))
            ds.send(decoder_pb2.DecodeRequest(chunk=es.recv().latents))
            ds.recv()
            sent.append(time.time())
            time.sleep(max(0.0, t0 + (seq + 1) * period - time.monotonic()))
        es.close()
        ds.close()
    return sent


def test_prometheus_rates_match_streamed_audio(prometheus) -> None:
    port, enc, dec = prometheus
    sent = _paced_pipeline(enc, dec, audio(SR, seed=1), STREAM_S)
    time.sleep(2.5)  # let the last scrapes land
    at = sent[-1] - 1.0  # inside the streaming period, with a full window before it
    window = 8.0
    actual = sum(at - window < t <= at for t in sent) * CHUNK / SR / window  # audio s per wall s
    assert actual > SPEED / 2, f"could only stream at {actual:.2f}x real time"
    for name, server in (
        ("mcrave_audio_in_seconds_total", "encoder"),
        ("mcrave_audio_out_seconds_total", "decoder"),
    ):
        expr = (
            f'rate({name}{{job="mcrave",model="tiny"}}[{window:g}s]) '
            f'and on(instance) mcrave_build_info{{service="{server}"}}'
        )
        rate = _query(port, expr, at)
        assert abs(rate - actual) <= 0.2 * actual, (
            f"{server}: Prometheus rate {rate:.3f} vs streamed {actual:.3f}"
        )
    # the other families are there too, with base-unit names
    for metric in (
        "mcrave_chunk_latency_seconds_bucket",
        "mcrave_queue_wait_seconds_count",
        "mcrave_active_streams",
        "mcrave_received_bytes_total",
        "mcrave_batch_size_count",
        "mcrave_processing_speed",
        "mcrave_model_info",
    ):
        assert _api(port, "query", query=metric, time=f"{at:.3f}")["result"], metric
