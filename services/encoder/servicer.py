"""EncoderService: audio of the present channels -> latents. Converts protobuf to arrays and back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
from mcrave_client.proto import encoder_pb2, encoder_pb2_grpc, stream_pb2

from services.common.errors import FailedPrecondition
from services.common.limits import FLOAT_BYTES
from services.common.model_service import stream_started
from services.common.oip import SERVICE_NAME as OIP_SERVICE
from services.common.oip import add_inference_service
from services.common.protocol import read_f32, update
from services.common.runtime import Runtime, peer_address
from services.common.server import Closer, ServerConfig, ServiceDef
from services.common.stream_loop import run_stream
from services.encoder.oip import EncoderClips
from services.encoder.relay import RelayLinks
from services.encoder.session import EncoderSession


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    """Also the `StreamHandler` of Encode streams."""

    def __init__(self, runtime: Runtime, relays: RelayLinks) -> None:
        self.rt = runtime
        self.relays = relays

    def _latents(
        self,
        session: EncoderSession,
        z: np.ndarray,
        seq: int,
        final: bool,
        started: float,
        audio: bytes = b"",
    ) -> stream_pb2.LatentChunk:
        m = session.spec.model
        data = z.astype("<f4", copy=False).tobytes()
        self.rt.count_out(
            m.name, "latent", len(data), z.shape[0] * m.engine.ratio / m.engine.sample_rate, started
        )
        ack = seq - 1 if final else seq  # replies answer chunks 1:1; the final one follows the last
        return stream_pb2.LatentChunk(
            seq=seq,
            data=data,
            model=m.name,
            version=m.version,
            fingerprint=m.fingerprint,
            ack=max(ack, 0),
            final=final,
            audio=audio,
        )

    def _read(self, session: EncoderSession, pcm: bytes, max_frames: int, what: str) -> np.ndarray:
        """Check and count an incoming payload of present channels."""
        spec = session.spec
        audio = read_f32(pcm, len(spec.present), max_frames, what)
        self.rt.count_in(
            spec.model.name, "pcm", len(pcm), audio.shape[0] / spec.model.engine.sample_rate
        )
        return audio

    # StreamHandler
    def open(self, config: stream_pb2.StreamConfig, peer: str) -> EncoderSession:
        session = EncoderSession.open(self.rt, config, peer)
        if config.HasField("relay"):
            try:
                session.forward = self.relays.open(config.relay, session.spec.present)
            except BaseException:
                session.close()
                raise
        return session

    def started(self, session: EncoderSession) -> encoder_pb2.EncodeResponse:
        return encoder_pb2.EncodeResponse(
            started=stream_started(session.spec, self.rt.limits.credit)
        )

    def _check_open(self, session: EncoderSession, what: str) -> None:
        if session.ended:
            raise FailedPrecondition(
                f"{what} after a chunk that was not a multiple of {session.engine.ratio} frames: "
                "only the last chunk may be shorter",
                "after-last",
            )

    def update(self, session: EncoderSession, config: stream_pb2.StreamConfig) -> None:
        self._check_open(session, "config")
        session.spec = update(session.spec, config)
        if session.forward is not None:
            session.forward.set_present(session.spec.present)

    async def chunk(
        self, session: EncoderSession, chunk: stream_pb2.AudioChunk
    ) -> encoder_pb2.EncodeResponse | None:
        """The latents of one chunk: the reply, or (relayed) forwarded to the decoder with the
        chunk's audio, zero-padded to whole latent frames, and no reply."""
        started = time.perf_counter()
        self._check_open(session, "chunk")
        audio = self._read(session, chunk.pcm, session.spec.chunk_frames, f"chunk {chunk.seq}")
        z = await session.encode(audio)
        forward = session.forward
        if forward is None:
            return encoder_pb2.EncodeResponse(
                latents=self._latents(session, z, chunk.seq, False, started)
            )
        pcm = b""
        if forward.with_audio:
            padded = z.shape[0] * session.engine.ratio * audio.shape[1] * FLOAT_BYTES
            pcm = chunk.pcm + bytes(padded - len(chunk.pcm))
        await forward.chunk(self._latents(session, z, chunk.seq, False, started, pcm))
        return None

    async def finish(self, session: EncoderSession, seq: int) -> encoder_pb2.EncodeResponse:
        """The tail flush's latents; relayed, they go to the decoder and the reply (once the
        decoder has answered its client) only marks the end."""
        started = time.perf_counter()
        z = await session.flush()
        latents = self._latents(session, z, seq, True, started)
        if session.forward is not None:
            await session.forward.chunk(latents)
            await session.forward.finish()
            latents = stream_pb2.LatentChunk(
                seq=seq, ack=latents.ack, final=True, model=latents.model, version=latents.version
            )
        return encoder_pb2.EncodeResponse(latents=latents)

    # RPCs
    async def Encode(
        self, requests: AsyncIterator[encoder_pb2.EncodeRequest], context: grpc.aio.ServicerContext
    ) -> None:
        await run_stream(self.rt, requests, context, self)

    async def EncodeClip(
        self, request: encoder_pb2.EncodeClipRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeClipResponse:
        with EncoderSession.clip(self.rt, request.config, peer_address(context)) as session:
            started = time.perf_counter()
            engine = session.engine
            max_frames = self.rt.limits.max_clip_frames(engine.channels, engine.sample_rate)
            audio = self._read(session, request.pcm, max_frames, "clip")
            z = np.concatenate([await session.encode(audio), await session.flush()], axis=0)
            latents = self._latents(session, z, 0, True, started)
        return encoder_pb2.EncodeClipResponse(
            started=self.started(session).started, latents=latents
        )


def _register(server: grpc.aio.Server, runtime: Runtime, cfg: ServerConfig) -> Closer:
    servicer = EncoderServicer(runtime, RelayLinks(cfg.relay_to))
    encoder_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server)
    add_inference_service(server, runtime, EncoderClips(servicer.EncodeClip))
    return servicer.relays.close


SERVICE = ServiceDef(
    name="encoder",
    full_name=encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name,
    register=_register,
    also_serves=(OIP_SERVICE,),
)
