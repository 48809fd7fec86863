"""Latent bit rates of a model: what sending its latents costs, raw and information-wise."""

from __future__ import annotations

import math

import numpy as np
import torch

from mcrave.model import MCRave


def latent_bitrate(model: MCRave, files: list[np.ndarray]) -> dict[str, float]:
    """Raw float32 latent rate, and a KL-based estimate from encoding all channels of each file
    [N, T] (averaged over all their latent frames).

    The KL of the posterior N(mean, scale^2) to the N(0, 1) prior, in bits per second, is the
    bits-back rate an ideal entropy coder would need for the latents at the posterior's precision.
    """
    frames_per_second = model.sample_rate / model.ratio
    device = next(model.parameters()).device
    mask = torch.ones(1, model.channels, dtype=torch.bool, device=device)
    nats, frames = 0.0, 0
    for audio in files:
        usable = (audio.shape[-1] // model.ratio) * model.ratio
        x = torch.as_tensor(np.asarray(audio[:, :usable], dtype=np.float32), device=device)[None]
        with torch.no_grad():
            mean, scale = model.encode(x, mask)  # [1, D, frames]
        mean, scale = mean.double(), scale.double()
        kl = 0.5 * (mean**2 + scale**2 - 2.0 * torch.log(scale) - 1.0)  # nats per dim and frame
        nats += float(kl.sum())
        frames += mean.shape[-1]
    return {
        "latent_frames_per_second": frames_per_second,
        "latent_size": int(model.latent_size),
        "raw_bits_per_second": frames_per_second * model.latent_size * 32,
        "kl_bits_per_second": nats / max(frames, 1) / math.log(2.0) * frames_per_second,
        # the spatial stage also needs each present channel's audio at the decoder (f32 on the wire)
        "present_audio_bits_per_second_per_channel": model.sample_rate * 32
        if model.cfg.spatial
        else 0,
    }
