from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_FORMAT_UNSPECIFIED: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_F32LE: _ClassVar[SampleFormat]
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_F32LE: SampleFormat

class StreamConfig(_message.Message):
    __slots__ = ("model", "version", "sample_rate", "channels", "present", "chunk_frames", "sample_format", "seed", "relay")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    sample_rate: int
    channels: int
    present: _containers.RepeatedScalarFieldContainer[int]
    chunk_frames: int
    sample_format: SampleFormat
    seed: int
    relay: Relay
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., present: _Optional[_Iterable[int]] = ..., chunk_frames: _Optional[int] = ..., sample_format: _Optional[_Union[SampleFormat, str]] = ..., seed: _Optional[int] = ..., relay: _Optional[_Union[Relay, _Mapping]] = ...) -> None: ...

class Relay(_message.Message):
    __slots__ = ("token", "decoder", "latent_only")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DECODER_FIELD_NUMBER: _ClassVar[int]
    LATENT_ONLY_FIELD_NUMBER: _ClassVar[int]
    token: str
    decoder: str
    latent_only: bool
    def __init__(self, token: _Optional[str] = ..., decoder: _Optional[str] = ..., latent_only: bool = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("seq", "pcm", "ack", "final")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    pcm: bytes
    ack: int
    final: bool
    def __init__(self, seq: _Optional[int] = ..., pcm: _Optional[bytes] = ..., ack: _Optional[int] = ..., final: bool = ...) -> None: ...

class LatentChunk(_message.Message):
    __slots__ = ("seq", "data", "model", "version", "fingerprint", "ack", "final", "audio")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    seq: int
    data: bytes
    model: str
    version: int
    fingerprint: str
    ack: int
    final: bool
    audio: bytes
    def __init__(self, seq: _Optional[int] = ..., data: _Optional[bytes] = ..., model: _Optional[str] = ..., version: _Optional[int] = ..., fingerprint: _Optional[str] = ..., ack: _Optional[int] = ..., final: bool = ..., audio: _Optional[bytes] = ...) -> None: ...

class StreamStarted(_message.Message):
    __slots__ = ("model", "credit", "latency", "ratio", "latent_size", "relay_address")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    LATENT_SIZE_FIELD_NUMBER: _ClassVar[int]
    RELAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    credit: int
    latency: int
    ratio: int
    latent_size: int
    relay_address: str
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., credit: _Optional[int] = ..., latency: _Optional[int] = ..., ratio: _Optional[int] = ..., latent_size: _Optional[int] = ..., relay_address: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "fingerprint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    fingerprint: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., fingerprint: _Optional[str] = ...) -> None: ...
