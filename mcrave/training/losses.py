"""Reconstruction losses: multiscale spectral distance per channel and an inter-channel term.

Every loss is a mean over (item, channel) of per-item quantities, so averaging it over data-
parallel ranks equals computing it on the whole global batch (2 ranks x b == 1 process x 2b).
"""

from __future__ import annotations

import itertools
import math

import torch

EPS = 1e-7  # log floor of the spectral distance (RAVE)
# Below this RMS (-60 dBFS) a crop's linear term is judged on an absolute scale: normalising by a
# near-silent crop's own power turned an ordinary output level into errors of 10^4 per batch.
SILENCE_RMS = 1e-3
SCALES = (2048, 1024, 512, 256, 128)


def usable_scales(length: int, scales: tuple[int, ...] = SCALES) -> tuple[int, ...]:
    """STFT sizes that fit a signal of `length` samples (at least the smallest one)."""
    fit = tuple(n for n in scales if n <= length)
    return fit or (min(scales),)


def _stft(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex STFT of (B, C, T) -> (B, C, F, frames), Hann window, hop n/4."""
    b, c, t = x.shape
    if t < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - t))
        t = n_fft
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(
        x.reshape(b * c, t),
        n_fft,
        hop_length=n_fft // 4,
        window=window,
        center=False,
        return_complex=True,
    )
    return spec.reshape(b, c, *spec.shape[-2:])


def _power(spec: torch.Tensor) -> torch.Tensor:
    """|X|^2 without abs(): abs() of a complex zero has a NaN gradient, and an exactly silent
    output (the spatial stage copying digital silence) would poison the whole step."""
    return spec.real.square() + spec.imag.square()


def _magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|X| with a finite gradient at zero (floored far below the log term's EPS)."""
    return (_power(spec) + EPS * EPS).sqrt()


def spectral_distance(
    target: torch.Tensor,
    estimate: torch.Tensor,
    scales: tuple[int, ...] | None = None,
    groups: int | None = None,
) -> torch.Tensor:
    """RAVE's multiscale spectral distance, per channel group, averaged (scalar).

    Per scale: mean((X-Y)^2)/mean(X^2) + mean|log(X+eps) - log(Y+eps)| on magnitudes. The linear
    term is normalised per item and per group of adjacent channels (default: each channel alone;
    PQMF bands pass groups=N so a channel's near-empty bands share its level), with a floor at
    1e-3 of the item's mean power (a silent channel) and at the power of `SILENCE_RMS` white
    noise (a silent crop), so neither blows up.
    """
    scales = scales or usable_scales(target.shape[-1])
    b, c = target.shape[:2]
    groups = groups or c
    total = target.new_zeros(())
    for n in scales:
        x = _magnitude(_stft(target, n))
        y = _magnitude(_stft(estimate, n))
        power = x.pow(2).mean(dim=(-2, -1)).reshape(b, groups, -1).mean(-1)
        error = (x - y).pow(2).mean(dim=(-2, -1)).reshape(b, groups, -1).mean(-1)
        silence = SILENCE_RMS**2 * 0.375 * n  # E|X|^2 of white noise under a Hann window
        floor = torch.clamp(1e-3 * power.mean(dim=1, keepdim=True), min=silence)
        linear = error / torch.maximum(power, floor)
        log = (torch.log(x + EPS) - torch.log(y + EPS)).abs().mean(dim=(-2, -1))
        total = total + linear.mean() + log.mean()
    return total


def band_matrix(
    n_fft: int, sample_rate: int, bands: int, device: torch.device, f_lo: float = 50.0
) -> torch.Tensor:
    """(bands, n_fft//2+1) 0/1 matrix grouping STFT bins into log-spaced bands up to Nyquist."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, device=device)
    edges = torch.logspace(math.log10(f_lo), math.log10(sample_rate / 2), bands + 1, device=device)
    edges[0] = 0.0
    edges[-1] = sample_rate  # include Nyquist
    return ((freqs[None] >= edges[:-1, None]) & (freqs[None] < edges[1:, None])).float()


def _fitted_bands(
    signal: torch.Tensor, n_fft: int, sample_rate: int, bands: int
) -> tuple[int, torch.Tensor]:
    """An STFT size that fits `signal` and its non-empty band matrix."""
    n_fft = min(n_fft, max(64, 2 ** int(math.log2(signal.shape[-1]))))
    weights = band_matrix(n_fft, sample_rate, bands, signal.device)
    return n_fft, weights[weights.sum(dim=1) > 0]


def interchannel_loss(
    target: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    bands: int = 16,
    ild_clip_db: float = 40.0,
) -> torch.Tensor:
    """Per-band level difference and coherence errors over every channel pair (scalar).

    ILD: per band and frame, 10 log10 of the pair's power ratio (clipped to +-40 dB), error in
    units of 10 dB. ICC: per band over the crop, |sum X_i X_j*| / sqrt(P_i P_j). Zero for N = 1.
    """
    channels = target.shape[1]
    if channels < 2:
        return target.new_zeros(())
    n_fft, weights = _fitted_bands(target, n_fft, sample_rate, bands)
    pairs = torch.tensor(list(itertools.combinations(range(channels), 2)), device=target.device)
    x_spec, y_spec = _stft(target, n_fft), _stft(estimate, n_fft)
    # a floor relative to each item's power keeps silent bands from dominating the ILD
    floor = 1e-5 * _power(x_spec).mean(dim=(1, 2, 3)).clamp_min(EPS)[:, None, None, None]
    cues = []
    for spec in (x_spec, y_spec):
        power = torch.einsum("bcft,kf->bckt", _power(spec), weights) + floor
        ild = 10 * torch.log10(power[:, pairs[:, 0]] / power[:, pairs[:, 1]])
        cross = spec[:, pairs[:, 0]] * spec[:, pairs[:, 1]].conj()
        cross = _magnitude(torch.einsum("bpft,kf->bpk", cross, weights.to(cross.dtype)))
        total = power.sum(dim=-1)
        icc = cross / torch.sqrt(total[:, pairs[:, 0]] * total[:, pairs[:, 1]])
        cues.append((ild.clamp(-ild_clip_db, ild_clip_db), icc))
    (ild_x, icc_x), (ild_y, icc_y) = cues
    ild_err = (ild_x - ild_y).abs().mean() / 10
    icc_err = (icc_x - icc_y).abs().mean()
    return ild_err + icc_err


def band_level_loss(
    target: torch.Tensor,
    estimate: torch.Tensor,
    sample_rate: int,
    n_fft: int = 1024,
    bands: int = 16,
) -> torch.Tensor:
    """Mean |log10| ratio of per-band, per-frame power of `estimate` to `target` ([B, C, T]).

    Used on the "side" signal (missing channel minus the present ones): it sets the image width
    on a level scale, without the spectral distance's per-bin log term, which would demand the
    side's fine structure (unknowable from the present channels) and trade away the mid's.
    Silent bands are floored at 1e-4 of the item's mean band power.
    """
    n_fft, weights = _fitted_bands(target, n_fft, sample_rate, bands)
    levels = [
        torch.einsum("bcft,kf->bckt", _power(_stft(s, n_fft)), weights) for s in (target, estimate)
    ]
    floor = 1e-4 * levels[0].mean(dim=(1, 2, 3), keepdim=True).clamp_min(EPS)
    return (torch.log10(levels[1] + floor) - torch.log10(levels[0] + floor)).abs().mean()
