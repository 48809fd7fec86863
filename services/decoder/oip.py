"""The decoder's Open Inference Protocol model: latents (+ the present channels' audio) -> all N
channels, run as one DecodeClip (same limits, checks and metrics)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from mcrave_client.proto import decoder_pb2, stream_pb2

from services.common.oip import FP32, INT32, Clip, TensorSpec
from services.common.registry_watch import LoadedVersion

DecodeClip = Callable[
    [decoder_pb2.DecodeClipRequest, grpc.aio.ServicerContext],
    Awaitable[decoder_pb2.DecodeClipResponse],
]


class DecoderClips:
    """Inputs `latents` FP32 [frames, D], optional `audio` FP32 [frames x ratio (or fewer: the
    rest is silence), N or |present|] and optional `present` INT32 [k]; output `audio` FP32
    [frames x ratio, N]. With audio the spatial stage runs (like `mcrave infer`), without it the
    latents alone decode (`mcrave infer --latent-only`)."""

    service = "decoder"

    def __init__(self, decode_clip: DecodeClip) -> None:
        self._decode_clip = decode_clip

    def tensors(self, model: LoadedVersion) -> tuple[list[TensorSpec], list[TensorSpec]]:
        engine = model.engine
        inputs = [
            TensorSpec("latents", FP32, engine.latent_size),
            TensorSpec("audio", FP32, engine.channels, optional=True),
            TensorSpec("present", INT32, None, optional=True),
        ]
        return inputs, [TensorSpec("audio", FP32, engine.channels)]

    async def infer(
        self, clip: Clip, context: grpc.aio.ServicerContext
    ) -> dict[str, tuple[bytes, int]]:
        engine = clip.model.engine
        audio = clip.inputs.get("audio")
        if audio is None:  # latent-only
            present: range | tuple[int, ...] = ()
        else:
            present = range(engine.channels) if clip.present is None else clip.present
        latents = stream_pb2.LatentChunk(
            data=clip.inputs["latents"].data, audio=b"" if audio is None else audio.data
        )
        request = decoder_pb2.DecodeClipRequest(config=clip.config(present), latents=latents)
        reply = await self._decode_clip(request, context)
        return {"audio": (reply.audio.pcm, engine.channels)}
