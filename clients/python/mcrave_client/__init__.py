"""Torch-free client SDK for mcrave's encoder, decoder and trainer services.

Sync: `EncoderClient`, `DecoderClient`, `Pipeline`, `infer_array`, `infer_file`.
asyncio: `mcrave_client.aio` (`AsyncEncoderClient`, `AsyncDecoderClient`, `AsyncPipeline`).
"""

from mcrave_client.backoff import Backoff
from mcrave_client.client import DecoderClient, EncoderClient
from mcrave_client.connection import Connection
from mcrave_client.errors import ClientError
from mcrave_client.infer import infer_array, infer_file
from mcrave_client.pipeline import Pipeline
from mcrave_client.types import Decoded, Latents, ModelInfo, ModelRef, SetPresent, StreamInfo

__all__ = [
    "Backoff",
    "ClientError",
    "Connection",
    "Decoded",
    "DecoderClient",
    "EncoderClient",
    "Latents",
    "ModelInfo",
    "ModelRef",
    "Pipeline",
    "SetPresent",
    "StreamInfo",
    "infer_array",
    "infer_file",
]
