"""One decoder stream's engine state, stepped through the batcher (the only torch code here)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from mcrave.streaming import StreamingEngine, StreamState
from services.common.protocol import StreamSpec, max_chunk
from services.common.runtime import Stream


def decode_batch(
    engine: StreamingEngine, payloads: Sequence[tuple[StreamState, np.ndarray]]
) -> list[tuple[StreamState, np.ndarray]]:
    """[(state, latents [D, F])] of B streams -> [(state, audio [F*ratio, N])] in one forward."""
    state = StreamState.stack([p[0] for p in payloads])
    z = torch.from_numpy(np.stack([p[1] for p in payloads]))
    state, audio = engine.decode_step(state, z)
    frames = audio.transpose(1, 2).contiguous().cpu().numpy()  # [B, T, N]
    return list(zip(state.split(), frames, strict=True))


class DecoderSession:
    """Turns latents into all N channels; the caller owns the `Stream` (slot)."""

    def __init__(self, stream: Stream, spec: StreamSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.engine: StreamingEngine = spec.model.engine
        self._state = self.engine.new_decoder_state(1, [spec.seed])
        self._run = functools.partial(decode_batch, self.engine)
        self._step_max = max_chunk(spec.model, stream.runtime.limits) // self.engine.ratio

    async def decode(self, latents: np.ndarray) -> np.ndarray:
        """latents [F, D] -> audio [F*ratio, N]."""
        z = latents.T  # [D, F]
        out = []
        for start in range(0, z.shape[1], self._step_max):
            part = np.ascontiguousarray(z[:, start : start + self._step_max])
            audio_s = part.shape[1] * self.engine.ratio / self.engine.sample_rate
            self._state, y = await self.stream.step(
                ("decode", part.shape[1]), self._run, (self._state, part), audio_s
            )
            out.append(y)
        return np.concatenate(out, axis=0)
