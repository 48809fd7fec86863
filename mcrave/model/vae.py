"""MCRave: the N-channel masked RAVE-style VAE (offline causal API).

Streaming lives in `mcrave.streaming`, which drives the same layers chunk by chunk; see
`mcrave.dsp.stateful` for the state convention that makes both paths identical.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mcrave.config import ModelConfig
from mcrave.dsp.pqmf import PQMF
from mcrave.dsp.projection import ChannelProjection
from mcrave.dsp.stateful import assign_state_slots
from mcrave.model.decoder import Decoder
from mcrave.model.encoder import Encoder


class MCRave(nn.Module):
    """audio [B, N, T] + presence mask [B, N] -> latents [B, D, T/ratio] -> audio [B, N, T].

    The decoder output is the input delayed by `latency` samples (the PQMF's analysis + synthesis
    delay); every other layer is frame-causal, so a stream needs no look-ahead beyond its chunk.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pqmf = PQMF(cfg.bands, cfg.pqmf_taps, cfg.channels)
        self.projection = ChannelProjection(cfg.projection, cfg.channels)
        self.encoder = Encoder(cfg, self.pqmf.analyzer)
        self.decoder = Decoder(cfg, self.pqmf.synthesizer, self.projection, self.pqmf.delay)
        self.refresh_state_slots()

    def refresh_state_slots(self) -> None:
        """(Re)number the stateful layers of encoder and decoder, each from slot 0."""
        self.encoder_slots = assign_state_slots(self.encoder)
        self.decoder_slots = assign_state_slots(self.decoder)

    @property
    def channels(self) -> int:
        return self.cfg.channels

    @property
    def ratio(self) -> int:
        return self.cfg.ratio

    @property
    def latent_size(self) -> int:
        return self.cfg.latent_size

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def latency(self) -> int:
        """Samples by which the output lags the input (PQMF, plus the spatial stage's STFT)."""
        spatial = self.cfg.spatial_fft - self.cfg.spatial_hop if self.cfg.spatial else 0
        return self.pqmf.delay + spatial

    @property
    def decoded_latency(self) -> int:
        """The lag of the generative decoder's own output (`decode_latent`): the PQMF's."""
        return self.pqmf.delay

    def initial_states(
        self,
        part: str,
        batch: int,
        device: torch.device | None = None,
        seeds: int | Tensor | None = None,
    ) -> list[Tensor]:
        """Zero states for `part` in ("encoder", "decoder"): the start of a stream. `seeds`
        (int or [B]) start the decoder's noise streams."""
        slots = self.encoder_slots if part == "encoder" else self.decoder_slots
        device = device if device is not None else next(self.parameters()).device
        states = [torch.zeros(batch, *shape, dtype=dtype, device=device) for shape, dtype in slots]
        if part == "decoder" and seeds is not None:
            seed = torch.as_tensor(seeds, dtype=torch.int64, device=device).expand(batch)
            states[self.decoder.noise.sid][:, 0, 0] = seed
        return states

    def _check_length(self, t: int) -> None:
        if t % self.ratio:
            raise ValueError(f"length {t} is not a multiple of the model ratio {self.ratio}")

    def encode(self, audio: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, N, T], [B, N] -> mean, scale [B, D, T/ratio]; T a multiple of `ratio`."""
        self._check_length(audio.shape[-1])
        states = self.initial_states("encoder", audio.shape[0], audio.device)
        return self.encoder(audio, mask, states)

    @staticmethod
    def reparametrize(
        mean: Tensor, scale: Tensor, noise: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sample z (from `noise` ~ N(0, 1) when given: the trainer draws it per global row) and
        return the KL to N(0, 1), summed over dims, averaged over frames: [B].

        Averaging over frames (as RAVE does) keeps the KL's weight independent of crop length;
        a sum over frames made it ~frames times stronger and collapsed the posterior early.
        """
        z = mean + scale * (torch.randn_like(mean) if noise is None else noise)
        var = scale * scale
        kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean(-1)
        return z, kl

    def decode(
        self,
        z: Tensor,
        seed: int | Tensor = 0,
        audio: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """[B, D, F] -> [B, N, F*ratio], `latency` late; `seed` ([B] or int) drives the noise
        branch. With the input `audio` [B, N, F*ratio] and its `mask` [B, N], the spatial stage
        builds the missing channels from the present ones; without, the latent-only path."""
        states = self.initial_states("decoder", z.shape[0], z.device, seed)
        return self.decoder(z, states, audio, mask)

    def decode_latent(self, z: Tensor, seed: int | Tensor = 0) -> Tensor:
        """The generative decoder alone: [B, D, F] -> [B, N, F*ratio], `decoded_latency` late."""
        return self.decoder.generate(z, self.initial_states("decoder", z.shape[0], z.device, seed))

    def decode_parts(
        self, z: Tensor, seed: int | Tensor, audio: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Training view of `decode`: (spatial output, `latency` late; the generative decoder's
        own output, `decoded_latency` late), so each gets its own losses."""
        states = self.initial_states("decoder", z.shape[0], z.device, seed)
        decoded = self.decoder.generate(z, states)
        if self.decoder.spatial is None:
            return decoded, decoded
        return self.decoder.spatial(z, decoded, audio, mask, states), decoded

    def forward(self, audio: Tensor, mask: Tensor, seed: int | Tensor = 0) -> dict[str, Tensor]:
        """Encode, sample, decode with the present channels. Returns out, z, mean, scale, kl."""
        mean, scale = self.encode(audio, mask)
        z, kl = self.reparametrize(mean, scale)
        out = self.decode(z, seed, audio, mask)
        return {"out": out, "z": z, "mean": mean, "scale": scale, "kl": kl}
