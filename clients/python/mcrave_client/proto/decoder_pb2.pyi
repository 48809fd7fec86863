from mcrave_client.proto import stream_pb2 as _stream_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DecodeRequest(_message.Message):
    __slots__ = ("config", "chunk")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    config: _stream_pb2.StreamConfig
    chunk: _stream_pb2.LatentChunk
    def __init__(self, config: _Optional[_Union[_stream_pb2.StreamConfig, _Mapping]] = ..., chunk: _Optional[_Union[_stream_pb2.LatentChunk, _Mapping]] = ...) -> None: ...

class DecodeResponse(_message.Message):
    __slots__ = ("started", "audio")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    started: _stream_pb2.StreamStarted
    audio: _stream_pb2.AudioChunk
    def __init__(self, started: _Optional[_Union[_stream_pb2.StreamStarted, _Mapping]] = ..., audio: _Optional[_Union[_stream_pb2.AudioChunk, _Mapping]] = ...) -> None: ...

class DecodeClipRequest(_message.Message):
    __slots__ = ("config", "latents")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    config: _stream_pb2.StreamConfig
    latents: _stream_pb2.LatentChunk
    def __init__(self, config: _Optional[_Union[_stream_pb2.StreamConfig, _Mapping]] = ..., latents: _Optional[_Union[_stream_pb2.LatentChunk, _Mapping]] = ...) -> None: ...

class DecodeClipResponse(_message.Message):
    __slots__ = ("started", "audio")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    started: _stream_pb2.StreamStarted
    audio: _stream_pb2.AudioChunk
    def __init__(self, started: _Optional[_Union[_stream_pb2.StreamStarted, _Mapping]] = ..., audio: _Optional[_Union[_stream_pb2.AudioChunk, _Mapping]] = ...) -> None: ...

class RelayDone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
