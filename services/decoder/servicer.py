"""DecoderService: latents (+ the present channels' audio) -> all N channels. Converts protobuf to
arrays and back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
from mcrave_client.proto import decoder_pb2, decoder_pb2_grpc, stream_pb2

from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.limits import FLOAT_BYTES
from services.common.model_service import stream_started
from services.common.oip import SERVICE_NAME as OIP_SERVICE
from services.common.oip import add_inference_service
from services.common.protocol import StreamSpec, read_f32, update
from services.common.relay import RelayPoints, Waiting
from services.common.runtime import Runtime, peer_address
from services.common.server import ServerConfig, ServiceDef
from services.common.stream_loop import Idle, first_config, run_stream, serve_chunks
from services.decoder.oip import DecoderClips
from services.decoder.session import DecoderSession


def check_origin(chunk: stream_pb2.LatentChunk, spec: StreamSpec) -> None:
    """Latents only make sense to the weights that made them (unlabelled latents are trusted)."""
    m = spec.model
    if (
        (chunk.model and chunk.model != m.name)
        or (chunk.version and chunk.version != m.version)
        or (chunk.fingerprint and chunk.fingerprint != m.fingerprint)
    ):
        raise FailedPrecondition(
            f"latents come from model {chunk.model!r} version {chunk.version} ({chunk.fingerprint[:12]}), "
            f"this stream decodes {m.name!r} version {m.version} ({m.fingerprint[:12]}): open the decoder "
            "stream with the encoder's version",
            "version-mismatch",
        )


def read_present_audio(
    chunk: stream_pb2.LatentChunk, spec: StreamSpec, latent_frames: int, what: str, final: bool
) -> np.ndarray | None:
    """The audio that travels with latents: None on a latent-only stream, else [frames, |present|]
    with frames == latent frames x ratio (a `final` chunk may stop early or carry none)."""
    present = spec.present
    if not present:
        if chunk.audio:
            raise InvalidArgument(
                f"{what} carries {len(chunk.audio)} bytes of audio but this decoder stream is "
                "latent-only: declare the channels in StreamConfig.present, or send latents alone",
                "unexpected-audio",
            )
        return None
    ratio = spec.model.engine.ratio
    frames = latent_frames * ratio
    row = len(present) * FLOAT_BYTES
    if not chunk.audio:
        if final:
            return None
        raise InvalidArgument(
            f"{what} carries no audio; this stream declared present channels {list(present)}: "
            f"send their audio in LatentChunk.audio, f32le [{frames} frames, {len(present)}] "
            f"({frames * row} bytes), or open the stream with an empty present set (latent-only)",
            "missing-audio",
        )
    size = len(chunk.audio)
    if size % row or size // row > frames or (size // row != frames and not final):
        raise InvalidArgument(
            f"{what} audio has {size} bytes; {latent_frames} latent frames x ratio {ratio} need "
            f"{frames} frames x {len(present)} present channels x {FLOAT_BYTES} bytes = "
            f"{frames * row} bytes",
            "bad-length",
        )
    return read_f32(chunk.audio, len(present), frames, f"{what} audio")


class DecoderServicer(decoder_pb2_grpc.DecoderServiceServicer):
    """Also the `StreamHandler` of Decode streams."""

    def __init__(self, runtime: Runtime, advertise: str = "") -> None:
        self.rt = runtime
        self.relays = RelayPoints()
        self.advertise = advertise  # StreamStarted.relay_address

    async def _decode(
        self,
        session: DecoderSession,
        chunk: stream_pb2.LatentChunk,
        max_frames: int,
        what: str,
        final: bool,
    ) -> stream_pb2.AudioChunk:
        started = time.perf_counter()
        spec = session.spec
        check_origin(chunk, spec)
        engine = spec.model.engine
        z = read_f32(chunk.data, engine.latent_size, max_frames, what)
        present = read_present_audio(chunk, spec, z.shape[0], what, final)
        self.rt.count_in(
            spec.model.name,
            "latent",
            len(chunk.data),
            z.shape[0] * engine.ratio / engine.sample_rate,
        )
        if spec.present:  # the same seconds as the latents: bytes only
            self.rt.count_bytes_in(spec.model.name, "pcm", len(chunk.audio))
        if spec.present and present is None:  # the tail flush: silence, as the encoder fed
            present = np.zeros((0, len(spec.present)), np.float32)
        audio = await session.decode(z, present)
        pcm = audio.astype("<f4", copy=False).tobytes()
        self.rt.count_out(
            spec.model.name, "pcm", len(pcm), audio.shape[0] / engine.sample_rate, started
        )
        return stream_pb2.AudioChunk(seq=chunk.seq, pcm=pcm, ack=chunk.seq)

    # StreamHandler
    def open(self, config: stream_pb2.StreamConfig, peer: str) -> DecoderSession:
        relay = config.relay
        if relay.decoder or relay.latent_only:
            raise InvalidArgument(
                "a Decode stream's relay sets only the token (decoder and latent_only are the "
                "encoder's)",
                "bad-relay",
            )
        session = DecoderSession.open(self.rt, config, peer)
        session.relayed = bool(relay.token)
        return session

    def started(self, session: DecoderSession) -> decoder_pb2.DecodeResponse:
        started = stream_started(session.spec, self.rt.limits.credit)
        if session.relayed:  # where its encoder must go; nobody else needs the pod's name
            started.relay_address = self.advertise
        return decoder_pb2.DecodeResponse(started=started)

    def update(self, session: DecoderSession, config: stream_pb2.StreamConfig) -> None:
        """Only `present` may change (from the next chunk); empty switches to latent-only."""
        session.spec = update(session.spec, config, encoder=False)

    async def chunk(
        self, session: DecoderSession, chunk: stream_pb2.LatentChunk
    ) -> decoder_pb2.DecodeResponse:
        # a chunk, or the encoder's end-of-stream flush (which covers the model latency)
        max_frames = max(
            session.spec.chunk_frames // session.engine.ratio, session.engine.flush_frames
        )
        what = f"latent chunk {chunk.seq}"
        return decoder_pb2.DecodeResponse(
            audio=await self._decode(session, chunk, max_frames, what, chunk.final)
        )

    async def finish(self, session: DecoderSession, seq: int) -> decoder_pb2.DecodeResponse:
        """Nothing is buffered: the final reply is empty and only marks the end."""
        return decoder_pb2.DecodeResponse(
            audio=stream_pb2.AudioChunk(seq=seq, ack=max(seq - 1, 0), final=True)
        )

    # RPCs
    async def Decode(
        self, requests: AsyncIterator[decoder_pb2.DecodeRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await run_stream(self.rt, requests, context, self, self.relays)

    async def Relay(
        self, requests: AsyncIterator[decoder_pb2.DecodeRequest], context: grpc.aio.ServicerContext
    ) -> decoder_pb2.RelayDone:
        """An encoder feeding the Decode stream that waits with its token (services/common/relay.py)."""
        idle, incoming = Idle(self.rt.limits), aiter(requests)
        config = await first_config(idle, incoming)
        if not config.relay.token:
            raise InvalidArgument("a Relay call's config carries relay.token", "bad-relay")
        waiting = self.relays.join(config.relay.token)
        try:
            session = waiting.session
            self.update(session, stream_pb2.StreamConfig(present=config.present))
            await serve_chunks(
                self.rt, _alive(incoming, waiting), idle, self, session, waiting.context
            )
        except BaseException as error:
            waiting.finish(error)
            raise
        waiting.finish(None)
        return decoder_pb2.RelayDone()

    async def DecodeClip(
        self, request: decoder_pb2.DecodeClipRequest, context: grpc.aio.ServicerContext
    ) -> decoder_pb2.DecodeClipResponse:
        with DecoderSession.clip(self.rt, request.config, peer_address(context)) as session:
            engine = session.engine
            max_frames = (
                self.rt.limits.max_clip_frames(engine.channels, engine.sample_rate) // engine.ratio
            )
            # a clip is a whole signal with its tail flush: its audio may stop early
            audio = await self._decode(session, request.latents, max_frames, "clip latents", True)
        return decoder_pb2.DecodeClipResponse(started=self.started(session).started, audio=audio)


async def _alive(requests: AsyncIterator, waiting: Waiting) -> AsyncIterator:
    """A feeder's requests, refused once its reader has gone. They end cleanly only after the
    encoder's `final` chunk: a call that ends without one was cut (a cancelled call can look like
    a half-close to the server), and its reader must not take the cut for the end of the audio."""
    final = False
    async for request in requests:
        waiting.check_alive()
        final = request.WhichOneof("msg") == "chunk" and request.chunk.final
        yield request
    if not final:
        raise Unavailable(
            "the encoder relaying this stream stopped before its final chunk", "relay-lost"
        )


def _register(server: grpc.aio.Server, runtime: Runtime, cfg: ServerConfig) -> None:
    servicer = DecoderServicer(runtime, cfg.advertise)
    decoder_pb2_grpc.add_DecoderServiceServicer_to_server(servicer, server)
    add_inference_service(server, runtime, DecoderClips(servicer.DecodeClip))


SERVICE = ServiceDef(
    name="decoder",
    full_name=decoder_pb2.DESCRIPTOR.services_by_name["DecoderService"].full_name,
    register=_register,
    also_serves=(OIP_SERVICE,),
)
