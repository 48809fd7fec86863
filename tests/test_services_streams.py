"""Encoder and decoder servers end to end: results equal the core, protocol semantics, lifecycle."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mcrave_client.proto import (
    decoder_pb2,
    decoder_pb2_grpc,
    encoder_pb2,
    encoder_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    stream_pb2,
)
from services_helpers import (
    OpenStream,
    ServerThread,
    audio,
    channel,
    config,
    decode,
    encode,
    latents_array,
    publish_tiny,
    with_audio,
)

from mcrave.checkpoint import load_model
from mcrave.inference import infer_array
from services.common.limits import Limits
from services.decoder.servicer import SERVICE as DECODER
from services.encoder.servicer import SERVICE as ENCODER


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root, seed=0)
    enc = ServerThread(ENCODER, root, limits=Limits(max_streams=8))
    dec = ServerThread(DECODER, root)
    yield root, enc, dec
    enc.stop()
    dec.stop()


def engine_of(server: ServerThread, version: int = 0):
    return server.running.runtime.watcher.get("tiny", version).engine


def test_pipeline_equals_mcrave_infer(servers) -> None:
    _, enc, dec = servers
    x = audio(11000)  # not a multiple of the chunk nor of the ratio: tail padding + flush
    started, latents = encode(enc.target, config(present=(1,), chunk=1024), x)
    assert [c.seq for c in latents] == list(range(len(latents))) and latents[-1].final
    assert all(c.model == "tiny" and c.version == started.model.version for c in latents)
    lat = started.latency
    # latent-only: the decoder gets the latents alone
    _, y = decode(dec.target, config(present=(), chunk=1024), latents)
    got_latent = y[lat : lat + len(x)].T
    want_latent = infer_array(engine_of(enc), x.T, present=[1], chunk=1024, latent_only=True)
    assert got_latent.shape == want_latent.shape
    np.testing.assert_allclose(got_latent, want_latent, atol=1e-4)
    # spatial: the right channel's audio travels with the latents (the tail flush without)
    spatial = with_audio(latents, x, (1,), 1024)
    _, y = decode(dec.target, config(present=(1,), chunk=1024), spatial)
    got = y[lat : lat + len(x)].T
    want = infer_array(engine_of(enc), x.T, present=[1], chunk=1024)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(want - want_latent).max() > 1e-2  # the audio really steered the output


def test_servers_run_the_runtime_they_are_given(tmp_path) -> None:
    """`mcrave serve --runtime torchscript-int8` (ServerConfig.runtime): every model loads on
    that runtime, and the streams equal `mcrave infer --runtime torchscript-int8`, not float32."""
    root = tmp_path / "models"
    root.mkdir()
    version = publish_tiny(root, seed=0)
    enc = ServerThread(ENCODER, root, runtime="torchscript-int8")
    dec = ServerThread(DECODER, root, runtime="torchscript-int8")
    try:
        x = audio(6000, seed=5)
        cfg = config(present=(1,), chunk=512)  # 2 latent frames a step: the int8 GEMMs
        started, latents = encode(enc.target, cfg, x)
        _, y = decode(dec.target, cfg, with_audio(latents, x, (1,), 512))
        got = y[started.latency : started.latency + len(x)].T
        assert engine_of(enc).runtime == engine_of(dec).runtime == "torchscript-int8"
        want = infer_array(engine_of(enc), x.T, present=[1], chunk=512)
        np.testing.assert_allclose(got, want, atol=1e-5)
        model, _ = load_model(root / "tiny" / str(version))
        float32 = infer_array(model, x.T, present=[1], chunk=512)
        assert np.abs(got - float32).max() > 1e-5
    finally:
        enc.stop()
        dec.stop()


def test_clip_equals_stream(servers) -> None:
    _, enc, dec = servers
    x = audio(20000, seed=3)  # longer than one step: the clip runs in several
    cfg = config(present=(0,), chunk=1024)
    _, latents = encode(enc.target, cfg, x)
    with channel(enc.target) as ch:
        clip = encoder_pb2_grpc.EncoderServiceStub(ch).EncodeClip(
            encoder_pb2.EncodeClipRequest(
                config=config(present=(0,), chunk=0), pcm=x[:, [0]].tobytes()
            )
        )
    np.testing.assert_allclose(
        latents_array([clip.latents], 8), latents_array(latents, 8), atol=1e-5
    )
    _, y_stream = decode(dec.target, config(present=(), chunk=1024), latents)
    with channel(dec.target) as ch:
        out = decoder_pb2_grpc.DecoderServiceStub(ch).DecodeClip(
            decoder_pb2.DecodeClipRequest(config=config(present=(), chunk=0), latents=clip.latents)
        )
    y_clip = np.frombuffer(out.audio.pcm, "<f4").reshape(-1, 2)
    np.testing.assert_allclose(y_clip, y_stream, atol=1e-5)
    # with the present audio: the clip's pcm as it is (shorter than frames x ratio: the rest is
    # silence, like the stream's padded last chunk and audio-less tail flush)
    clip_latents = stream_pb2.LatentChunk()
    clip_latents.CopyFrom(clip.latents)
    clip_latents.audio = x[:, [0]].tobytes()
    _, y_stream = decode(
        dec.target, config(present=(0,), chunk=1024), with_audio(latents, x, (0,), 1024)
    )
    with channel(dec.target) as ch:
        out = decoder_pb2_grpc.DecoderServiceStub(ch).DecodeClip(
            decoder_pb2.DecodeClipRequest(
                config=config(present=(0,), chunk=0), latents=clip_latents
            )
        )
    y_clip = np.frombuffer(out.audio.pcm, "<f4").reshape(-1, 2)
    np.testing.assert_allclose(y_clip, y_stream, atol=1e-5)


def test_present_update_takes_effect_at_next_chunk(servers) -> None:
    _, enc, _ = servers
    x = audio(4096, seed=5)
    with channel(enc.target) as ch:
        s = OpenStream(encoder_pb2_grpc.EncoderServiceStub(ch).Encode)
        s.send(encoder_pb2.EncodeRequest(config=config(present=(0, 1), chunk=1024)))
        s.recv()
        for seq in range(4):
            if seq == 2:
                s.send(encoder_pb2.EncodeRequest(config=stream_pb2.StreamConfig(present=[1])))
            cols = [0, 1] if seq < 2 else [1]
            pcm = np.ascontiguousarray(x[seq * 1024 : (seq + 1) * 1024, cols]).tobytes()
            s.send(encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=seq, pcm=pcm)))
        got = latents_array([r.latents for r in s.close()][:4], 8)
    import torch

    engine = engine_of(enc)
    state = engine.new_encoder_state(1)
    want = []
    for seq in range(4):
        mask = torch.tensor([[seq < 2, True]])
        chunk = torch.from_numpy(np.ascontiguousarray(x[seq * 1024 : (seq + 1) * 1024].T))[None]
        state, z = engine.encode_step(state, chunk, mask)
        want.append(z[0].T.numpy())
    np.testing.assert_array_equal(got, np.concatenate(want))


def test_hot_reload_new_streams_get_new_version_open_streams_keep_theirs(servers) -> None:
    root, enc, dec = servers
    x = audio(2048, seed=7)
    with channel(enc.target) as ch:
        old = OpenStream(encoder_pb2_grpc.EncoderServiceStub(ch).Encode)
        old.send(encoder_pb2.EncodeRequest(config=config(chunk=1024)))
        v_old = old.recv().started.model.version
        new_version = publish_tiny(root, seed=1)
        for server in (enc, dec):
            server.poll()
        started, latents_new = encode(enc.target, config(chunk=1024), x)
        assert started.model.version == new_version != v_old
        old.send(
            encoder_pb2.EncodeRequest(chunk=stream_pb2.AudioChunk(seq=0, pcm=x[:1024].tobytes()))
        )
        replies = [old.recv()] + old.close()
    latents_old = [r.latents for r in replies]
    assert {c.version for c in latents_old} == {v_old}
    assert latents_old[0].fingerprint != latents_new[0].fingerprint
    # a decoder stream bound to the new version refuses latents of the old one
    with pytest.raises(grpc.RpcError) as err:
        decode(dec.target, config(present=(), chunk=1024), latents_old)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version" in err.value.details()
    assert dict(err.value.trailing_metadata())["mcrave-reason"] == "version-mismatch"
    # ... and a decoder bound to the old version decodes them
    decode(dec.target, config(version=v_old, present=(), chunk=1024), latents_old)


def test_list_and_get_models(servers) -> None:
    _, enc, dec = servers
    for server in (enc, dec):
        with channel(server.target) as ch:
            stub = models_pb2_grpc.ModelServiceStub(ch)
            (info,) = stub.ListModels(models_pb2.ListModelsRequest()).models
            assert (
                info.ref.name,
                info.channels,
                info.sample_rate,
                info.ratio,
                info.latent_size,
            ) == ("tiny", 2, 44100, 256, 8)
            assert info.latency == engine_of(server).latency and info.max_chunk % info.ratio == 0
            assert info.ref.version == max(info.versions) and len(info.ref.fingerprint) == 64
            first = stub.GetModel(models_pb2.GetModelRequest(name="tiny", version=info.versions[0]))
            assert first.ref.version == info.versions[0]
            with pytest.raises(grpc.RpcError) as err:
                stub.GetModel(models_pb2.GetModelRequest(name="nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_and_reflection(servers) -> None:
    _, enc, _ = servers
    with channel(enc.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "mcrave.v1.EncoderService", "mcrave.v1.ModelService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        (reply,) = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for s in reply.list_services_response.service}
        assert {
            "mcrave.v1.EncoderService",
            "mcrave.v1.ModelService",
            "grpc.health.v1.Health",
        } <= names


def _wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_cancel_deadline_and_stream_limit_free_state(servers) -> None:
    _, enc, _ = servers
    active = lambda: enc.sample("mcrave_active_streams", {"model": "tiny"})  # noqa: E731
    with channel(enc.target) as ch:
        stub = encoder_pb2_grpc.EncoderServiceStub(ch)
        streams = []
        for _ in range(8):
            s = OpenStream(stub.Encode)
            s.send(encoder_pb2.EncodeRequest(config=config(chunk=1024)))
            s.recv()
            streams.append(s)
        assert active() == 8
        extra = OpenStream(stub.Encode)
        extra.send(encoder_pb2.EncodeRequest(config=config(chunk=1024)))
        with pytest.raises(grpc.RpcError) as err:
            extra.recv()
        assert (
            err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and "8 open streams" in err.value.details()
        )
        for s in streams:
            s.cancel()
        assert _wait_for(lambda: active() == 0)
        s = OpenStream(stub.Encode, timeout=0.3)
        s.send(encoder_pb2.EncodeRequest(config=config(chunk=1024)))
        s.recv()
        assert active() == 1
        with pytest.raises(grpc.RpcError) as err:
            s.recv()  # no more input: the deadline ends the stream
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _wait_for(lambda: active() == 0)
        assert enc.running.runtime.open_streams == 0


def test_slow_consumer_is_held_back_then_cut_off(servers) -> None:
    root, _, _ = servers
    dec = ServerThread(DECODER, root, limits=Limits(reply_timeout_s=1.0))
    sent = 400
    z = np.zeros((32, 8), "<f4").tobytes()  # each reply: 8192 frames x 2 ch = 64 KiB

    def requests():
        yield decoder_pb2.DecodeRequest(config=config(present=(), chunk=8192))
        for i in range(sent):
            yield decoder_pb2.DecodeRequest(chunk=stream_pb2.LatentChunk(seq=i, data=z))

    try:
        with channel(dec.target) as ch:
            call = decoder_pb2_grpc.DecoderServiceStub(ch).Decode(requests())
            # the client reads nothing for well over the reply timeout (2 s failed once in a full
            # suite after the engine became TorchScript, whose first steps run slower)
            time.sleep(3.5)
            held = dec.sample("mcrave_chunks_received_total", {"model": "tiny"})
            assert held < sent / 2  # flow control stopped the stream: memory stays bounded
            with pytest.raises(grpc.RpcError) as err:
                list(call)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert dict(err.value.trailing_metadata())["mcrave-reason"] == "slow-consumer"
        assert dec.sample("mcrave_chunks_received_total", {"model": "tiny"}) == held
        assert dec.running.runtime.open_streams == 0
    finally:
        dec.stop()
