"""`mcrave serve`: SIGTERM drains (NOT_SERVING, open streams finish within the grace period) and
bad options exit 2 with one line naming the problem."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mcrave_client.proto import encoder_pb2, encoder_pb2_grpc, stream_pb2
from services_helpers import CliServer, OpenStream, audio, channel, config, publish_tiny

from mcrave.cli.main import main as mcrave_main

ROOT = Path(__file__).resolve().parents[1]


def _chunk(x: np.ndarray, seq: int) -> encoder_pb2.EncodeRequest:
    pcm = np.ascontiguousarray(x[seq * 1024 : (seq + 1) * 1024]).tobytes()
    return encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=pcm))


def test_sigterm_drains_open_streams_within_grace(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    publish_tiny(models)
    server = CliServer("encoder", models, tmp_path / "ready.json", extra=("--grace-seconds", "3"))
    try:
        target = f"127.0.0.1:{server.wait_ready()['port']}"
        x = audio(8192)
        with channel(target) as ch:
            stub = encoder_pb2_grpc.EncoderServiceStub(ch)
            watch = health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(service="mcrave.v1.EncoderService")
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            finishing, abandoned = OpenStream(stub.Encode), OpenStream(stub.Encode)
            for s in (finishing, abandoned):
                s.send(encoder_pb2.EncodeRequest(config=config(chunk=1024)))
                s.recv()
                s.send(_chunk(x, 0))
                s.recv()
            t_term = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:  # no new streams while draining
                list(
                    stub.Encode(
                        iter([encoder_pb2.EncodeRequest(config=config(chunk=1024))]), timeout=5
                    )
                )
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            for seq in range(1, 8):  # the open stream runs on and ends normally
                finishing.send(_chunk(x, seq))
                assert finishing.recv().latents.ack == seq
            assert finishing.close()[-1].latents.final
            with pytest.raises(grpc.RpcError):  # the idle one is cut when the grace period ends
                abandoned.recv()
            assert time.monotonic() - t_term < 3 + 2
        assert server.proc.wait(15) == 0
    finally:
        server.terminate()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--models", "/nonexistent/models"],
            "/nonexistent/models: model registry folder does not exist",
        ),
        (["--host", "0.0.0.0", "--token-file", "TOKEN"], "only on loopback"),
        (["--tls-cert", "CERT"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nope.pem", "--tls-key", "/nope.key"], "/nope.key: cannot read TLS key"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "token").write_text("t")
    extra = [
        str(tmp_path / "token") if a == "TOKEN" else str(tmp_path / "c.pem") if a == "CERT" else a
        for a in extra
    ]
    argv = ["serve", "encoder", "--port", "0", "--metrics-port", "0"]
    argv += extra if "--models" in extra else ["--models", str(models), *extra]
    assert mcrave_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("mcrave serve encoder: ")


def test_mcrave_serve_comes_from_the_services_entry_point(capsys) -> None:
    """The core lists and runs `serve` only through the `mcrave.commands` entry point."""
    assert mcrave_main(["--help"]) == 0
    assert "  serve    run the encoder, decoder or trainer gRPC service" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        mcrave_main(["serve", "--help"])
    assert done.value.code == 0 and "{decoder,encoder,trainer}" in capsys.readouterr().out


def test_serve_without_the_grpc_packages_says_what_to_install(monkeypatch, capsys) -> None:
    import services.cli

    monkeypatch.setattr(services.cli, "SERVE_MODULES", ("grpc", "grpc_nonexistent.v1"))
    assert mcrave_main(["serve", "encoder", "--models", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "mcrave serve: grpc_nonexistent.v1 not installed: serving needs the serve extra and the "
        "SDK: pip install -e clients/python -e '.[serve]'"
    ]
