"""The SDK against real encoder/decoder services, each in its own `mcrave serve` process.

Parity: output through the SDK / `mcrave-client` equals `mcrave infer` and
`mcrave.inference.infer_array` on the same model, file, present set and chunking within 1e-4:
by default the present audio travels to the decoder (spatial stage); `latent_only` /
`--latent-only` match `mcrave infer --latent-only`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest
import soundfile as sf
import torch
from mcrave_client import (
    Backoff,
    ClientError,
    DecoderClient,
    EncoderClient,
    Pipeline,
    SetPresent,
    protocol,
)
from mcrave_client.aio import AsyncDecoderClient, AsyncEncoderClient, AsyncPipeline
from mcrave_client.framing import iter_chunks
from mcrave_client.infer import infer_array as sdk_infer_array
from mcrave_client.proto import stream_pb2
from mcrave_client.types import Latents, ModelRef, StreamInfo
from sdk_helpers import REPO, free_port, make_pki, services, tiny_stack

from mcrave.checkpoint import load_model
from mcrave.cli.main import main as mcrave_main
from mcrave.inference import infer_array
from mcrave.streaming import StreamingEngine

TOL = 1e-4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tiny_stack(tmp_path_factory.mktemp("sdk"), seconds=1.0) as st:
        st.model, _ = load_model(str(st.models / "tiny"))
        st.pipeline = Pipeline(EncoderClient(st.enc.target), DecoderClient(st.dec.target))
        yield st
        st.pipeline.close()


def client_cli(*args: str, exe: str | None = None) -> subprocess.CompletedProcess:
    exe = exe or shutil.which("mcrave-client")
    assert exe, "mcrave-client is not installed (pip install -e clients/python)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def endpoints(stack) -> list[str]:
    return ["--encoder", stack.enc.target, "--decoder", stack.dec.target]


def infer_cli(stack, out, *extra: str, exe: str | None = None) -> subprocess.CompletedProcess:
    """`mcrave-client infer in.wav OUT --present 1 ...`."""
    return client_cli(
        "infer", str(stack.tmp / "in.wav"), str(out), "--present", "1", *extra, exe=exe
    )


@pytest.mark.parametrize(
    ("present", "chunk", "latent_only"),
    [
        ((1,), None, False),
        ((1,), 512, False),
        ((1,), 512, True),
        ((0,), 1024, False),
        ((0, 1), 256, True),
    ],
)
def test_sdk_matches_in_process_inference(stack, present, chunk, latent_only):
    got = sdk_infer_array(
        stack.pipeline, stack.audio, present, chunk=chunk, latent_only=latent_only
    )
    want = infer_array(
        stack.model, stack.audio, list(present), chunk=chunk, latent_only=latent_only
    )
    assert got.shape == want.shape == stack.audio.shape
    assert np.abs(got - want).max() < TOL


@pytest.mark.parametrize("latent_only", [False, True])
def test_cli_matches_mcrave_infer(stack, latent_only):
    flag = ["--latent-only"] if latent_only else []
    out, ref = stack.tmp / "cli-out.wav", stack.tmp / "ref-out.wav"
    run = infer_cli(stack, str(out), "--chunk", "1024", *flag, *endpoints(stack))
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "tiny v1" in run.stdout
    assert ("latent-only" if latent_only else "spatial") in run.stdout
    # `mcrave infer` itself (its CLI entry, in this process: torch is loaded already)
    reference = ["infer", str(stack.models / "tiny"), str(stack.tmp / "in.wav"), str(ref)]
    assert mcrave_main([*reference, "--present", "1", "--chunk", "1024", *flag]) == 0
    got, rate = sf.read(out, dtype="float32", always_2d=True)
    want, _ = sf.read(ref, dtype="float32", always_2d=True)
    assert rate == 44100 and got.shape == want.shape == (44100, 2)
    assert np.abs(got - want).max() < TOL


def test_cli_folders_channel_names_and_other_rates_like_mcrave_infer(stack):
    """A folder in -> a folder out (sub-folders kept), `--present R` by name, a 48 kHz file
    resampled and written back at 48 kHz: the same files `mcrave infer` writes."""
    src, out, ref = stack.tmp / "src", stack.tmp / "out-dir", stack.tmp / "ref-dir"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", stack.audio.T, 44100, subtype="FLOAT")
    short = stack.audio[:, : stack.audio.shape[1] // 2]
    sf.write(src / "sub" / "b.flac", short.T, 48000)
    run = client_cli(
        "infer", str(src), str(out), "--present", "R", "--version", "1", *endpoints(stack)
    )
    assert run.returncode == 0, run.stderr
    assert "[2/2] wrote" in run.stdout and "done: 2 files" in run.stdout
    assert (
        mcrave_main(["infer", str(stack.models / "tiny"), str(src), str(ref), "--present", "R"])
        == 0
    )
    for name in ("a.wav", "sub/b.wav"):
        got, rate = sf.read(out / name, dtype="float32", always_2d=True)
        want, want_rate = sf.read(ref / name, dtype="float32", always_2d=True)
        assert rate == want_rate == (44100 if name == "a.wav" else 48000)
        assert got.shape == want.shape and np.abs(got - want).max() < TOL
    bad = client_cli("infer", str(src), str(out), "--present", "X", *endpoints(stack))
    assert (
        bad.returncode == 2 and "'X' is neither a channel index nor one of ['L', 'R']" in bad.stderr
    )


def test_decode_stream_frames_the_present_audio():
    """No server: what a spatial decode stream writes for each Latents item."""
    info = StreamInfo(ModelRef("tiny", 1, "f" * 64), 4, 0, 256, 8)
    state = protocol.DecodeStream(stream_pb2.StreamConfig(channels=2, present=[1]))
    state.info = info
    z = np.zeros((8, 3), np.float32)
    ragged = np.ones((1, 600), np.float32)  # a ragged last chunk: padded to 3 x 256
    (req,) = state.requests_for(Latents(z, stream_pb2.LatentChunk(), ragged, (1,)))
    assert len(req.chunk.audio) == 768 * 4 and req.chunk.audio[600 * 4 :] == bytes(168 * 4)
    both = np.ones((2, 768), np.float32)
    update, req = state.requests_for(Latents(z, stream_pb2.LatentChunk(), both, (0, 1)))
    assert list(update.config.present) == [0, 1] and len(req.chunk.audio) == 768 * 8
    (req,) = state.requests_for(Latents(z, stream_pb2.LatentChunk(final=True)))  # tail flush
    assert req.chunk.final and not req.chunk.audio
    with pytest.raises(ClientError, match="carry no audio"):
        state.requests_for(Latents(z, stream_pb2.LatentChunk()))
    with pytest.raises(ClientError, match="do not match"):
        state.requests_for(Latents(z, stream_pb2.LatentChunk(), both[:, :512], (0, 1)))
    latent_only = protocol.DecodeStream(stream_pb2.StreamConfig(channels=2))
    latent_only.info = info
    (req,) = latent_only.requests_for(Latents(z, stream_pb2.LatentChunk(), both, (0, 1)))
    assert not req.chunk.audio  # the audio stays home


def test_present_change_mid_stream_takes_effect_at_next_chunk(stack):
    chunk, switch = 512, 4
    x = stack.audio
    items = []
    for i, block in enumerate(iter_chunks(x, chunk)):
        if i == switch:
            items.append(SetPresent((0, 1)))
        items.append(block[[1]] if i < switch else block)
    info = stack.pipeline.model("tiny")
    with stack.pipeline.stream(info, (1,), chunk) as stream:
        got = np.concatenate([d.audio for d in stream.run(items)], axis=1)
    with stack.pipeline.encoder.stream(info, (1,), chunk) as stream:
        latents = np.concatenate([lat.array for lat in stream.run(items)], axis=1)
    # reference: the engine fed the same chunks with the mask changing at the same chunk, the
    # decoder too (the pipeline sends the decoder a present update with the audio)
    engine = StreamingEngine(stack.model)
    total = -(-(x.shape[1] + engine.latency) // chunk) * chunk
    padded = torch.from_numpy(np.pad(x, ((0, 0), (0, total - x.shape[1]))))[None]
    want, want_z, right_z = [], [], []
    es, ds, rs = (
        engine.new_encoder_state(1),
        engine.new_decoder_state(1),
        engine.new_encoder_state(1),
    )
    for i, start in enumerate(range(0, total, chunk)):
        block = padded[..., start : start + chunk]
        mask = torch.tensor([[i >= switch, True]])
        es, z = engine.encode_step(es, block, mask)
        rs, rz = engine.encode_step(rs, block, torch.tensor([[False, True]]))
        ds, y = engine.decode_step(ds, z, block, mask)
        want.append(y[0].numpy())
        want_z.append(z[0].numpy())
        right_z.append(rz[0].numpy())
    want = np.concatenate(want, axis=1)[:, : got.shape[1]]
    want_z, right_z = (np.concatenate(z, axis=1)[:, : latents.shape[1]] for z in (want_z, right_z))
    assert got.shape[1] >= x.shape[1] + engine.latency
    assert np.abs(got - want).max() < TOL
    assert np.abs(latents - want_z).max() < TOL
    frames = chunk // info.ratio
    # before the switch only the right channel counted; from the switch chunk on the left did too
    assert np.abs(latents[:, : switch * frames] - right_z[:, : switch * frames]).max() < TOL
    assert np.abs(latents[:, switch * frames :] - right_z[:, switch * frames :]).max() > 1e-3


def test_async_pipeline_equals_sync(stack):
    async def run() -> np.ndarray:
        pipe = AsyncPipeline(
            AsyncEncoderClient(stack.enc.target), AsyncDecoderClient(stack.dec.target)
        )
        try:
            info = await pipe.model()
            stream = await pipe.stream(info, (1,), 512)
            blocks = [d.audio async for d in stream.run(iter_chunks(stack.audio[[1]], 512))]
            return np.concatenate(blocks, axis=1), stream.info
        finally:
            await pipe.close()

    got, info = asyncio.run(run())
    assert info.model.name == "tiny" and info.model.version == 1 and info.credit >= 1
    want = infer_array(stack.model, stack.audio, [1], chunk=512)
    assert np.abs(got[:, info.latency : info.latency + want.shape[1]] - want).max() < TOL


def test_encoder_replies_name_the_weights(stack):
    info = stack.pipeline.model()
    with stack.pipeline.encoder.stream(info, (1,), 512) as stream:
        latents = list(stream.run(iter_chunks(stack.audio[[1]], 512)))
    assert latents[-1].final and not any(lat.final for lat in latents[:-1])
    assert {(lat.chunk.model, lat.chunk.version, lat.chunk.fingerprint) for lat in latents} == {
        ("tiny", 1, info.ref.fingerprint)
    }
    assert all(lat.array.shape[0] == info.latent_size for lat in latents)


def test_errors_are_clear(stack):
    with pytest.raises(ClientError, match="NOT_FOUND") as err:
        stack.pipeline.model("no-such-model")
    assert err.value.code == grpc.StatusCode.NOT_FOUND and "\n" not in str(err.value)
    with pytest.raises(ClientError, match="multiple of the model ratio 256"):
        stack.pipeline.stream("tiny", (1,), 300)
    mono = stack.tmp / "mono3.wav"
    sf.write(mono, np.zeros((800, 3), np.float32), 44100)
    cases = [
        (str(stack.tmp / "missing.wav"), "missing.wav: cannot read audio"),
        (str(mono), "audio has 3 channels"),
    ]
    for path, message in cases:
        run = client_cli(
            "infer", path, str(stack.tmp / "x.wav"), "--present", "1", "--quiet", *endpoints(stack)
        )
        assert run.returncode == 2 and message in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    run = infer_cli(
        stack,
        str(stack.tmp / "x.wav"),
        "--encoder",
        f"127.0.0.1:{free_port()}",
        "--decoder",
        stack.dec.target,
    )
    assert run.returncode == 2 and "UNAVAILABLE" in run.stderr and "running" in run.stderr
    assert not (stack.tmp / "x.wav").exists()


def test_mtls_token_and_reconnect_with_backoff(stack):
    """A TLS+token client started before its services retries on UNAVAILABLE until they are up."""
    pki = make_pki(stack.tmp)
    token = stack.tmp / "token"
    token.write_text("s3cret\n")
    tls = {"tls_ca": pki["ca_cert"], "tls_cert": pki["client_cert"], "tls_key": pki["client_key"]}
    ports = (free_port(), free_port())
    backoff = Backoff(attempts=400, initial=0.1, max_delay=0.3)
    pipeline = Pipeline(
        EncoderClient(f"127.0.0.1:{ports[0]}", backoff=backoff, token="s3cret", **tls),
        DecoderClient(f"127.0.0.1:{ports[1]}", backoff=backoff, token="s3cret", **tls),
    )
    result: dict = {}

    def client() -> None:
        try:
            result["out"] = sdk_infer_array(pipeline, stack.audio, (1,), model="tiny", chunk=512)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=client)
    thread.start()  # nothing listens yet: the client backs off and retries
    flags = [
        "--tls-cert",
        str(pki["server_cert"]),
        "--tls-key",
        str(pki["server_key"]),
        "--tls-ca",
        str(pki["ca_cert"]),
        "--token-file",
        str(token),
    ]
    with services(stack.models, stack.tmp, *flags, ports=ports) as (enc, dec):
        thread.join(timeout=90)
        pipeline.close()
        assert "error" not in result, result.get("error")
        want = infer_array(stack.model, stack.audio, [1], chunk=512)
        assert np.abs(result["out"] - want).max() < TOL
        out = stack.tmp / "tls-out.wav"
        tls_args = [
            "--tls-ca",
            str(pki["ca_cert"]),
            "--tls-cert",
            str(pki["client_cert"]),
            "--tls-key",
            str(pki["client_key"]),
        ]
        run = infer_cli(
            stack,
            str(out),
            "--chunk",
            "512",
            "--quiet",
            "--token-file",
            str(token),
            *tls_args,
            "--encoder",
            enc.target,
            "--decoder",
            dec.target,
        )
        assert run.returncode == 0, run.stderr
        got, _ = sf.read(out, dtype="float32", always_2d=True)
        assert np.abs(got.T - want).max() < TOL
        wrong = stack.tmp / "wrong-token"
        wrong.write_text("nope")
        run = client_cli("models", "--server", enc.target, "--token-file", str(wrong), *tls_args)
        assert run.returncode == 2 and "UNAUTHENTICATED" in run.stderr, run.stderr
        run = client_cli(
            "models",
            "--server",
            enc.target,
            "--token-file",
            str(token),
            "--tls-ca",
            str(pki["ca_cert"]),
        )
        assert run.returncode == 2 and "--tls-cert" in run.stderr, run.stderr  # no client cert


@pytest.mark.slow
def test_fresh_venv_without_torch(stack, tmp_path):
    venv = tmp_path / "venv"
    # a bare venv filled by this interpreter's pip (`--python`): the same packages as ensurepip
    # followed by the venv's own pip, without bootstrapping a second pip first
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q"]
    # install from a clean copy: building in place would leave build/ and egg-info in the repo
    src = shutil.copytree(
        REPO / "clients" / "python",
        tmp_path / "src",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run([*pip, str(src)], check=True, timeout=300, capture_output=True)
    probe = subprocess.run([str(py), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    bridge = subprocess.run(
        [str(venv / "bin" / "mcrave-bridge"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert bridge.returncode == 0 and "--present" in bridge.stdout
    out = tmp_path / "venv-out.wav"
    run = infer_cli(
        stack,
        str(out),
        "--chunk",
        "512",
        *endpoints(stack),
        exe=str(venv / "bin" / "mcrave-client"),
    )
    assert run.returncode == 0, run.stderr
    # no terminal: no bar, a timestamped line per file (the bar is for terminals)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[1/1\] wrote ", run.stdout), run.stdout
    got, _ = sf.read(out, dtype="float32", always_2d=True)
    want = infer_array(stack.model, stack.audio, [1], chunk=512)
    assert np.abs(got.T - want).max() < TOL
