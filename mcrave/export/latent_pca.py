"""Latent dimensions ranked by explained variance, for the nn~ export.

Max users turn the first few latent knobs; a VAE's raw dimensions come in no order, and many
collapse to the prior. Like RAVE's export, the `.ts` rotates latents onto their principal axes
(fitted on the training data's latents, the posterior means) so that dimension 0 moves the most
and the last ones the least. The rotation is orthonormal: `decode` undoes it exactly, so the
audio path is unchanged. The fit travels in the checkpoint (`latent_pca`), written by the trainer
at each validation or by `mcrave export --pca-data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mcrave.model import MCRave


@dataclass(frozen=True)
class LatentPCA:
    mean: Tensor  # [D]
    components: Tensor  # [D, D], row k = k-th principal axis (largest variance first)
    explained: Tensor  # [D], fraction of the total variance along each axis

    @classmethod
    def fit(cls, latents: Tensor) -> LatentPCA:
        """`latents` [B, D, T] (or [D, T]): every frame is one sample."""
        d = latents.shape[-2]
        samples = latents.detach().double().transpose(-1, -2).reshape(-1, d)
        if samples.shape[0] < 2:
            raise ValueError("need at least two latent frames to rank the dimensions")
        mean = samples.mean(0)
        centred = samples - mean
        variances, axes = torch.linalg.eigh(centred.T @ centred / (samples.shape[0] - 1))
        order = torch.argsort(variances, descending=True)
        variances, axes = variances[order].clamp_min(0), axes[:, order].T
        # a fixed sign per axis (largest entry positive), so refits of similar data agree
        signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
        axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
        total = variances.sum().clamp_min(torch.finfo(torch.float64).tiny)
        return cls(mean.float(), axes.float(), (variances / total).float())

    @classmethod
    def identity(cls, latent_size: int) -> LatentPCA:
        """No ranking (a model with no fit): the export's latents are the model's own."""
        flat = torch.full((latent_size,), 1.0 / latent_size)
        return cls(torch.zeros(latent_size), torch.eye(latent_size), flat)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "components": self.components, "explained": self.explained}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatentPCA:
        return cls(data["mean"].float(), data["components"].float(), data["explained"].float())

    def rotate(self, z: Tensor) -> Tensor:
        """Model latents [B, D, T] -> ranked latents."""
        return self.components @ (z - self.mean[:, None])

    def unrotate(self, z: Tensor) -> Tensor:
        """Ranked latents [B, D, T] -> model latents."""
        return self.components.T @ z + self.mean[:, None]


@torch.no_grad()
def fit_on_audio(model: MCRave, files: Sequence[Path], max_seconds: float = 60.0) -> LatentPCA:
    """Fit on the posterior means of `files` (all channels present, up to `max_seconds` each)."""
    from mcrave.audio import read_audio, resample

    latents = []
    for path in files:
        audio, rate = read_audio(path)
        if audio.shape[0] != model.channels:
            raise ValueError(f"{path}: has {audio.shape[0]} channels, the model {model.channels}")
        audio = resample(audio, rate, model.sample_rate)[:, : int(max_seconds * model.sample_rate)]
        x = torch.from_numpy(audio)[None]
        mask = torch.ones(1, model.channels, dtype=torch.bool)
        mean, _ = model.encode(x[..., : x.shape[-1] - x.shape[-1] % model.ratio], mask)
        latents.append(mean[0])
    return LatentPCA.fit(torch.cat(latents, dim=-1))
