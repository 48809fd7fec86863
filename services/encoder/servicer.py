"""EncoderService: audio of the present channels -> latents. Converts protobuf to arrays and back."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
from mcrave_client.proto import encoder_pb2, encoder_pb2_grpc, stream_pb2

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.model_service import stream_started
from services.common.protocol import SeqCounter, bind, read_f32, update
from services.common.runtime import Runtime
from services.common.server import ServiceDef
from services.encoder.session import EncoderSession


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _latents(
        self,
        session: EncoderSession,
        z: np.ndarray,
        seq: int,
        ack: int,
        final: bool,
        started: float,
    ) -> encoder_pb2.EncodeResponse:
        m = session.spec.model
        data = z.astype("<f4", copy=False).tobytes()
        self.rt.count_out(
            m.name, "latent", len(data), z.shape[0] * m.engine.ratio / m.engine.sample_rate, started
        )
        chunk = stream_pb2.LatentChunk(
            seq=seq,
            data=data,
            model=m.name,
            version=m.version,
            fingerprint=m.fingerprint,
            ack=ack,
            final=final,
        )
        return encoder_pb2.EncodeResponse(latents=chunk)

    def _read(self, session: EncoderSession, pcm: bytes, max_frames: int, what: str) -> np.ndarray:
        """Check and count an incoming payload of present channels."""
        spec = session.spec
        audio = read_f32(pcm, len(spec.present), max_frames, what)
        self.rt.count_in(
            spec.model.name, "pcm", len(pcm), audio.shape[0] / spec.model.engine.sample_rate
        )
        return audio

    async def Encode(
        self, requests: AsyncIterator[encoder_pb2.EncodeRequest], context: grpc.aio.ServicerContext
    ) -> None:
        session: EncoderSession | None = None
        seq = SeqCounter()
        out_seq = 0
        try:
            async for request in requests:
                kind = request.WhichOneof("msg")
                if kind is None:
                    raise InvalidArgument("empty EncodeRequest: set config or chunk", "bad-message")
                if session is None:
                    if kind == "chunk":
                        raise FailedPrecondition(
                            "audio chunk before the stream config: send a StreamConfig first",
                            "no-config",
                        )
                    spec = bind(request.config, self.rt.watcher, self.rt.limits, encoder=True)
                    session = EncoderSession(self.rt.open(spec.model), spec)
                    started = stream_started(spec, self.rt.limits.credit)
                    await self.rt.send(context, encoder_pb2.EncodeResponse(started=started))
                    continue
                if session.ended:
                    raise FailedPrecondition(
                        f"{kind} after a chunk that was not a multiple of {session.engine.ratio} frames: "
                        "only the last chunk may be shorter",
                        "after-last",
                    )
                if kind == "config":
                    session.spec = update(session.spec, request.config)
                    continue
                started = time.perf_counter()
                seq.check(request.chunk.seq)
                audio = self._read(
                    session,
                    request.chunk.pcm,
                    session.spec.chunk_frames,
                    f"chunk {request.chunk.seq}",
                )
                z = await session.encode(audio)
                await self.rt.send(
                    context, self._latents(session, z, out_seq, request.chunk.seq, False, started)
                )
                out_seq += 1
            if session is None:
                raise InvalidArgument("stream ended without a StreamConfig", "no-config")
            started = time.perf_counter()
            z = await session.flush()
            await self.rt.send(
                context, self._latents(session, z, out_seq, max(seq.next - 1, 0), True, started)
            )
        finally:
            if session is not None:
                session.stream.close()

    async def EncodeClip(
        self, request: encoder_pb2.EncodeClipRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeClipResponse:
        spec = bind(request.config, self.rt.watcher, self.rt.limits, encoder=True, clip=True)
        engine = spec.model.engine
        session = EncoderSession(self.rt.open(spec.model), spec)
        try:
            started = time.perf_counter()
            audio = self._read(
                session,
                request.pcm,
                self.rt.limits.max_clip_frames(engine.channels, engine.sample_rate),
                "clip",
            )
            z = np.concatenate([await session.encode(audio), await session.flush()], axis=0)
            reply = self._latents(session, z, 0, 0, True, started)
        finally:
            session.stream.close()
        return encoder_pb2.EncodeClipResponse(
            started=stream_started(spec, self.rt.limits.credit), latents=reply.latents
        )


def _register(server: grpc.aio.Server, runtime: Runtime) -> None:
    encoder_pb2_grpc.add_EncoderServiceServicer_to_server(EncoderServicer(runtime), server)


SERVICE = ServiceDef(
    name="encoder",
    full_name=encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name,
    register=_register,
)
