from mcrave_client.proto import stream_pb2 as _stream_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelInfo(_message.Message):
    __slots__ = ("ref", "channels", "sample_rate", "ratio", "latent_size", "latency", "max_chunk", "max_clip", "versions", "created", "channel_names")
    REF_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    LATENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIP_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    ref: _stream_pb2.ModelRef
    channels: int
    sample_rate: int
    ratio: int
    latent_size: int
    latency: int
    max_chunk: int
    max_clip: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    created: str
    channel_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ref: _Optional[_Union[_stream_pb2.ModelRef, _Mapping]] = ..., channels: _Optional[int] = ..., sample_rate: _Optional[int] = ..., ratio: _Optional[int] = ..., latent_size: _Optional[int] = ..., latency: _Optional[int] = ..., max_chunk: _Optional[int] = ..., max_clip: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., created: _Optional[str] = ..., channel_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...
