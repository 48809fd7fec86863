"""The issue's "must show" comparisons: does the model beat the baselines it has to beat?

Gated on the spectral and spatial metrics only: a generative decoder does not reproduce phase, so
si_sdr and d_snr are reported, not judged.
"""

from __future__ import annotations

import math

# (metric, baseline): the model's mean must be strictly lower (all these are lower-is-better)
GATES = (
    ("mss", "copy"),
    ("mss", "wiener_pm"),
    ("mss", "copy_decoded"),
    ("d_ild", "copy"),
    ("d_ild", "wiener_pm"),
    ("d_icc", "copy"),
    ("d_icc", "wiener_pm"),
)
W_ERR_TARGET_DB = 3.0  # |w_err| target (dB) the spatial-decoder issue sets
# the spatial path must also beat the same checkpoint's latent-only path on these
LATENT_ONLY_METRICS = ("mss", "d_ild", "d_icc")


def gate_key(metric: str, baseline: str) -> str:
    return f"{metric}<{baseline}"


def check_gates(table: dict[str, dict[str, float]], system: str = "model") -> dict[str, bool]:
    """{"mss<copy": True, ..., "abs_w_err<=3": ...} for one summary table; {} without the system.

    With a latent-only row (`model_latent`, models with a spatial stage) the spatial path must
    beat it too: lower mss, d_ild, d_icc and a smaller |w_err|."""
    if system not in table:
        return {}
    ours = table[system]
    out = {
        gate_key(metric, baseline): bool(ours[metric] < table[baseline][metric])
        for metric, baseline in GATES
        if baseline in table
    }
    w = ours["w_err"]
    out[f"abs_w_err<={W_ERR_TARGET_DB:g}"] = bool(not math.isnan(w) and abs(w) <= W_ERR_TARGET_DB)
    latent = table.get("model_latent")
    if latent is not None and system != "model_latent":
        for metric in LATENT_ONLY_METRICS:
            out[gate_key(metric, "model_latent")] = bool(ours[metric] < latent[metric])
        out["abs_w_err<model_latent"] = bool(abs(w) < abs(latent["w_err"]))
    return out
