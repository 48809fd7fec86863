"""Scores a model and the baselines on each file, present set and missing channel.

Protocol: every system sees the whole file, the Wiener baselines
are fitted on its first half, and everything is scored on the second half, so the model and the
baselines are judged on the same held-out span with the same context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mcrave.evaluation.alignment import correlation_matrix, nearest_present, xcorr_peak
from mcrave.evaluation.baselines import phase_blind_oracle, wiener_baselines
from mcrave.evaluation.metrics import score_systems
from mcrave.evaluation.sources import EvalFile

InferFn = Callable[[np.ndarray, tuple[int, ...], str], np.ndarray]
"""(audio [N, T], present set, mode) -> all channels [N, T], latency-compensated. Modes:
"spatial" (encoder and spatial stage see the present channels), "latent" (latent-only decoding
from the present channels' latents) and "coded" (encoder sees all channels, the stage only the
present ones' audio)."""

BASELINES = (
    "silence",
    "copy",
    "copy_decoded",
    "wiener",
    "wiener_pm",
    "oracle",
    "phase_blind",
)
LATENT_ONLY = "model_latent"  # the same checkpoint decoding every channel from its latents
CODED = "model_coded"  # latents of all channels + the present channels' audio
PASSTHROUGH_SYSTEMS = ("model_pt", "coded_pt")
RECON = "recon_all"
NEAREST_MAX_LAG_S = 0.01  # spaced pairs correlate at 1-2 ms; 10 ms covers room-sized arrays


@dataclass
class Example:
    """Scored-span signals of one case, kept for the spectrogram figure."""

    label: str
    sample_rate: int
    signals: dict[str, np.ndarray]  # "truth", "model", "wiener_pm", ... -> [T/2]


@dataclass
class FileResult:
    rows: list[dict] = field(default_factory=list)
    latency: list[dict] = field(default_factory=list)  # per channel: residual lag, peak
    example: Example | None = None


def case_label(present: tuple[int, ...], missing: int, names: tuple[str, ...]) -> str:
    return f"{{{','.join(names[i] for i in present)}}} -> {names[missing]}"


def _candidates(
    audio: np.ndarray,
    out: np.ndarray,
    latent: np.ndarray | None,
    coded: np.ndarray | None,
    recon: np.ndarray,
    blind: dict[int, np.ndarray],
    present: tuple[int, ...],
    c: int,
    p: int,
    fit: slice,
    scored: slice,
    passthrough: bool,
) -> dict:
    """system -> (c_hat [T], p_out [T]): the output pair each system produces. `latent` is the
    latent-only output for the same present set (None: the model has no spatial stage, so `out`
    is already that)."""
    x_p = audio[p]
    decoded = out if latent is None else latent
    wiener = wiener_baselines(audio[list(present)].astype(np.float64), audio[c], fit, scored)
    cands = {
        "silence": (np.zeros_like(x_p), x_p),
        "copy": (x_p, x_p),
        # the decoder's own version of p pasted into c's slot: copy, but through the codec
        "copy_decoded": (decoded[p], decoded[p]),
        **{name: (est, x_p) for name, est in wiener.items()},
        "phase_blind": (blind[c], x_p),
        "model": (out[c], out[p]),
    }
    if latent is not None:
        cands[LATENT_ONLY] = (latent[c], latent[p])
    if coded is not None:
        cands[CODED] = (coded[c], coded[p])
    if passthrough:
        cands["model_pt"] = (out[c], x_p)  # present channels copied through, c from the decoder
        cands["coded_pt"] = (recon[c], x_p)  # the forum's case: latents of all channels, p copied
    return cands


def evaluate_file(
    file: EvalFile,
    infer: InferFn,
    present_sets: list[tuple[int, ...]],
    sample_rate: int,
    names: tuple[str, ...],
    passthrough: bool = False,
    keep_example: bool = False,
    spatial: bool = False,
) -> FileResult:
    """Rows of metrics for one file: one per (present set, missing channel, system), plus the
    all-present reconstruction of every channel (the codec's: latent-only). With `spatial` the
    model's latent-only and coded paths are scored too."""
    audio = file.audio.astype(np.float64)
    n, length = audio.shape
    half = length // 2
    fit, scored = slice(0, half), slice(half, length)
    corr = correlation_matrix(audio, fit, int(NEAREST_MAX_LAG_S * sample_rate))
    everything = tuple(range(n))
    result = FileResult()

    def run(present: tuple[int, ...], mode: str = "spatial") -> np.ndarray:
        out = infer(file.audio, present, mode).astype(np.float64)
        if not np.all(np.isfinite(out)):
            raise ValueError(f"{file.name}: model output is not finite with channels {present}")
        return out

    recon = run(everything, "latent")
    # once per file and missing channel: a channel is the missing one in many present sets
    missing = {c for present in present_sets for c in everything if c not in present}
    blind = {c: phase_blind_oracle(audio[c], seed=c) for c in sorted(missing)}

    def add_rows(label, present, c, p, cands):
        scores = score_systems(
            audio[c, scored],
            audio[p, scored],
            {name: (c_hat[scored], p_out[scored]) for name, (c_hat, p_out) in cands.items()},
            sample_rate,
        )
        for system, metrics in scores.items():
            result.rows.append(
                {
                    "file": file.name,
                    "case": label,
                    "present": list(present),
                    "missing": c,
                    "nearest": p,
                    "system": system,
                    **metrics,
                }
            )

    for present in present_sets:
        if len(present) == n:
            continue  # all present: scored below as the reconstruction
        out = run(present)
        latent = run(present, "latent") if spatial else None
        coded = run(present, "coded") if spatial else None
        for c in (i for i in everything if i not in present):
            p = nearest_present(corr, c, list(present))
            label = case_label(present, c, names)
            cands = _candidates(
                audio, out, latent, coded, recon, blind, present, c, p, fit, scored, passthrough
            )
            add_rows(label, present, c, p, cands)
            if keep_example and result.example is None:
                signals = {
                    "truth": audio[c],
                    "model": out[c],
                    "wiener_pm": cands["wiener_pm"][0],
                    "present (copy)": audio[p],
                }
                result.example = Example(
                    f"{Path(file.name).name}: {label}",
                    sample_rate,
                    {k: v[scored] for k, v in signals.items()},
                )
    for c in everything:
        if n > 1:
            p = nearest_present(corr, c, [q for q in everything if q != c])
            add_rows(f"all -> {names[c]}", everything, c, p, {RECON: (recon[c], recon[p])})
        lag, peak = xcorr_peak(audio[c, scored], recon[c, scored], max_lag=length // 4)
        result.latency.append({"file": file.name, "channel": c, "residual_lag": lag, "peak": peak})
    return result
