"""Multi-period (2,3,5,7,11) + multi-scale (3) discriminator judging all channels jointly.

Hinge loss and relative-L1 feature matching, applied once (RAVE applies it twice: a quirk).
Widths start at `disc_capacity` and double per stride-4 layer (RAVE: 96..768).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from mcrave.model.layers import LEAKY_SLOPE

PERIODS = (2, 3, 5, 7, 11)
SCALES = 3
LAYERS = 4


def _widths(capacity: int) -> list[int]:
    return [capacity * 2**i for i in range(LAYERS)]


class PeriodDiscriminator(nn.Module):
    """Folds the signal into (T/p, p) and convolves along time with 2-D (k, 1) kernels."""

    def __init__(self, channels: int, period: int, capacity: int) -> None:
        super().__init__()
        self.period = period
        layers, width = [], channels
        for out in _widths(capacity):
            layers.append(weight_norm(nn.Conv2d(width, out, (5, 1), (4, 1), padding=(2, 0))))
            width = out
        layers.append(weight_norm(nn.Conv2d(width, width, (5, 1), padding=(2, 0))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(width, 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, c, t = x.shape
        pad = (-t) % self.period
        x = nn.functional.pad(x, (0, pad), mode="reflect" if pad < t else "constant")
        x = x.reshape(b, c, -1, self.period)
        return _features(self.layers, self.out, x)


def _features(layers: nn.ModuleList, out: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's activation (for feature matching), then the logits."""
    features = []
    for layer in layers:
        x = nn.functional.leaky_relu(layer(x), LEAKY_SLOPE)
        features.append(x)
    features.append(out(x))
    return features


class ScaleDiscriminator(nn.Module):
    """1-D strided convs on the waveform (average-pooled by 2**scale)."""

    def __init__(self, channels: int, capacity: int) -> None:
        super().__init__()
        layers = [weight_norm(nn.Conv1d(channels, capacity, 15, padding=7))]
        width = capacity
        for out in _widths(capacity)[1:] + [_widths(capacity)[-1]]:
            groups = 4 if width % 4 == 0 and out % 4 == 0 else 1
            layers.append(weight_norm(nn.Conv1d(width, out, 41, 4, padding=20, groups=groups)))
            width = out
        layers.append(weight_norm(nn.Conv1d(width, width, 5, padding=2)))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv1d(width, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return _features(self.layers, self.out, x)


class Discriminator(nn.Module):
    """All sub-discriminators; forward returns one feature list (last entry = logits) each."""

    def __init__(self, channels: int, capacity: int) -> None:
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(channels, p, capacity) for p in PERIODS)
        self.scales = nn.ModuleList(ScaleDiscriminator(channels, capacity) for _ in range(SCALES))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = [d(x) for d in self.periods]
        for i, d in enumerate(self.scales):
            pooled = nn.functional.avg_pool1d(x, 2**i, 2**i) if i else x
            outputs.append(d(pooled))
        return outputs


def _per_item_mean(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def discriminator_loss(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Hinge loss for D, summed over sub-discriminators."""
    loss = real[0][-1].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        loss = loss + torch.relu(1 - r[-1]).mean() + torch.relu(1 + f[-1]).mean()
    return loss


def generator_losses(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial hinge term, relative-L1 feature matching), each summed over sub-discriminators.

    Feature matching is |f_real - f_fake| / |f_real| per item, averaged over layers; real features
    are detached so it only trains the generator.
    """
    adv = fake[0][-1].new_zeros(())
    fm = fake[0][-1].new_zeros(())
    for r, f in zip(real, fake, strict=True):
        adv = adv - f[-1].mean()
        terms = [
            (
                _per_item_mean((fr.detach() - ff).abs())
                / (_per_item_mean(fr.detach().abs()) + 1e-7)
            ).mean()
            for fr, ff in zip(r[:-1], f[:-1], strict=True)
        ]
        fm = fm + torch.stack(terms).mean()
    return adv, fm
