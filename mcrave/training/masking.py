"""Random channel masks for masked training: all present, a random subset, or one channel.

Masks are drawn for the *global* batch from a step-seeded generator and then sliced per rank, so
one process with batch 2b and two ranks with batch b see the same masks (and a resumed run too).
"""

from __future__ import annotations

import torch

from mcrave.config import TrainConfig

KINDS = ("all", "single", "subset")


def mask_probabilities(cfg: TrainConfig) -> torch.Tensor:
    """The three kind probabilities (all, single, subset), normalised; rejects a bad config."""
    p = torch.tensor([cfg.mask_p_all, cfg.mask_p_single, cfg.mask_p_subset], dtype=torch.float64)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"mask probabilities must be >= 0 and not all zero, got {p.tolist()}")
    return p / p.sum()


def random_masks(
    batch: int, channels: int, cfg: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """(batch, channels) bool, True = present; every row has at least one present channel.

    "subset" keeps 1..N-1 channels chosen uniformly (for N = 2 it coincides with "single");
    with one channel every mask is all-present.
    """
    masks = torch.ones(batch, channels, dtype=torch.bool)
    if channels == 1:
        return masks
    kinds = torch.multinomial(mask_probabilities(cfg), batch, replacement=True, generator=generator)
    for row, kind in enumerate(kinds.tolist()):
        order = torch.randperm(channels, generator=generator)
        if KINDS[kind] == "single":
            keep = 1
        elif KINDS[kind] == "subset":
            keep = int(torch.randint(1, channels, (1,), generator=generator))
        else:
            continue
        masks[row] = False
        masks[row, order[:keep]] = True
    return masks
