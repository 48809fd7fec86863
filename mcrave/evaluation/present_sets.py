"""Which channel subsets are given to the model ("present sets") in an evaluation."""

from __future__ import annotations

import numpy as np

from mcrave.present import parse_present

# above this many channels, `auto` samples this many singles and leave-one-outs instead of all
MAX_AUTO_PER_KIND = 8


def auto_present_sets(channels: int) -> list[tuple[int, ...]]:
    """Each single channel, each leave-one-out, then all channels (deduplicated, in that order).

    For N > 8 the singles and leave-one-outs are taken at 8 evenly spaced channels, so the
    selection is deterministic and covers the array.
    """
    picks = range(channels)
    if channels > MAX_AUTO_PER_KIND:
        picks = np.unique(np.linspace(0, channels - 1, MAX_AUTO_PER_KIND).round().astype(int))
    everything = tuple(range(channels))
    sets = [(int(i),) for i in picks]
    sets += [tuple(c for c in everything if c != i) for i in picks]
    sets.append(everything)
    unique: list[tuple[int, ...]] = []
    for s in sets:
        if s and s not in unique:
            unique.append(s)
    return unique


def sweep_present_sets(channels: int, per_size: int = 2) -> list[tuple[int, ...]]:
    """Present sets of 1, 2, 4, ... and N-1 channels, `per_size` of each (evenly spaced channels,
    rotated), for quality against the number of present channels."""
    sizes = sorted(
        {k for k in (2**i for i in range(channels.bit_length())) if k < channels} | {channels - 1}
    )
    sets: list[tuple[int, ...]] = []
    for k in (k for k in sizes if k >= 1):
        for r in range(per_size):
            chosen = tuple(
                sorted({(int(round(i * channels / k)) + r) % channels for i in range(k)})
            )
            if len(chosen) == k and chosen not in sets:
                sets.append(chosen)
    return sets


def parse_present_sets(spec: str, channels: int, names: tuple[str, ...]) -> list[tuple[int, ...]]:
    """`auto`, `sweep` or one present set as `mcrave.present.parse_present` reads it ("1,3",
    "R") -> present sets.

    Raises ValueError naming the bad token.
    """
    if spec.strip() == "auto":
        return auto_present_sets(channels)
    if spec.strip() == "sweep":
        return sweep_present_sets(channels)
    return [parse_present(spec, channels, names)]
