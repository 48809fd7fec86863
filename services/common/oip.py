"""Open Inference Protocol (KServe v2 `inference.GRPCInferenceService`) over the whole-clip RPCs.

Triton and KServe tooling (tritonclient, perf_analyzer, ...) speaks this protocol; the encoder and
decoder serve it on their gRPC port next to `mcrave.v1`. A model is a registry name, its version
the registry version ("" = latest). This module turns tensors into the service's own clip request
and its reply back into tensors; each service supplies a `ClipModel` that names its tensors and
calls its EncodeClip / DecodeClip, so limits, checks, metrics and model code are those of the
clip RPCs. Errors are `ServiceError`s, mapped to statuses by the one error-mapping interceptor.

Tensors (frames = -1 in the metadata): `audio` FP32 [frames, N], or [frames, |present|] when the
optional `present` INT32 [k] input names the channels sent (0-based, ascending); `latents` FP32
[frames, D]. Inputs come as typed `contents` or as `raw_input_contents` (little-endian, what
tritonclient sends); outputs always go as `raw_output_contents`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from mcrave_client.proto import grpc_predict_v2_pb2 as pb
from mcrave_client.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from mcrave_client.proto import stream_pb2

from mcrave import __version__
from services.common.errors import InvalidArgument, NotFound
from services.common.limits import FLOAT_BYTES
from services.common.protocol import check_wire_present
from services.common.registry_watch import LoadedVersion
from services.common.runtime import Runtime

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
FP32, INT32 = "FP32", "INT32"
FRAMES = -1  # a dimension of any size in the metadata
_TYPED = {FP32: ("fp32_contents", "<f4"), INT32: ("int_contents", "<i4")}  # both 4 bytes


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: [FRAMES, width] (or [k] when width is None)."""

    name: str
    datatype: str
    width: int | None
    optional: bool = False

    def metadata(self) -> pb.ModelMetadataResponse.TensorMetadata:
        shape = [FRAMES] if self.width is None else [FRAMES, self.width]
        return pb.ModelMetadataResponse.TensorMetadata(
            name=self.name, datatype=self.datatype, shape=shape
        )


@dataclass(frozen=True)
class Tensor:
    """A received input, checked against its spec: shape and little-endian bytes."""

    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class Clip:
    """One ModelInfer request, checked: the model version, the inputs and the present set
    (None when the request has no `present`: all channels for the encoder)."""

    model: LoadedVersion
    inputs: dict[str, Tensor]
    present: tuple[int, ...] | None
    seed: int

    def config(self, present: Sequence[int]) -> stream_pb2.StreamConfig:
        """The clip RPC's config for exactly this version; chunk_frames 0 = a whole clip."""
        engine = self.model.engine
        return stream_pb2.StreamConfig(
            model=self.model.name,
            version=self.model.version,
            sample_rate=engine.sample_rate,
            channels=engine.channels,
            present=list(present),
            seed=self.seed,
        )


class ClipModel(Protocol):
    """What the encoder or decoder service adds: its tensors and its clip RPC."""

    service: str  # "encoder" | "decoder"

    def tensors(self, model: LoadedVersion) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Inputs and outputs as ModelMetadata states them (audio [FRAMES, N])."""
        ...

    async def infer(
        self, clip: Clip, context: grpc.aio.ServicerContext
    ) -> dict[str, tuple[bytes, int]]:
        """Output name -> (f32le bytes, width) through the service's clip RPC."""
        ...


def parse_version(version: str) -> int:
    """Empty -> 0 (latest), else a positive registry version (ASCII digits)."""
    if version == "":
        return 0
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise InvalidArgument(
            f"model version {version!r}: a registry version is a positive integer ('' = latest)",
            "bad-version",
        )
    return int(version)


def _tensor(
    spec: TensorSpec, given: pb.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> Tensor:
    """Check one input's datatype, shape and data size; typed contents become bytes."""
    what = f"input {spec.name!r}"
    if given.datatype != spec.datatype:
        raise InvalidArgument(
            f"{what} has datatype {given.datatype!r}; it must be {spec.datatype}", "bad-datatype"
        )
    shape = tuple(given.shape)
    rank = 1 if spec.width is None else 2
    if len(shape) != rank or any(d < 0 for d in shape):
        want = "[k]" if spec.width is None else "[frames, channels]"
        raise InvalidArgument(f"{what} has shape {list(shape)}; it must be {want}", "bad-shape")
    count = math.prod(shape)
    field, dtype = _TYPED[spec.datatype]
    if raw is None:
        values = getattr(given.contents, field)
        if len(values) != count:
            raise InvalidArgument(
                f"{what} of shape {list(shape)} needs {count} values in contents.{field}, "
                f"got {len(values)}",
                "bad-length",
            )
        return Tensor(shape, np.asarray(values, dtype).tobytes())
    if len(raw) != count * FLOAT_BYTES:
        raise InvalidArgument(
            f"{what} of shape {list(shape)} needs {count * FLOAT_BYTES} raw bytes "
            f"({spec.datatype}, little-endian), got {len(raw)}",
            "bad-length",
        )
    return Tensor(shape, raw)


def read_inputs(request: pb.ModelInferRequest, specs: list[TensorSpec]) -> dict[str, Tensor]:
    """The request's inputs by name: known, each once, the required ones there."""
    by_name = {s.name: s for s in specs}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input, "
            "in input order, or typed contents for all",
            "bad-raw-contents",
        )
    inputs: dict[str, Tensor] = {}
    for i, given in enumerate(request.inputs):
        spec = by_name.get(given.name)
        if spec is None:
            raise InvalidArgument(
                f"unknown input {given.name!r}: this model takes {', '.join(by_name)}",
                "unknown-input",
            )
        if given.name in inputs:
            raise InvalidArgument(f"input {given.name!r} given twice", "duplicate-input")
        if raw and given.HasField("contents"):
            raise InvalidArgument(
                f"input {given.name!r} has contents while raw_input_contents is used: "
                "use one or the other for all inputs",
                "bad-raw-contents",
            )
        inputs[given.name] = _tensor(spec, given, raw[i] if raw else None)
    missing = [s.name for s in specs if not s.optional and s.name not in inputs]
    if missing:
        raise InvalidArgument(
            f"missing input {', '.join(missing)} (this model takes {', '.join(by_name)})",
            "missing-input",
        )
    return inputs


def read_present(inputs: dict[str, Tensor], channels: int) -> tuple[int, ...] | None:
    """The optional `present` input as checked channel indices (None when not sent)."""
    if "present" not in inputs:
        return None
    if "audio" not in inputs:
        raise InvalidArgument(
            "input 'present' names the channels of input 'audio', which is missing: "
            "send both, or neither",
            "missing-audio",
        )
    values = np.frombuffer(inputs["present"].data, "<i4")
    return check_wire_present(values.tolist(), channels, "input 'present'")


def check_widths(
    tensors: dict[str, Tensor],
    specs: list[TensorSpec],
    present: tuple[int, ...] | None,
    model: LoadedVersion,
) -> None:
    """Each [frames, width] input has its spec's width; `audio` one column per present channel."""
    for spec in specs:
        tensor = tensors.get(spec.name)
        if tensor is None or spec.width is None:
            continue
        width, why = spec.width, f"model {model.name} version {model.version}"
        if spec.name == "audio" and present is not None:
            width, why = len(present), f"one per present channel {list(present)}"
        if tensor.shape[1] != width:
            raise InvalidArgument(
                f"input {spec.name!r} has shape {list(tensor.shape)}; it must be "
                f"[frames, {width}] ({why})",
                "bad-shape",
            )


def read_seed(request: pb.ModelInferRequest) -> int:
    """The `seed` request parameter (decoder noise branch; default 0)."""
    if "seed" not in request.parameters:
        return 0
    param = request.parameters["seed"]
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param") or getattr(param, kind) < 0:
        raise InvalidArgument("parameter 'seed' must be a non-negative integer", "bad-parameter")
    return getattr(param, kind)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """GRPCInferenceService for one service's models."""

    def __init__(self, runtime: Runtime, clips: ClipModel) -> None:
        self.rt = runtime
        self.clips = clips

    def _model(self, name: str, version: str) -> LoadedVersion:
        if not name:
            raise InvalidArgument("model name is empty: name a registry model", "bad-config")
        return self.rt.watcher.get(name, parse_version(version))

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        ready = not self.rt.draining and bool(self.rt.watcher.models())
        return pb.ServerReadyResponse(ready=ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=f"mcrave-{self.clips.service}", version=__version__)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._model(request.name, request.version)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self.rt.draining)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        model = self._model(request.name, request.version)
        inputs, outputs = self.clips.tensors(model)
        return pb.ModelMetadataResponse(
            name=model.name,
            versions=[str(v) for v in sorted(self.rt.watcher.models().get(model.name, {}))],
            platform=f"mcrave-{self.clips.service}",
            inputs=[s.metadata() for s in inputs],
            outputs=[s.metadata() for s in outputs],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        model = self._model(request.model_name, request.model_version)
        inputs, outputs = self.clips.tensors(model)
        wanted = [o.name for o in request.outputs] or [s.name for s in outputs]
        unknown = sorted(set(wanted) - {s.name for s in outputs})
        if unknown:
            raise InvalidArgument(
                f"unknown output {', '.join(unknown)}: this model gives "
                f"{', '.join(s.name for s in outputs)}",
                "unknown-output",
            )
        tensors = read_inputs(request, inputs)
        present = read_present(tensors, model.engine.channels)
        check_widths(tensors, inputs, present, model)
        clip = Clip(model, tensors, present, read_seed(request))
        results = await self.clips.infer(clip, context)
        engine = model.engine
        reply = pb.ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request.id
        )
        for key, value in (
            ("latency", engine.latency),
            ("ratio", engine.ratio),
            ("sample_rate", engine.sample_rate),
        ):
            reply.parameters[key].int64_param = value
        reply.parameters["fingerprint"].string_param = model.fingerprint
        for name in wanted:
            data, width = results[name]
            frames = len(data) // (width * FLOAT_BYTES)
            reply.outputs.add(name=name, datatype=FP32, shape=[frames, width])
            reply.raw_output_contents.append(data)
        return reply


def add_inference_service(server: grpc.aio.Server, runtime: Runtime, clips: ClipModel) -> None:
    """Serve GRPCInferenceService for `clips` on `server`."""
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(runtime, clips), server)


def _service_file(name: str) -> FileDescriptor:
    """The file defining service `name`: in the default pool, or ours (see protos/generate.py)."""
    for pool in (descriptor_pool.Default(), pb.DESCRIPTOR.pool):
        try:
            return pool.FindServiceByName(name).file
        except KeyError:
            continue
    raise KeyError(f"no descriptor for service {name!r}")


def reflection_pool(service_names: Iterable[str]) -> descriptor_pool.DescriptorPool:
    """One pool with the files (and imports) of every named service, for the reflection service,
    which answers from a single pool while the OIP descriptors stay out of the default one."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:
            add(dependency)
        pool.AddSerializedFile(file.serialized_pb)
        added.add(file.name)

    for name in service_names:
        add(_service_file(name))
    return pool
