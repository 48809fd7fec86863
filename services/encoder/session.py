"""An encoder stream: chunks of the present channels -> latents (the chunk loop and the batched
forward are services/common/session.py's)."""

from __future__ import annotations

import numpy as np

from services.common.session import EngineSession
from services.encoder.relay import Forward


class EncoderSession(EngineSession):
    """Turns chunks of present channels into latents; the caller owns the `Stream` (slot)."""

    kind = "encode"
    ended = False  # a chunk that was not a ratio multiple was the last one
    forward: Forward | None = None  # a relayed stream's call to its decoder

    def close(self) -> None:
        if self.forward is not None:
            self.forward.cancel()  # no-op once the relay has finished
        super().close()

    async def encode(self, audio: np.ndarray) -> np.ndarray:
        """audio [frames, |present|] -> latents [ceil(frames/ratio), D]; a ragged end is zero-padded."""
        frames = audio.shape[0]
        padded = -(-frames // self.engine.ratio) * self.engine.ratio
        self.ended = frames != padded
        full, mask = self.place(audio, padded)
        return await self.run(full, 1, None, mask)

    async def flush(self) -> np.ndarray:
        """Zeros covering the model latency, so a decoder can render every input frame."""
        self.ended = True
        silence = np.zeros((0, len(self.spec.present)), np.float32)
        full, mask = self.place(silence, self.engine.flush_frames * self.engine.ratio)
        return await self.run(full, 1, None, mask)
