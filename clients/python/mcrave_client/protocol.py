"""The Encode/Decode stream protocol, written once without I/O for the sync and asyncio clients.

A stream object builds the requests for an input item (numbering chunks, slipping a config
update in before the next chunk when the present set changes), parses and checks each reply
(in order, up to the server's `final` one after the tail flush), and says whether another chunk
may go out: at most `credit` chunks stay unanswered (the servers' app-level backpressure,
see services/README.md). `client.py` and `aio.py` add the writing and reading.
"""

from __future__ import annotations

from collections import deque
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
        # a relayed encoder stream has no chunk replies: its credit counts the decoder's
        self.credit_from: _Stream = self

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
        return self.sent - self.credit_from.answered < self.credit

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
    """With `keep_audio`, each reply's `Latents` carries the audio chunk (and present set) that
    produced it, for a decoder stream that takes the present audio."""

    kind = "encode"

    def __init__(self, config: stream_pb2.StreamConfig, keep_audio: bool = False) -> None:
        super().__init__(config)
        self.pending_present: tuple[int, ...] | None = None
        self.keep_audio = keep_audio
        self._unanswered: deque[tuple[tuple[int, ...], np.ndarray]] = deque()

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
        if self.keep_audio:  # a copy: live sources may reuse their buffers
            present = tuple(self.config.present)
            self._unanswered.append((present, np.array(item, dtype=np.float32)))
        self.sent += 1
        return tuple(out)

    def result(self, reply: encoder_pb2.EncodeResponse | None) -> Latents:
        chunk = self.check_reply(reply, "latents")
        array = framing.unpack(chunk.data, self.info.latent_size)
        if self.keep_audio and not chunk.final:  # replies answer the chunks in order
            present, audio = self._unanswered.popleft()
            return Latents(array, chunk, audio, present)
        return Latents(array, chunk)


class DecodeStream(_Stream):
    """A config with a present set makes a spatial stream: each `Latents` item must carry the
    audio of its present channels (`Latents.audio`, as an encoder stream with `keep_audio` gives
    them), sent along zero-padded to frames x ratio; a change of `Latents.present` goes to the
    server as a config update first. An empty present set: latents alone (latent-only)."""

    kind = "decode"

    @property
    def spatial(self) -> bool:
        return bool(self.config.present)

    def config_request(self) -> decoder_pb2.DecodeRequest:
        return decoder_pb2.DecodeRequest(config=self.config)

    def requests_for(self, item: Latents) -> tuple[decoder_pb2.DecodeRequest, ...]:
        if not isinstance(item, Latents):
            raise ClientError(f"decode stream: expected Latents, got {type(item).__name__}")
        out = []
        chunk = stream_pb2.LatentChunk()
        chunk.CopyFrom(item.chunk)
        chunk.seq = self.sent  # the decoder stream numbers its own input from 0
        chunk.ClearField("audio")
        if self.spatial:
            if item.present and item.present != tuple(self.config.present):
                del self.config.present[:]
                self.config.present.extend(item.present)
                update = stream_pb2.StreamConfig(present=item.present)
                out.append(decoder_pb2.DecodeRequest(config=update))
            if item.audio is not None:
                chunk.audio = self._audio(item)
            elif not item.final:  # the tail flush may go without: the server feeds silence
                raise ClientError(
                    "decode stream with present channels: these latents carry no audio (open "
                    "the encoder stream with keep_audio=True, or the decoder latent-only)"
                )
        out.append(decoder_pb2.DecodeRequest(chunk=chunk))
        self.sent += 1
        return tuple(out)

    def _audio(self, item: Latents) -> bytes:
        """The item's present audio as f32le [frames x ratio, |present|], a ragged end padded."""
        audio, present = item.audio, tuple(self.config.present)
        frames = item.array.shape[1] * self.info.ratio
        if audio.ndim != 2 or audio.shape[0] != len(present):
            raise ClientError(
                f"decode stream: audio of shape {audio.shape} does not hold the "
                f"{len(present)} present channels {list(present)}"
            )
        short = audio.shape[1] <= frames - self.info.ratio  # only the tail flush may stop early
        if audio.shape[1] > frames or (short and not item.final):
            raise ClientError(
                f"decode stream: {audio.shape[1]} audio frames do not match "
                f"{item.array.shape[1]} latent frames x ratio {self.info.ratio}"
            )
        if audio.shape[1] < frames:
            audio = np.pad(audio, ((0, 0), (0, frames - audio.shape[1])))
        return framing.pack(audio)

    def result(self, reply: decoder_pb2.DecodeResponse | None) -> Decoded:
        audio = self.check_reply(reply, "audio")
        array = framing.unpack(audio.pcm, self.config.channels)
        return Decoded(array, audio.seq, audio.ack, audio.final)


def worth_emitting(result: Latents | Decoded) -> bool:
    """False for an empty `final` reply (it only marks the end)."""
    array = result.array if isinstance(result, Latents) else result.audio
    return not (result.final and array.shape[1] == 0)
