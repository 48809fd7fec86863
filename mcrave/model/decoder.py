"""Decoder: latents -> all N channels (projected domain, then inverted to raw channels)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mcrave.config import ModelConfig
from mcrave.dsp.pqmf import PQMFSynthesis
from mcrave.dsp.projection import ChannelProjection
from mcrave.dsp.stateful import StatefulLayer
from mcrave.model.layers import CausalConv1d, CausalConvTranspose1d, ResidualUnit


class DecoderStage(nn.Module):
    """Transposed conv (kernel 2r) up one resolution, then residual units."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.up = CausalConvTranspose1d(cin, cout, stride)
        self.units = nn.ModuleList(ResidualUnit(cout, cfg.kernel_size, d) for d in cfg.dilations)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        x = self.up(F.leaky_relu(x, 0.2), states)
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
    channel projection give the N raw channels.
    """

    def __init__(
        self, cfg: ModelConfig, synthesizer: PQMFSynthesis, projection: ChannelProjection
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
        self.synthesizer = synthesizer
        self.projection = projection
        if cfg.noise:
            with torch.no_grad():  # start with quiet noise so early training hears the waveform
                self.out.conv.bias[2 * rows :].fill_(-4.0)

    def forward(self, z: Tensor, states: list[Tensor]) -> Tensor:
        x = self.inp(z, states)
        for stage in self.stages:
            x = stage(x, states)
        y = self.out(F.leaky_relu(x, 0.2), states)
        wave = y[:, : self.rows]
        amp = y[:, self.rows : 2 * self.rows]
        bands = torch.tanh(wave * torch.sigmoid(amp))
        noise = self.noise(bands, states)
        if self.use_noise:
            bands = bands + torch.sigmoid(y[:, 2 * self.rows :]) * noise
        projected = self.synthesizer(bands, states)
        return self.projection.inverse(projected)
