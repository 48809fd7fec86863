"""A decoder stream: latents (+ the present channels' audio) -> all N channels (the chunk loop and
the batched forward are services/common/session.py's)."""

from __future__ import annotations

import numpy as np

from services.common.session import EngineSession


class DecoderSession(EngineSession):
    """Turns latents (+ the present channels' audio) into all N channels; the caller owns the
    `Stream` (slot)."""

    kind = "decode"
    relayed = False  # a relay reader: its chunks come from an encoder's Relay call

    async def decode(self, latents: np.ndarray, audio: np.ndarray | None = None) -> np.ndarray:
        """latents [F, D] (+ audio [<= F*ratio, |present|] of `spec.present`, zero-padded to
        F*ratio) -> audio [F*ratio, N]. Without audio (latent-only stream) the latent-only path."""
        ratio = self.engine.ratio
        full = mask = None
        if audio is not None:
            full, mask = self.place(audio, latents.shape[0] * ratio)
        return await self.run(latents.T, ratio, full, mask)
