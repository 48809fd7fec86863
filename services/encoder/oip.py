"""The encoder's Open Inference Protocol model: audio of the present channels -> latents, run as
one EncodeClip (same limits, checks and metrics)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from mcrave_client.proto import encoder_pb2

from services.common.oip import FP32, INT32, Clip, TensorSpec
from services.common.registry_watch import LoadedVersion

EncodeClip = Callable[
    [encoder_pb2.EncodeClipRequest, grpc.aio.ServicerContext],
    Awaitable[encoder_pb2.EncodeClipResponse],
]


class EncoderClips:
    """Inputs `audio` FP32 [frames, N or |present|] and optional `present` INT32 [k]; output
    `latents` FP32 [frames, D], the clip's latents followed by the tail flush (as EncodeClip)."""

    service = "encoder"

    def __init__(self, encode_clip: EncodeClip) -> None:
        self._encode_clip = encode_clip

    def tensors(self, model: LoadedVersion) -> tuple[list[TensorSpec], list[TensorSpec]]:
        engine = model.engine
        inputs = [
            TensorSpec("audio", FP32, engine.channels),
            TensorSpec("present", INT32, None, optional=True),
        ]
        return inputs, [TensorSpec("latents", FP32, engine.latent_size)]

    async def infer(
        self, clip: Clip, context: grpc.aio.ServicerContext
    ) -> dict[str, tuple[bytes, int]]:
        engine = clip.model.engine
        present = range(engine.channels) if clip.present is None else clip.present
        request = encoder_pb2.EncodeClipRequest(
            config=clip.config(present), pcm=clip.inputs["audio"].data
        )
        reply = await self._encode_clip(request, context)
        return {"latents": (reply.latents.data, engine.latent_size)}
