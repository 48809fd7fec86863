"""Perceptual (ERB-spaced) band layout of an rfft, shared by the spatial stage and the encoder's
band-level cues."""

from __future__ import annotations

import numpy as np


def erb_band_index(fft: int, sample_rate: int, bands: int) -> np.ndarray:
    """Band of each rfft bin: edges equally spaced on the ERB scale, every band >= 1 bin."""
    bins = fft // 2 + 1
    erb = lambda f: 21.4 * np.log10(1 + 0.00437 * f)  # noqa: E731
    freqs = np.arange(bins) * sample_rate / fft
    scaled = erb(freqs) / erb(sample_rate / 2) * bands
    index = np.minimum(scaled.astype(np.int64), bands - 1)
    # low bins are wider than their ERB band: renumber so no band is empty
    _, dense = np.unique(index, return_inverse=True)
    return dense
