"""ModelService (ListModels / GetModel), served identically by the encoder and the decoder."""

from __future__ import annotations

import grpc
from mcrave_client.proto import models_pb2, models_pb2_grpc, stream_pb2

from services.common.limits import Limits
from services.common.protocol import StreamSpec, max_chunk
from services.common.registry_watch import LoadedVersion, RegistryWatcher


def model_ref(model: LoadedVersion) -> stream_pb2.ModelRef:
    return stream_pb2.ModelRef(
        name=model.name, version=model.version, fingerprint=model.fingerprint
    )


def stream_started(spec: StreamSpec, credit: int) -> stream_pb2.StreamStarted:
    """First reply of a stream: the exact version it is bound to and how to pace it."""
    e = spec.model.engine
    return stream_pb2.StreamStarted(
        model=model_ref(spec.model),
        credit=credit,
        latency=e.latency,
        ratio=e.ratio,
        latent_size=e.latent_size,
    )


def model_info(model: LoadedVersion, versions: list[int], limits: Limits) -> models_pb2.ModelInfo:
    engine = model.engine
    return models_pb2.ModelInfo(
        ref=model_ref(model),
        channels=engine.channels,
        sample_rate=engine.sample_rate,
        ratio=engine.ratio,
        latent_size=engine.latent_size,
        latency=engine.latency,
        max_chunk=max_chunk(model, limits),
        max_clip=limits.max_clip_frames(engine.channels, engine.sample_rate),
        versions=versions,
        created=model.created,
        channel_names=list(engine.model.cfg.names),
    )


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, watcher: RegistryWatcher, limits: Limits) -> None:
        self._watcher = watcher
        self._limits = limits

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        infos = [
            model_info(versions[max(versions)], sorted(versions), self._limits)
            for _, versions in sorted(self._watcher.models().items())
        ]
        return models_pb2.ListModelsResponse(models=infos)

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ModelInfo:
        model = self._watcher.get(request.name, request.version)
        return model_info(model, sorted(self._watcher.models()[model.name]), self._limits)
