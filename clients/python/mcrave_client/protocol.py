"""The Encode/Decode stream protocol, written once without I/O for the sync and asyncio clients.

A stream object builds the requests for an input item (numbering chunks, slipping a config
update in before the next chunk when the present set changes), parses and checks each reply
(in order, up to the server's `final` one after the tail flush), and says whether another chunk
may go out: at most `credit` chunks stay unanswered (the servers' app-level backpressure,
serving_facts section 3). `client.py` and `aio.py` add the writing and reading.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mcrave_client import framing
from mcrave_client.errors import ClientError
from mcrave_client.proto import decoder_pb2, encoder_pb2, stream_pb2
from mcrave_client.types import Decoded, Latents, SetPresent, StreamInfo


class _Stream:
    """State shared by both directions: sequence numbers, credit and the reply checks."""

    kind = ""

    def __init__(self, config: stream_pb2.StreamConfig) -> None:
        self.config = config
        self.info: StreamInfo | None = None
        self.sent = 0  # chunks written
        self.answered = 0  # chunk replies read
        self.finished = False

    def started(self, reply: Any) -> StreamInfo:
        """Check and keep the first reply (StreamStarted)."""
        if reply is None or reply.WhichOneof("msg") != "started":
            raise ClientError(f"{self.kind} stream: the server did not acknowledge the config")
        self.info = StreamInfo.from_proto(reply.started)
        return self.info

    @property
    def credit(self) -> int:
        return max(1, self.info.credit) if self.info else 1

    @property
    def may_send(self) -> bool:
        return self.sent - self.answered < self.credit

    def check_reply(self, reply: Any, field: str) -> Any:
        if reply is None:
            raise ClientError(f"{self.kind} stream ended before its final reply")
        if reply.WhichOneof("msg") != field:
            raise ClientError(f"{self.kind} stream: unexpected {reply.WhichOneof('msg')} reply")
        msg = getattr(reply, field)
        if msg.final:
            self.finished = True
        elif msg.ack != self.answered:
            raise ClientError(
                f"{self.kind} stream: reply acknowledges chunk {msg.ack}, expected {self.answered}"
            )
        else:
            self.answered += 1
        return msg


class EncodeStream(_Stream):
    kind = "encode"

    def __init__(self, config: stream_pb2.StreamConfig) -> None:
        super().__init__(config)
        self.pending_present: tuple[int, ...] | None = None

    def config_request(self) -> encoder_pb2.EncodeRequest:
        return encoder_pb2.EncodeRequest(config=self.config)

    def set_present(self, present: tuple[int, ...]) -> None:
        """Takes effect at the next chunk written (the server applies it from that chunk on)."""
        self.pending_present = tuple(present)

    def requests_for(self, item: np.ndarray | SetPresent) -> tuple[encoder_pb2.EncodeRequest, ...]:
        if isinstance(item, SetPresent):
            self.set_present(item.present)
            return ()
        out = []
        if self.pending_present is not None:
            del self.config.present[:]
            self.config.present.extend(self.pending_present)
            update = stream_pb2.StreamConfig(present=self.pending_present)
            out.append(encoder_pb2.EncodeRequest(config=update))
            self.pending_present = None
        if item.ndim != 2 or item.shape[0] != len(self.config.present):
            raise ClientError(
                f"encode stream: chunk of shape {item.shape} does not hold the "
                f"{len(self.config.present)} present channels {list(self.config.present)}"
            )
        chunk = stream_pb2.AudioChunk(seq=self.sent, pcm=framing.pack(item))
        out.append(encoder_pb2.EncodeRequest(chunk=chunk))
        self.sent += 1
        return tuple(out)

    def result(self, reply: encoder_pb2.EncodeResponse | None) -> Latents:
        chunk = self.check_reply(reply, "latents")
        return Latents(framing.unpack(chunk.data, self.info.latent_size), chunk)


class DecodeStream(_Stream):
    kind = "decode"

    def config_request(self) -> decoder_pb2.DecodeRequest:
        return decoder_pb2.DecodeRequest(config=self.config)

    def requests_for(self, item: Latents) -> tuple[decoder_pb2.DecodeRequest, ...]:
        if not isinstance(item, Latents):
            raise ClientError(f"decode stream: expected Latents, got {type(item).__name__}")
        chunk = stream_pb2.LatentChunk()
        chunk.CopyFrom(item.chunk)
        chunk.seq = self.sent  # the decoder stream numbers its own input from 0
        self.sent += 1
        return (decoder_pb2.DecodeRequest(chunk=chunk),)

    def result(self, reply: decoder_pb2.DecodeResponse | None) -> Decoded:
        audio = self.check_reply(reply, "audio")
        array = framing.unpack(audio.pcm, self.config.channels)
        return Decoded(array, audio.seq, audio.ack, audio.final)


def worth_emitting(result: Latents | Decoded) -> bool:
    """False for an empty `final` reply (it only marks the end)."""
    array = result.array if isinstance(result, Latents) else result.audio
    return not (result.final and array.shape[1] == 0)
