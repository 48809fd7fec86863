"""Spatial stage: each missing channel built FROM the present channels' audio, steered by latents.

A decoder that only sees latents cannot reproduce a waveform, so it can never beat copying the
present channel. This stage does what parametric stereo (HE-AAC v2, MPEG Surround) does, learned:
in a causal STFT (oversampled, so time-varying gains do not alias as they would on PQMF bands),
per frame and per perceptual band, a small causal network predicts for every (missing target,
present source) pair a level, a phase difference and a pooling weight, and for every target a
coherence angle (how much decorrelated "fill" replaces the direct sound) and a gate on the
generative decoder's own output (what no transform of the present channels can give).

    direct_c = sum_p softmax_p(w_cp) * g_cp * exp(i phi_cp) * X_p   (p: up to 8 present sources)
    mix_c    = cos(a_c) direct_c + sin(a_c) duck(decorrelate(direct_c)) + gate_c * D_c
    Y_c      = mix_c scaled per band to the band power of direct_c
    Y_c      = X_c for present channels; Y = D (the decoder) when nothing is present

The last step keeps level and texture apart, as parametric stereo does: the gains alone set each
band's level (the ILD), while fill and decoder residual only change coherence and fine structure.
Without it a trained stage drew most of the missing channel's energy from the decoder's residual,
whose band levels wander (ILD error 9.6 dB with the gate shut, measured), so it lost to copy on ILD.

The last layers start at zero, so an untrained stage outputs the mean of the present channels:
training starts AT the copy baseline. Every context (delay line, STFT frames, temporal convs,
decorrelator history, overlap-add tail) lives in explicit state slots, so chunked == offline.
The stage delays everything by `fft - hop` samples on top of the PQMF delay.
"""

from __future__ import annotations

import math
from typing import Optional  # TorchScript reads Optional, not `X | None`

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mcrave.config import ModelConfig
from mcrave.dsp.bands import erb_band_index
from mcrave.dsp.stateful import ContextBuffer, StatefulLayer
from mcrave.model.cues import level_readout
from mcrave.model.layers import LEAKY_SLOPE

EMBEDDING = 16
DECORRELATOR_DELAYS = (1, 2, 3)  # STFT frames; cycled over bands so neighbours decorrelate
INITIAL_GATE = -4.0  # sigmoid(-4) ~ 0.018: the decoder's residual starts nearly shut
INITIAL_ANGLE = -4.0  # (pi/2) sigmoid(-4) ~ 0.03 rad: the fill starts nearly silent
POWER_FLOOR = 1e-10
MAX_BOOST = 100.0  # power: the level normalisation never lifts a band by more than 20 dB
MAX_SOURCES = 8  # present channels each missing one is built from (cost O(N * 8), not O(N^2))


class OverlapAddTail(ContextBuffer):
    """Carries the overlap-add tail of `length` samples into the next call."""

    def forward(self, buffer: Tensor, emit: int, states: list[Tensor]) -> Tensor:
        """buffer [B, rows, emit + length] -> the first `emit` samples, with the old tail added."""
        tail = states[self.sid]
        head = torch.cat([buffer[..., : self.length] + tail, buffer[..., self.length :]], -1)
        states[self.sid] = head[..., emit:]
        return head[..., :emit]


class TemporalUnit(StatefulLayer):
    """Residual causal conv (kernel 3, dilated) over STFT frames, shared by all channels.

    Frames-major, x [B, F, N, W]: each tap of the kernel is a contiguous slice of frames, so the
    conv is one GEMM with every (frame, channel) in its rows. Channels-major ([B, N*W, F]) needed
    an im2col copy of strided columns and two transposed copies: ~1.1 ms a unit at N=299, this
    ~0.5. The state holds the last 2 x dilation frames, [B, 2d, N*W]."""

    def __init__(self, channels: int, width: int, dilation: int) -> None:
        super().__init__()
        self.channels = channels
        self.width = width
        self.dilation = dilation
        self.conv = nn.Conv1d(width, width, 3)  # a conv's parameters (checkpoints), run as a GEMM
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.3 / (3 * width) ** 0.5)
            self.conv.bias.zero_()

    def state_shape(self) -> tuple[int, int]:
        return (2 * self.dilation, self.channels * self.width)

    def forward(self, x: Tensor, states: list[Tensor]) -> Tensor:
        """x [B, F, N, W] -> same shape."""
        b, f, n, w = x.shape
        d = self.dilation
        past = states[self.sid].reshape(b, 2 * d, n, w)
        full = torch.cat([past, self.act(x)], 1)  # [B, 2d + F, N, W]
        states[self.sid] = full[:, f:].reshape(b, 2 * d, n * w)
        cols = torch.cat([full[:, k * d : k * d + f] for k in range(3)], -1)  # [B, F, N, 3W]
        weight = self.conv.weight.permute(0, 2, 1).reshape(w, 3 * w)  # tap-major, as `cols`
        return x + F.linear(cols, weight, self.conv.bias)


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.LeakyReLU(LEAKY_SLOPE), nn.Linear(hidden, cout))


class SpatialStage(nn.Module):
    """(latents, present audio, mask, decoder output) -> all N channels, `fft - hop` later."""

    def __init__(self, cfg: ModelConfig, latency: int) -> None:
        super().__init__()
        n, fft, hop = cfg.channels, cfg.spatial_fft, cfg.spatial_hop
        hidden, bands = cfg.spatial_hidden, cfg.spatial_bands
        self.fft, self.hop = fft, hop
        self.hidden = hidden
        # attributes: TorchScript cannot read module-level numbers
        self.floor = POWER_FLOOR
        self.max_boost = MAX_BOOST
        self.max_sources = MAX_SOURCES
        self.frames_per_latent = cfg.ratio // hop
        bins = fft // 2 + 1
        index = torch.from_numpy(erb_band_index(fft, cfg.sample_rate, bands))
        self.used_bands = int(index.max()) + 1
        k = self.used_bands
        self.register_buffer("band_index", index, persistent=False)
        onehot = F.one_hot(index, k).to(torch.float32)  # [bins, K]
        self.register_buffer("band_mean", onehot / onehot.sum(0), persistent=False)
        # analysis sqrt-Hann; synthesis Hann^1.5, whose sidelobes fall 24 dB/octave (sqrt-Hann's:
        # 12). Time-varying gains leak each frame's content across the spectrum through the
        # synthesis window's sidelobes: with sqrt-Hann that put a floor ~30 dB above the source's
        # in bands where it is silent (above an OGG lowpass: mss 5.75 vs copy's 4.83 on one file;
        # with Hann^1.5 4.18). Analysis x synthesis sums to 1 over the hops: perfect
        # reconstruction when the gains are 1.
        window = torch.hann_window(fft, periodic=True).sqrt()
        synthesis = window**3
        ola = sum((window * synthesis).roll(s * hop) for s in range(fft // hop))
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("synthesis_window", synthesis / ola, persistent=False)
        # a channel passing through is its analysis frames x the synthesis window: one product
        self.register_buffer("passthrough_window", window * synthesis / ola, persistent=False)
        gen = torch.Generator().manual_seed(0x5A7)
        theta = torch.rand(bins, generator=gen) * 2 * math.pi
        self.register_buffer("decor_cos", theta.cos(), persistent=False)
        self.register_buffer("decor_sin", theta.sin(), persistent=False)
        delays = torch.tensor(DECORRELATOR_DELAYS)[index % len(DECORRELATOR_DELAYS)]
        self.max_delay = max(DECORRELATOR_DELAYS)
        self.register_buffer("bin_delay", delays, persistent=False)  # [bins] frames

        # streaming contexts
        self.present_delay = ContextBuffer(n, latency)  # aligns input audio with decoder output
        self.present_frames = ContextBuffer(n, fft - hop)
        self.decoded_frames = ContextBuffer(n, fft - hop)
        self.history = ContextBuffer(n * self.max_delay, bins * 2)  # slot only: `_shift_history`
        self.overlap_add = OverlapAddTail(n, fft - hop)

        # the network
        self.embedding = nn.Parameter(torch.randn(n, EMBEDDING) * 0.5)
        self.source = _mlp(k + EMBEDDING, hidden, hidden)
        self.latent = nn.Linear(cfg.latent_size, hidden)
        self.target = _mlp(2 * hidden + EMBEDDING + k, hidden, hidden)
        self.temporal = nn.ModuleList(TemporalUnit(n, hidden, d) for d in (1, 2, 4, 8))
        self.pair_target = nn.Linear(hidden, hidden)
        self.pair_source = nn.Linear(hidden, hidden)
        self.pair_out = nn.Linear(hidden, 3 * k)  # log gain, phase, pooling weight
        # with cue latents (mcrave.model.cues): a direct linear path from the latents to each
        # target's band levels, so transmitted level differences need not cross the deep net
        self.cue_level = nn.Linear(cfg.latent_size, n * k) if cfg.cue_latents else None
        self.target_out = nn.Linear(hidden, 2 * k)  # coherence angle, decoder gate
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        with torch.no_grad():
            for head in (self.pair_out, self.target_out, self.cue_level):
                if head is not None:
                    head.weight.zero_()
                    head.bias.zero_()
            if self.cue_level is not None:
                bin_hz = torch.arange(bins) * cfg.sample_rate / fft
                band_hz = self.band_mean.t() @ bin_hz  # centre of each band
                self.cue_level.weight.copy_(level_readout(cfg, band_hz))
            self.target_out.bias[:k].fill_(INITIAL_ANGLE)
            self.target_out.bias[k:].fill_(INITIAL_GATE)

    # ---- helpers -----------------------------------------------------------------------------
    # Spectra are frames-major, complex [B, N, F, bins] as rfft returns them: no transposed copy
    # anywhere (an index_select of a [bins, F]-transposed spectrum copied it whole first, ~4 ms
    # a step at 299 channels), per-band values are [..., F, K].
    def _frames(self, framed: Tensor) -> Tensor:
        """[B, N, fft - hop + T] -> analysis-windowed frames [B, N, T/hop, fft] (frames end at
        hop, 2 hop, ...)."""
        return framed.unfold(-1, self.fft, self.hop) * self.window

    def _with_spare(self, rows: Tensor) -> Tensor:
        """Channel indices [C] -> [C + 1], channel 0 appended as a spare row (`_rfft_rows`)."""
        return torch.cat([rows, rows.new_zeros(1)])

    def _rfft_rows(self, framed: Tensor, rows_and_spare: Tensor) -> Tensor:
        """Spectra [B, C + 1, F, bins] of framed audio [B, N, fft - hop + T] at the rows
        `rows_and_spare` (`_with_spare`), the spare row zeroed, for any C >= 0: MKL's FFT refuses
        an empty batch, and a branch on the data-dependent row count would break the ONNX export
        (so would forcing C >= 1, which torch.export cannot prove). The spare is picked with the
        others: no copy of all the frames to append a row."""
        picked = framed.index_select(1, rows_and_spare)
        picked[:, rows_and_spare.shape[0] - 1].zero_()
        return torch.fft.rfft(self._frames(picked), dim=-1)

    def _irfft(self, spec: Tensor) -> Tensor:
        """complex [B, C, F, bins] -> synthesis-windowed frames [B, C, F, fft], any C >= 0."""
        shape = [spec.shape[0], 1, spec.shape[2], spec.shape[3]]
        pad = torch.zeros(shape, dtype=spec.dtype, device=spec.device)
        frames = torch.fft.irfft(torch.cat([spec, pad], 1), n=self.fft, dim=-1)
        return frames[:, : spec.shape[1]] * self.synthesis_window

    def _rows(self, x: Tensor, index: Tensor) -> Tensor:
        """Complex x [B, N, F, bins] -> [B, C, F, bins]: row b holds x[b, index[b, c]] for index
        [B, C]. An index_select on the flattened [B*N] rows (a complex one along dim 1 ran 7x
        slower), of the real view (the complex kernel copies element by element: 0.28 vs 0.09
        ms for 149 rows of 8 x 513)."""
        b, n = x.shape[0], x.shape[1]
        rows = (torch.arange(b, device=x.device) * n)[:, None] + index
        real = torch.view_as_real(x).reshape([b * n] + list(x.shape[2:]) + [2])
        picked = real.index_select(0, rows.reshape(-1))
        return torch.view_as_complex(picked).reshape([b, index.shape[1]] + list(x.shape[2:]))

    def _band_power(self, spec: Tensor) -> Tensor:
        """complex [..., F, bins] -> mean power per band [..., F, K]."""
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(power, self.band_mean)

    def _to_bins(self, per_band: Tensor) -> Tensor:
        """[..., F, K] -> [..., F, bins] (piecewise constant over each band; a gather with an
        expanded index: index_select along the last dim ran 3x slower)."""
        shape = list(per_band.shape[:-1]) + [self.band_index.shape[0]]
        return torch.gather(per_band, -1, self.band_index.expand(shape))

    def _complex_bins(self, per_band: Tensor) -> Tensor:
        """Real [..., F, K] -> complex [..., F, bins]: a real factor of a complex spectrum,
        expanded as complex (multiplying by a real tensor converts that tensor to a complex
        copy first, one more pass; (r + 0i)(a + bi) is r a + r b i exactly)."""
        return self._to_bins(torch.complex(per_band, torch.zeros_like(per_band)))

    def _gain_to(self, spec: Tensor, power: Tensor, most: float) -> Tensor:
        """Per-band amplitude gain [..., F, K] that brings `spec`'s band power to `power`, the
        power ratio at most `most` (clamped away from 0 too: sqrt's gradient there is infinite)."""
        ratio = (power + self.floor) / (self._band_power(spec) + self.floor)
        return ratio.clamp(1e-8, most).sqrt()

    def _shift_history(
        self, direct: Tensor, targets: Tensor, channels: int, states: list[Tensor]
    ) -> Tensor:
        """The decorrelator's history moves on by the frames of `direct` [B, C, F, bins], the
        `targets` channels' direct sound; returns those channels' history and direct sound,
        complex [B, C, max_delay + F, bins].

        The state holds every channel's last frames as (real, imaginary) pairs
        [N, max_delay, bins, 2], zeros for non-targets, so a channel that goes missing
        mid-stream starts from a defined state; only the target rows are read and written (the
        others shift in zeros), not an all-channel spectrum (at N=299 that cost ~10 ms a step)."""
        b, c, f, bins = direct.shape
        d = self.max_delay
        state = states[self.history.sid].reshape(b, channels, d, bins, 2)
        # view_as_real/complex without a permute (a permuted view_as_real's backward handed
        # view_as_complex a gradient without a unit-stride last dimension)
        full = torch.cat([torch.view_as_complex(state.index_select(1, targets)), direct], 2)
        shift = min(f, d)  # every row moves on by f frames; non-targets take in zeros
        shifted = F.pad(state[:, :, shift:], (0, 0, 0, 0, 0, shift))
        shifted.index_copy_(1, targets, torch.view_as_real(full[:, :, f:]))
        states[self.history.sid] = shifted.reshape(b, channels * d, bins * 2)
        return full

    def _decorrelate(
        self, direct: Tensor, power: Tensor, targets: Tensor, channels: int, states: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """A fixed all-pass per bin: each band delayed by 1-3 frames, each bin phase-rotated,
        then ducked so the fill never exceeds the direct sound's band power `power` (transients).
        `direct` [B, C, F, bins] are the `targets` channels' direct sound. Returns the fill before
        ducking and the ducking gain per band [B, C, F, K]: the caller folds that gain into the
        fill's mixing coefficient (one pass over the spectrum fewer)."""
        b, c, f, bins = direct.shape
        full = self._shift_history(direct, targets, channels, states)
        # bin k's frame t is history frame t + max_delay - delay(k): one gather (three masked
        # products and sums over every bin ran 4.4 vs 0.6 ms at 149 targets)
        start = self.max_delay - self.bin_delay  # [bins]
        index = torch.arange(f, device=full.device)[:, None] + start[None, :]  # [F, bins]
        delayed = torch.gather(full, 2, index[None, None].expand(b, c, f, bins))
        fill = delayed * torch.complex(self.decor_cos, self.decor_sin)
        return fill, self._gain_to(fill, power, 1.0)

    def _sources(self, present: Tensor) -> Tensor:
        """[B, N] presence -> [B, N, S] source channels per target: the S = min(N, MAX_SOURCES)
        present channels whose learned embeddings are most similar to the target's (absent ones
        only fill up when fewer than S are present; their weights are masked out)."""
        n = present.shape[1]
        if n <= self.max_sources:
            every = torch.arange(n, device=present.device)
            return every[None, None, :].expand(present.shape[0], n, n)
        affinity = self.embedding @ self.embedding.t()  # [N, N]
        score = affinity[None] - 1e4 * (~present)[:, None, :].to(affinity.dtype)
        return torch.topk(score, self.max_sources, dim=2).indices

    # ---- forward -----------------------------------------------------------------------------
    def _context(
        self, z: Tensor, pooled: Tensor, mean_power: Tensor, states: list[Tensor]
    ) -> Tensor:
        """Every channel's context [B, F, N, H] (frames-major) from the present channels' pooled
        features [B, F, H] and mean log band powers [B, F, K], the latents and the channel
        embeddings, through the temporal units."""
        lat = self.latent(z.transpose(1, 2)).repeat_interleave(self.frames_per_latent, 1)
        shared = torch.cat([pooled, lat, mean_power], -1)  # [B, F, 2H + K]
        # the first layer of `target` over [shared, embedding], as the sum of its two parts: the
        # shared part once per frame, the embedding's once per channel (not a [B, N, F, 2H+K+E]
        # input through one GEMM)
        split = shared.shape[-1]
        weight, bias = self.target[0].weight, self.target[0].bias
        per_frame = F.linear(shared, weight[:, :split], bias)  # [B, F, H]
        per_channel = F.linear(self.embedding, weight[:, split:])  # [N, H]
        hidden_in = self.target[1](per_frame[:, :, None] + per_channel[None, None])
        ctx = self.target[2](hidden_in)  # [B, F, N, H]
        for unit in self.temporal:
            ctx = unit(ctx, states)
        return ctx

    def _direct(
        self,
        x: Tensor,
        src: Tensor,
        slot: Tensor,
        ctx: Tensor,
        z: Tensor,
        present: Tensor,
        targets: Tensor,
    ) -> Tensor:
        """The `targets` channels' direct sound [B, C, F, bins]: per (target c, source p) a
        transform of the source spectra x [B, R, F, bins] (channel p's row is slot[p]; features
        src [B, R, F, H]; the targets' context ctx [B, C, F, H]; the last F frames of the
        latents' cue levels), over each target's `sources` present channels of highest learned
        affinity (all of them for N <= 8)."""
        b, frames, bins = x.shape[0], x.shape[2], x.shape[3]
        n = present.shape[1]
        c = targets.shape[0]
        hidden = src.shape[-1]
        sources = self._sources(present).index_select(1, targets)  # [B, C, S] channels
        s = sources.shape[-1]
        flat = sources.reshape(b, c * s)
        rows = slot.index_select(0, flat.reshape(-1)).reshape(b, c, s)  # their rows in x, src
        # pair_source is linear, so it commutes with picking each target's sources: one row per
        # source, not per (target, source) pair
        projected = self.pair_source(src)  # [B, R, F, H]
        index = rows.reshape(b, c * s)[:, :, None, None].expand(-1, -1, frames, hidden)
        picked = torch.gather(projected, 1, index)
        pair = self.act(
            self.pair_target(ctx)[:, :, None] + picked.reshape(b, c, s, frames, hidden)
        )  # [B, C, S, F, H]
        log_gain, phase, logit = self.pair_out(pair).chunk(3, 4)  # [B, C, S, F, K] each
        if self.cue_level is not None:  # [B, T/ratio, N*K] -> [B, C, 1, F, K], all sources
            level = self.cue_level(z.transpose(1, 2)).repeat_interleave(self.frames_per_latent, 1)
            level = level[:, level.shape[1] - frames :]
            level = level.reshape(b, frames, n, -1).index_select(2, targets)
            log_gain = log_gain + level.permute(0, 2, 1, 3)[:, :, None]
        source_present = torch.gather(present, 1, flat).reshape(b, c, s)
        logit = logit.masked_fill(~source_present[:, :, :, None, None], -1e4)
        # over present sources, per band and frame; absent ones weigh nothing even where none is
        # present (softmax alone would spread the weight evenly): a row with nothing present has
        # no direct sound, whatever its delay lines still hold, batched or alone
        share = torch.softmax(logit, dim=2) * source_present[:, :, :, None, None].to(logit.dtype)
        amp = share * torch.exp(log_gain.clamp(-12.0, 4.0))  # [B, C, S, F, K]
        gain = torch.polar(amp, phase)  # complex [B, C, S, F, K]
        # one source at a time (no [B, C, S, F, bins] tensor for large N); each target's source
        # rows are picked by index_select on the flattened [B*N] rows, and the gain is one complex
        # multiply-add (real/imag gathers with an index expanded over bins and frames, and four
        # real products, ran a 299-channel stream at 0.23x RT; this: 0.35x)
        direct = torch.zeros([b, c, frames, bins], dtype=x.dtype, device=x.device)
        for j in range(s):
            src_j = self._rows(x, rows[:, :, j])  # [B, C, F, bins]
            direct.addcmul_(src_j, self._to_bins(gain[:, :, j]))  # in place: not saved
        return direct

    def _synthesis(self, frames_out: Tensor, states: list[Tensor]) -> Tensor:
        """Synthesis-windowed frames [B, N, F, fft] -> overlap-added audio [B, N, F * hop]."""
        b, n, frames, _ = frames_out.shape
        # overlap-add: quarter q of frame f lands on hop block f + q (F.fold's col2im took
        # 9.3 ms at 299 channels x 8 frames, these in-place adds 0.25 ms)
        overlap = self.fft // self.hop
        parts = frames_out.reshape(b, n, frames, overlap, self.hop)
        buffer = frames_out.new_zeros(b, n, frames + overlap - 1, self.hop)
        for q in range(overlap):
            buffer[:, :, q : q + frames] += parts[:, :, :, q]
        t = frames * self.hop
        return self.overlap_add(buffer.reshape(b, n, t + self.fft - self.hop), t, states)

    def _latent_only(self, z: Tensor, dec_frames: Tensor, states: list[Tensor]) -> Tensor:
        """No audio: every channel is the decoder's, and a spectrum that passes through the STFT
        unchanged is its analysis frames x the synthesis window (no FFT pair). The stage still
        moves its state on to the same values as the full path with nothing present: the
        temporal units (their input has nothing pooled) and the decorrelator's history, which
        takes in silence (no channel present, no direct sound: `_direct`)."""
        b, n, frames, _ = dec_frames.shape
        pooled = dec_frames.new_zeros(b, frames, self.hidden)
        self._context(z, pooled, dec_frames.new_zeros(b, frames, self.used_bands), states)
        last = min(frames, self.max_delay)
        silence = torch.zeros(
            [b, n, last, self.fft // 2 + 1], dtype=torch.complex64, device=dec_frames.device
        )
        self._shift_history(silence, torch.arange(n, device=dec_frames.device), n, states)
        return self._synthesis(dec_frames * self.synthesis_window, states)

    def _log_power(self, x: Tensor) -> Tensor:
        """log10 band powers [B, N, F, K] of spectra [B, N, F, bins], centred on -50 dB and
        scaled to ~unit range for the linear layers."""
        return (torch.log10(self._band_power(x) + self.floor) + 5.0) / 3.0

    def _features(self, log_power: Tensor, channels: Tensor) -> Tensor:
        """Per row and frame features [B, R, F, H] of log band powers [B, R, F, K], row r being
        channel channels[r]."""
        b, r, frames, _ = log_power.shape
        emb = self.embedding.index_select(0, channels)
        emb = emb[None, :, None, :].expand(b, r, frames, emb.shape[1])
        return self.source(torch.cat([log_power, emb], -1))

    def forward(
        self,
        z: Tensor,
        decoded: Tensor,
        audio: Optional[Tensor],  # noqa: UP045
        mask: Optional[Tensor],  # noqa: UP045
        states: list[Tensor],
    ) -> Tensor:
        """z [B, D, T/ratio], decoded [B, N, T] (PQMF-delayed), audio [B, N, T] (raw input, only
        present channels used) and mask [B, N] or None (latent-only) -> [B, N, T]."""
        b, n, t = decoded.shape
        latent_only = audio is None or mask is None
        if audio is None or mask is None:
            present = torch.zeros(b, n, dtype=torch.bool, device=decoded.device)
            audio = torch.zeros_like(decoded)
        else:
            present = mask.to(torch.bool)
        audio = torch.where(present[:, :, None], audio, torch.zeros_like(audio))
        aligned = self.present_delay(audio, states)[..., :t]
        x_framed = self.present_frames(aligned, states)
        dec_framed = self.decoded_frames(decoded, states)
        if latent_only:
            return self._latent_only(z, self._frames(dec_framed), states)
        # Only channels missing in some row are targets: a present channel passes through, so
        # building it would be thrown away.
        targets = (~present).any(0).nonzero()[:, 0]  # [C]
        m = present.to(decoded.dtype)  # [B, N]
        any_present = m.amax(1) > 0  # [B]

        # Spectra and features of the channels present in some row only (the others could only
        # be sources of weight 0), plus one zero row standing in for sources present nowhere:
        # channel p is row slot[p]
        present_somewhere = present.any(0).nonzero()[:, 0]  # [P]
        p = present_somewhere.shape[0]
        slot = torch.full([n], p, dtype=torch.long, device=decoded.device)
        slot = slot.index_copy(0, present_somewhere, torch.arange(p, device=decoded.device))
        channel_of_row = self._with_spare(present_somewhere)  # the zero row's features: any
        x = self._rfft_rows(x_framed, channel_of_row)
        # features per frame, pooled over the present channels
        log_power = self._log_power(x)  # [B, P + 1, F, K]
        src = self._features(log_power, channel_of_row)  # [B, P + 1, F, H]
        weights = m.index_select(1, present_somewhere)[:, :, None, None]
        count = m.sum(1).clamp(min=1.0)[:, None, None]
        pooled = (src[:, :p] * weights).sum(1) / count  # [B, F, H]
        mean_power = (log_power[:, :p] * weights).sum(1) / count  # [B, F, K]
        ctx = self._context(z, pooled, mean_power, states)

        ctx = ctx.index_select(2, targets).transpose(1, 2)  # [B, C, F, H]
        direct = self._direct(x, src, slot, ctx, z, present, targets)
        angle_logit, gate_logit = self.target_out(ctx).chunk(2, 3)  # [B, C, F, K] each
        angle = torch.sigmoid(angle_logit) * (math.pi / 2)
        direct_power = self._band_power(direct)
        fill, ducking = self._decorrelate(direct, direct_power, targets, n, states)
        # the decoder's STFT for the target channels only (the others pass through)
        dec_t = self._rfft_rows(dec_framed, self._with_spare(targets))[:, : targets.shape[0]]
        # per-band coefficients; a row with nothing present takes the decoder's spectrum as it is
        # (coefficients 0, 0, 1 and level 1: exact), which spares a select over the spectrum
        on = any_present[:, None, None, None]
        zero, one = torch.zeros_like(angle), torch.ones_like(angle)
        mix = self._complex_bins(torch.where(on, angle.cos(), zero)) * direct
        mix = mix.addcmul(self._complex_bins(torch.where(on, angle.sin() * ducking, zero)), fill)
        mix = mix.addcmul(
            self._complex_bins(torch.where(on, torch.sigmoid(gate_logit), one)), dec_t
        )
        # the level is the direct sound's, whatever the mix: fill and decoder residual shape the
        # texture and coherence only, so the predicted gains alone set the level differences
        level = torch.where(on, self._gain_to(mix, direct_power, self.max_boost), one)
        built = mix * self._complex_bins(level)
        keep_t = present.index_select(1, targets)[:, :, None, None]
        own = self._rows(x, slot.index_select(0, targets)[None].expand(b, -1))
        y_t = torch.where(keep_t, own, built)

        # synthesis. A channel present in every row is its own STFT, so its frames are the
        # analysis frames x the synthesis window (perfect reconstruction, no FFT pair); only the
        # targets' spectra are inverted
        frames_out = x_framed.unfold(-1, self.fft, self.hop) * self.passthrough_window
        frames_out.index_copy_(1, targets, self._irfft(y_t))
        return self._synthesis(frames_out, states)
