"""One decoder stream's engine state, stepped through the batcher (the only torch code here)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from mcrave.streaming import StreamingEngine, StreamState
from services.common.protocol import StreamSpec, max_chunk
from services.common.runtime import Stream

# (state, latents [D, F], present audio [N, F*ratio] or None, mask [N] or None)
Payload = tuple[StreamState, np.ndarray, np.ndarray | None, np.ndarray | None]


def decode_batch(
    engine: StreamingEngine, payloads: Sequence[Payload]
) -> list[tuple[StreamState, np.ndarray]]:
    """B streams' steps -> [(state, audio [F*ratio, N])] in one forward.

    Latent-only and spatial streams share a batch: a latent-only row gets silence and an all-False
    mask, which the spatial stage decodes exactly like no audio at all.
    """
    state = StreamState.stack([p[0] for p in payloads])
    z = torch.from_numpy(np.stack([p[1] for p in payloads]))
    if all(p[2] is None for p in payloads):
        state, audio = engine.decode_step(state, z)
    else:
        b, t = len(payloads), z.shape[-1] * engine.ratio
        present = np.zeros((b, engine.channels, t), np.float32)
        mask = np.zeros((b, engine.channels), bool)
        for row, (_, _, x, m) in enumerate(payloads):
            if x is not None:
                present[row], mask[row] = x, m
        state, audio = engine.decode_step(
            state, z, torch.from_numpy(present), torch.from_numpy(mask)
        )
    frames = audio.transpose(1, 2).contiguous().cpu().numpy()  # [B, T, N]
    return list(zip(state.split(), frames, strict=True))


class DecoderSession:
    """Turns latents (+ the present channels' audio) into all N channels; the caller owns the
    `Stream` (slot)."""

    def __init__(self, stream: Stream, spec: StreamSpec) -> None:
        self.stream = stream
        self.spec = spec
        self.engine: StreamingEngine = spec.model.engine
        self._state = self.engine.new_decoder_state(1, [spec.seed])
        self._run = functools.partial(decode_batch, self.engine)
        self._step_max = max_chunk(spec.model, stream.runtime.limits) // self.engine.ratio

    async def decode(self, latents: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
        """latents [F, D] (+ audio [<= F*ratio, |present|] of `spec.present`, zero-padded to
        F*ratio) -> audio [F*ratio, N]. Without audio (latent-only stream) the latent-only path."""
        z = latents.T  # [D, F]
        ratio = self.engine.ratio
        full = mask = None
        if audio is not None:
            present = list(self.spec.present)
            full = np.zeros((self.engine.channels, z.shape[1] * ratio), np.float32)  # [N, T]
            full[present, : audio.shape[0]] = audio.T
            mask = np.zeros(self.engine.channels, bool)
            mask[present] = True
        out = []
        for start in range(0, z.shape[1], self._step_max):
            part = np.ascontiguousarray(z[:, start : start + self._step_max])
            x = None
            if full is not None:
                x = np.ascontiguousarray(full[:, start * ratio : (start + part.shape[1]) * ratio])
            audio_s = part.shape[1] * ratio / self.engine.sample_rate
            self._state, y = await self.stream.step(
                ("decode", part.shape[1]), self._run, (self._state, part, x, mask), audio_s
            )
            out.append(y)
        return np.concatenate(out, axis=0)
