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
        self.decoder = Decoder(cfg, self.pqmf.synthesizer, self.projection)
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
        return self.pqmf.delay

    def initial_states(
        self, part: str, batch: int, device: torch.device | None = None
    ) -> list[Tensor]:
        """Zero states for `part` in ("encoder", "decoder"): the start of a stream."""
        slots = self.encoder_slots if part == "encoder" else self.decoder_slots
        device = device if device is not None else next(self.parameters()).device
        return [torch.zeros(batch, *shape, dtype=dtype, device=device) for shape, dtype in slots]

    def _check_length(self, t: int) -> None:
        if t % self.ratio:
            raise ValueError(f"length {t} is not a multiple of the model ratio {self.ratio}")

    def encode(self, audio: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """[B, N, T], [B, N] -> mean, scale [B, D, T/ratio]; T a multiple of `ratio`."""
        self._check_length(audio.shape[-1])
        states = self.initial_states("encoder", audio.shape[0], audio.device)
        return self.encoder(audio, mask, states)

    @staticmethod
    def reparametrize(mean: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Sample z and return the KL to N(0, 1), summed over dims, averaged over frames: [B].

        Averaging over frames (as RAVE does) keeps the KL's weight independent of crop length;
        a sum over frames made it ~frames times stronger and collapsed the posterior early.
        """
        z = mean + scale * torch.randn_like(mean)
        var = scale * scale
        kl = (mean * mean + var - torch.log(var) - 1).sum(1).mean(-1)
        return z, kl

    def decode(self, z: Tensor, seed: int | Tensor = 0) -> Tensor:
        """[B, D, F] -> [B, N, F*ratio]; `seed` ([B] or int) drives the noise branch."""
        states = self.initial_states("decoder", z.shape[0], z.device)
        noise_slot = self.decoder.noise.sid
        seeds = torch.as_tensor(seed, dtype=torch.int64, device=z.device).expand(z.shape[0])
        states[noise_slot][:, 0, 0] = seeds
        return self.decoder(z, states)

    def forward(self, audio: Tensor, mask: Tensor, seed: int | Tensor = 0) -> dict[str, Tensor]:
        """Training pass: encode, sample, decode. Returns out, z, mean, scale, kl."""
        mean, scale = self.encode(audio, mask)
        z, kl = self.reparametrize(mean, scale)
        return {"out": self.decode(z, seed), "z": z, "mean": mean, "scale": scale, "kl": kl}
