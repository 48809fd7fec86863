"""Decoder: latents -> all N channels (projected domain, then inverted to raw channels)."""

from __future__ import annotations

from typing import Optional  # TorchScript reads Optional, not `X | None`

import torch
from torch import Tensor, nn

from mcrave.config import ModelConfig
from mcrave.dsp.pqmf import PQMFSynthesis
from mcrave.dsp.projection import ChannelProjection
from mcrave.dsp.stateful import StatefulLayer
from mcrave.model.layers import LEAKY_SLOPE, CausalConv1d, CausalConvTranspose1d, ResidualUnit
from mcrave.model.spatial import SpatialStage


class DecoderStage(nn.Module):
    """Transposed conv (kernel 2r) up one resolution, then residual units."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.up = CausalConvTranspose1d(cin, cout, stride)
        self.units = nn.ModuleList(ResidualUnit(cout, cfg.kernel_size, d) for d in cfg.dilations)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        x = self.up(self.act(x), states)
        for unit in self.units:
            x = unit(x, states)
        return x


class CounterNoise(StatefulLayer):
    """Uniform noise in [-1, 1) as a pure function of (stream seed, row, absolute sample index).

    The state is [seed, position] per stream, so chunked generation equals one offline pass and a
    stream is reproducible from its seed, unlike a global RNG.
    """

    state_dtype = torch.int64

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def state_shape(self) -> tuple[int, int]:
        return (1, 2)

    def forward(self, like: Tensor, states: list[Tensor]) -> Tensor:
        state = states[self.sid]  # [B, 1, 2] int64: seed, position
        b, r, t = like.shape
        seed = state[:, 0, 0].to(torch.int64)[:, None, None]
        pos = state[:, 0, 1].to(torch.int64)[:, None, None]
        time = pos + torch.arange(t, device=like.device, dtype=torch.int64)[None, None, :]
        row = torch.arange(r, device=like.device, dtype=torch.int64)[None, :, None]
        h = seed * 1000003 + row * 7919 + time * 2654435761
        h = h ^ (h >> 15)
        h = (h * 2246822519) & 0xFFFFFFFF
        h = h ^ (h >> 13)
        h = (h * 3266489917) & 0xFFFFFFFF
        h = h ^ (h >> 16)
        noise = (h & 0xFFFFFF).to(like.dtype) * (2.0 / 16777216.0) - 1.0
        advanced = torch.stack([state[:, 0, 0], state[:, 0, 1] + t], -1)[:, None, :]
        states[self.sid] = advanced.to(state.dtype)
        return noise


OUTPUT_GAIN = 0.1


class Decoder(nn.Module):
    """z [B, D, F] -> audio [B, N, F*ratio].

    Each projected channel's bands are tanh(x * sigmoid(a)) (RAVE v2's waveform x amplitude) plus,
    optionally, uniform noise scaled by a learned per-band envelope; PQMF synthesis and the inverse
    channel projection give the N raw channels (`generate`). With `cfg.spatial`, the spatial stage
    then builds the missing channels from the present channels' audio when it is given.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        synthesizer: PQMFSynthesis,
        projection: ChannelProjection,
        pqmf_delay: int,
    ) -> None:
        super().__init__()
        widths = [cfg.capacity * m for m in cfg.multipliers]
        rows = cfg.channels * cfg.bands
        self.rows = rows
        self.use_noise = cfg.noise
        self.inp = CausalConv1d(cfg.latent_size, widths[-1], 1)
        self.stages = nn.ModuleList(
            DecoderStage(widths[i + 1], widths[i], s, cfg)
            for i, s in reversed(list(enumerate(cfg.strides)))
        )
        # a quiet start (output RMS ~0.1, not a saturated tanh) that still follows z
        self.out = CausalConv1d(widths[0], (3 if cfg.noise else 2) * rows, 3, gain=OUTPUT_GAIN)
        self.noise = CounterNoise(rows)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.synthesizer = synthesizer
        self.projection = projection
        self.spatial = SpatialStage(cfg, pqmf_delay) if cfg.spatial else None
        if cfg.noise:
            with torch.no_grad():  # start with quiet noise so early training hears the waveform
                self.out.conv.bias[2 * rows :].fill_(-4.0)

    def generate(self, z: Tensor, states: list[Tensor]) -> Tensor:
        """z [B, D, F] -> the generative decoder's N channels [B, N, F*ratio], PQMF-delayed."""
        x = self.inp(z, states)
        for stage in self.stages:
            x = stage(x, states)
        y = self.out(self.act(x), states)
        wave = y[:, : self.rows]
        amp = y[:, self.rows : 2 * self.rows]
        bands = torch.tanh(wave * torch.sigmoid(amp))
        if self.use_noise:
            bands = bands + torch.sigmoid(y[:, 2 * self.rows :]) * self.noise(bands, states)
        projected = self.synthesizer(bands, states)
        return self.projection.inverse(projected)

    def forward(
        self,
        z: Tensor,
        states: list[Tensor],
        audio: Optional[Tensor] = None,  # noqa: UP045
        mask: Optional[Tensor] = None,  # noqa: UP045
    ) -> Tensor:
        """z [B, D, F] (+ the input audio [B, N, F*ratio] and its presence mask [B, N]) -> all N
        channels; without audio (or without a spatial stage) the latent-only path."""
        decoded = self.generate(z, states)
        if self.spatial is None:
            return decoded
        return self.spatial(z, decoded, audio, mask, states)
