"""Tiny models and signals for the core tests."""

import torch

from mcrave.config import preset
from mcrave.model import MCRave


def tiny_model(channels: int = 2, projection: str = "identity", seed: int = 0) -> MCRave:
    torch.manual_seed(seed)
    model = MCRave(preset("test", channels=channels, projection=projection).model)
    # an untrained net outputs near-silence; perturb weights so comparisons are not trivially 0 == 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
