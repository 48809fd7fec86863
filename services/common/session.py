"""One stream's engine state, stepped through its model's batch group: the chunk loop and the
batched forward that encoder and decoder sessions share, written once over
`mcrave.streaming.StreamingEngine` (the only torch code of the services).

A session cuts what it is given into steps of at most the server's largest chunk, submits each
to the batch group (steps of one kind and size from concurrent streams run as one forward) and
keeps the state the forward returns. `EncoderSession` and `DecoderSession` (services/*/session.py)
add only what their side means by a chunk.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

import numpy as np
import torch
from mcrave_client.proto import stream_pb2

from mcrave.streaming import StreamingEngine, StreamState
from services.common.protocol import StreamSpec, bind, max_chunk
from services.common.runtime import Runtime, Stream

Kind = Literal["encode", "decode"]


@dataclass(frozen=True)
class Step:
    """One stream's share of a batched forward."""

    state: StreamState
    x: np.ndarray  # encode: audio [N, T]; decode: latents [D, F]
    audio: np.ndarray | None  # decode: the present channels' audio [N, F*ratio]; None: latents only
    mask: np.ndarray | None  # [N] the present channels (with `x` to encode, with `audio` to decode)


def run_batch(
    engine: StreamingEngine, kind: Kind, steps: Sequence[Step]
) -> list[tuple[StreamState, np.ndarray]]:
    """B streams' steps -> [(state, output [frames, channels])] in one forward: latents [F, D]
    to encode, audio [F*ratio, N] to decode.

    Latent-only and spatial decoder streams share a batch: a latent-only row gets silence and an
    all-False mask, which the spatial stage decodes exactly like no audio at all.
    """
    state = StreamState.stack([s.state for s in steps])
    x = torch.from_numpy(np.stack([s.x for s in steps]))
    if kind == "encode":
        state, y = engine.encode_step(state, x, torch.from_numpy(np.stack([s.mask for s in steps])))
    elif all(s.audio is None for s in steps):
        state, y = engine.decode_step(state, x)
    else:
        present = np.zeros((len(steps), engine.channels, x.shape[-1] * engine.ratio), np.float32)
        mask = np.zeros((len(steps), engine.channels), bool)
        for row, step in enumerate(steps):
            if step.audio is not None:
                present[row], mask[row] = step.audio, step.mask
        state, y = engine.decode_step(state, x, torch.from_numpy(present), torch.from_numpy(mask))
    out = y.transpose(1, 2).contiguous().cpu().numpy()  # [B, frames, channels]
    return list(zip(state.split(), out, strict=True))


class EngineSession:
    """A stream's engine state and its chunk loop; the caller owns the `Stream` (slot)."""

    kind: ClassVar[Kind]

    def __init__(self, stream: Stream, spec: StreamSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.engine: StreamingEngine = spec.model.engine
        self._state = (
            self.engine.new_encoder_state(1)
            if self.kind == "encode"
            else self.engine.new_decoder_state(1, [spec.seed])
        )
        self._run = functools.partial(run_batch, self.engine, self.kind)
        self._step_frames = max_chunk(spec.model, stream.runtime.limits)  # audio frames

    @classmethod
    def open(
        cls, rt: Runtime, config: stream_pb2.StreamConfig, peer: str, *, clip: bool = False
    ) -> Self:
        """Bind a first config to its model and take a stream slot for the client at `peer`."""
        spec = bind(config, rt.watcher, rt.limits, encoder=cls.kind == "encode", clip=clip)
        return cls(rt.open(spec.model, peer), spec)

    @classmethod
    @contextlib.contextmanager
    def clip(cls, rt: Runtime, config: stream_pb2.StreamConfig, peer: str) -> Iterator[Self]:
        """A session for one unary clip, its slot freed however the call ends."""
        session = cls.open(rt, config, peer, clip=True)
        try:
            yield session
        finally:
            session.close()

    def close(self) -> None:
        """Free the stream's slot (and whatever a side holds beside it)."""
        self.stream.close()

    def place(self, audio: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """audio [<= frames, |present|] of `spec.present` -> ([N, frames] with silence in the
        other channels and after the audio, mask [N] of the present channels)."""
        present = list(self.spec.present)
        full = np.zeros((self.engine.channels, frames), np.float32)
        full[present, : audio.shape[0]] = audio.T
        mask = np.zeros(self.engine.channels, bool)
        mask[present] = True
        return full, mask

    async def run(
        self, x: np.ndarray, hop: int, audio: np.ndarray | None, mask: np.ndarray | None
    ) -> np.ndarray:
        """x [C, L] (each column `hop` audio frames; `audio` [N, L*hop] beside it) through the
        batch group in steps of at most the server's largest chunk -> outputs [frames, channels]."""
        width = self._step_frames // hop
        out = []
        for start in range(0, x.shape[1], width):
            part = np.ascontiguousarray(x[:, start : start + width])
            lo, hi = start * hop, (start + part.shape[1]) * hop
            sound = None if audio is None else np.ascontiguousarray(audio[:, lo:hi])
            self._state, y = await self.stream.step(
                (self.kind, part.shape[1]),
                self._run,
                Step(self._state, part, sound, mask),
                (hi - lo) / self.engine.sample_rate,
                last=x.shape[1] <= width,  # one step: a stream's chunk, not a clip's many
            )
            out.append(y)
        return np.concatenate(out, axis=0)
