"""Missing-channel evaluation: metrics, baselines and the `mcrave eval` pipeline.

The metrics and baselines are plain numpy (importing them does not load torch), so training
validation and notebooks can use them directly.
"""

from mcrave.evaluation.baselines import wiener_baselines
from mcrave.evaluation.metrics import METRICS, d_snr, score, score_systems, si_sdr, w_err
from mcrave.evaluation.spatial import band_cues, cue_errors
from mcrave.evaluation.spectral import mss

__all__ = [
    "METRICS",
    "band_cues",
    "cue_errors",
    "d_snr",
    "mss",
    "score",
    "score_systems",
    "si_sdr",
    "w_err",
    "wiener_baselines",
]
