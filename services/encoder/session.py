"""One encoder stream's engine state, stepped through the batcher (the only torch code here)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from mcrave.streaming import StreamingEngine, StreamState
from services.common.protocol import StreamSpec, max_chunk
from services.common.runtime import Stream


def encode_batch(
    engine: StreamingEngine, payloads: Sequence[tuple[StreamState, np.ndarray, np.ndarray]]
) -> list[tuple[StreamState, np.ndarray]]:
    """[(state, audio [N, C], mask [N])] of B streams -> [(state, latents [F, D])] in one forward."""
    state = StreamState.stack([p[0] for p in payloads])
    audio = torch.from_numpy(np.stack([p[1] for p in payloads]))
    mask = torch.from_numpy(np.stack([p[2] for p in payloads]))
    state, z = engine.encode_step(state, audio, mask)
    latents = z.transpose(1, 2).contiguous().cpu().numpy()  # [B, F, D]
    return list(zip(state.split(), latents, strict=True))


class EncoderSession:
    """Turns chunks of present channels into latents; the caller owns the `Stream` (slot)."""

    def __init__(self, stream: Stream, spec: StreamSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.engine: StreamingEngine = spec.model.engine
        self._state = self.engine.new_encoder_state(1)
        self._run = functools.partial(encode_batch, self.engine)
        self._step_max = max_chunk(spec.model, stream.runtime.limits)
        self.ended = False  # a chunk that was not a ratio multiple was the last one

    async def encode(self, audio: np.ndarray) -> np.ndarray:
        """audio [frames, |present|] -> latents [ceil(frames/ratio), D]; a ragged end is zero-padded."""
        frames = audio.shape[0]
        ratio = self.engine.ratio
        padded = -(-frames // ratio) * ratio
        full = np.zeros((self.engine.channels, padded), dtype=np.float32)  # [N, C]
        full[list(self.spec.present), :frames] = audio.T
        self.ended = frames != padded
        return await self._encode_full(full)

    async def flush(self) -> np.ndarray:
        """Zeros covering the model latency, so a decoder can render every input frame."""
        tail = self.engine.flush_frames * self.engine.ratio
        self.ended = True
        return await self._encode_full(np.zeros((self.engine.channels, tail), dtype=np.float32))

    async def _encode_full(self, full: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.engine.channels, dtype=bool)
        mask[list(self.spec.present)] = True
        out = []
        for start in range(0, full.shape[1], self._step_max):
            part = np.ascontiguousarray(full[:, start : start + self._step_max])
            frames = part.shape[1]
            self._state, z = await self.stream.step(
                ("encode", frames),
                self._run,
                (self._state, part, mask),
                frames / self.engine.sample_rate,
            )
            out.append(z)
        return np.concatenate(out, axis=0)
