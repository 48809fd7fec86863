"""Masked multichannel encoder: present channels (plus the mask) -> VAE mean and scale."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mcrave.config import ModelConfig
from mcrave.dsp.pqmf import PQMFAnalysis
from mcrave.model.cues import BandCues
from mcrave.model.layers import LEAKY_SLOPE, CausalConv1d, ResidualUnit


class EncoderStage(nn.Module):
    """Residual units at one resolution, then a strided conv (kernel 2r) to the next."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.units = nn.ModuleList(ResidualUnit(cin, cfg.kernel_size, d) for d in cfg.dilations)
        self.down = CausalConv1d(cin, cout, 2 * stride, stride=stride)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        for unit in self.units:
            x = unit(x, states)
        return self.down(self.act(x), states)


INITIAL_SCALE_PREACTIVATION = -4.0  # softplus(-4) ~ 0.018: the posterior starts narrow


class Encoder(nn.Module):
    """audio [B, N, T] + mask [B, N] -> mean, scale [B, D, T/ratio].

    Absent channels are replaced by zeros with `torch.where` (so even NaN there cannot leak) and
    the mask enters as N constant feature rows: the network knows "absent", not "silent".
    With `cfg.cue_latents`, the present channels' band levels are added to the last latent dims
    of the mean (`BandCues`).
    """

    def __init__(self, cfg: ModelConfig, analyzer: PQMFAnalysis) -> None:
        super().__init__()
        widths = [cfg.capacity * m for m in cfg.multipliers]
        self.analyzer = analyzer
        self.bands = cfg.bands
        self.inp = CausalConv1d(cfg.channels * cfg.bands + cfg.channels, widths[0], 7)
        self.stages = nn.ModuleList(
            EncoderStage(widths[i], widths[i + 1], s, cfg) for i, s in enumerate(cfg.strides)
        )
        self.out = CausalConv1d(widths[-1], 2 * cfg.latent_size, 1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.cues = BandCues(cfg) if cfg.cue_latents else None
        # Start nearly deterministic: with softplus(0) ~ 0.7 the sampling noise drowned the
        # untrained means (std ~0.005), the decoder learned to ignore z and the latent collapsed
        # on short CPU runs; the KL term raises the scale later, as far as reconstruction allows.
        with torch.no_grad():
            self.out.conv.bias[cfg.latent_size :].fill_(INITIAL_SCALE_PREACTIVATION)
            if cfg.cue_latents:  # the cue dims start as the cues alone (weight-norm gain 0)
                cue_rows = slice(cfg.latent_size - cfg.cue_latents, cfg.latent_size)
                self.out.conv.parametrizations.weight.original0[cue_rows] = 0.0
                self.out.conv.bias[cue_rows] = 0.0

    def _audible(self, present: Tensor, states: list[Tensor]) -> Tensor:
        """[R] the channels whose bands can be nonzero this step: present in some row, or with
        audio still in the analysis filter's or the input conv's context (absent a moment ago).
        Every other channel's bands and contexts are exactly zero, so the analysis and the input
        conv leave them out: at N=299 with half the channels present, half of both."""
        b, n = present.shape
        heard = states[self.analyzer.sid].ne(0).any(2).any(0)  # [N]
        m = self.bands
        context = states[self.inp.sid][:, : n * m]  # [B, N*M, k-1]: the band rows
        recent = context.ne(0).reshape(b, n, -1).any(2).any(0)
        return (present.any(0) | heard | recent).nonzero()[:, 0]

    def forward(self, audio: Tensor, mask: Tensor, states: list[Tensor]) -> tuple[Tensor, Tensor]:
        present = mask.to(torch.bool)[:, :, None]
        audio = torch.where(present, audio, torch.zeros_like(audio))
        n, m = audio.shape[1], self.bands
        audible = self._audible(present[:, :, 0], states)  # [R]
        bands = self.analyzer(audio, states, audible)  # [B, R*M, T/M]
        flags = present.to(bands.dtype).expand(-1, -1, bands.shape[-1])  # [B, N, T/M]
        band_rows = (audible[:, None] * m + torch.arange(m, device=audio.device)).reshape(-1)
        inputs = torch.cat([band_rows, n * m + torch.arange(n, device=audio.device)])
        x = self.inp(torch.cat([bands, flags], 1), states, inputs)
        for stage in self.stages:
            x = stage(x, states)
        mean, raw_scale = self.out(self.act(x), states).chunk(2, 1)
        if self.cues is not None:
            cues = self.cues(audio, present[:, :, 0], states)
            mean = torch.cat([mean[:, : -cues.shape[1]], mean[:, -cues.shape[1] :] + cues], 1)
        return mean, F.softplus(raw_scale) + 1e-4
