"""PNG figures of an evaluation: metric bars per system, and spectrograms true vs inferred."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mcrave.atomic import atomic_write_bytes  # noqa: E402
from mcrave.evaluation.metrics import LOWER_IS_BETTER, METRICS  # noqa: E402
from mcrave.evaluation.runner import Example  # noqa: E402
from mcrave.evaluation.spectral import stft  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# the systems a reader compares; a panel's scale is set by these, so a far-off baseline (silence
# scores mss ~70) cannot flatten the bars that matter
FOCUS = ("model", "model_coded", "model_latent", "coded", "copy", "wiener_pm", "wiener")


def _direction(metric: str) -> str:
    if metric in LOWER_IS_BETTER:
        return "lower is better"
    return "best at 0" if metric == "w_err" else "higher is better"


def metric_bars(table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """One panel per metric, one horizontal bar per system, values written on the bars. The
    scale fits the model, copy and Wiener rows; bars beyond it are cut and marked with their
    value, infinite or missing values are marked, not drawn."""
    systems = list(table)
    fig, axes = plt.subplots(2, 4, figsize=(15, 1.4 + 0.55 * len(systems)))
    colours = ["tab:red" if s.startswith(("model", "coded")) else "tab:gray" for s in systems]
    rows = np.arange(len(systems))
    for ax, metric in zip(axes.flat, METRICS, strict=False):
        values = [table[s][metric] for s in systems]
        finite = [v for v in values if math.isfinite(v)]
        focus = [table[s][metric] for s in systems if s in FOCUS] or finite
        focus = [v for v in focus if math.isfinite(v)] or [0.0]
        low, high = min(0.0, *focus), max(0.0, *focus)
        span = (high - low) or 1.0
        low, high = low - 0.08 * span, high + 0.25 * span
        ax.barh(
            rows,
            [min(max(v, low), high) if math.isfinite(v) else 0.0 for v in values],
            color=colours,
        )
        for row, value in zip(rows, values, strict=True):
            if not math.isfinite(value):
                mark = "n/a" if math.isnan(value) else ("−∞" if value < 0 else "+∞")
                ax.annotate(mark, (0, row), va="center", fontsize=8)
            elif value > high or value < low:
                edge = high if value > high else low
                ax.annotate(
                    f"{value:.3g} ▸" if value > high else f"◂ {value:.3g}",
                    (edge, row),
                    va="center",
                    ha="right" if value > high else "left",
                    fontsize=8,
                    color="white",
                    fontweight="bold",
                )
            else:
                ax.annotate(
                    f" {value:.3g}",
                    (value, row),
                    va="center",
                    ha="left" if value >= 0 else "right",
                    fontsize=7,
                )
        ax.set_xlim(low, high)
        ax.set_yticks(rows, systems, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.5)
        ax.set_title(f"{metric} ({_direction(metric)})", fontsize=10)
    axes.flat[-1].axis("off")
    axes.flat[-1].text(
        0, 0.5, "red: this model\n▸ / ◂: off the scale (value written)", fontsize=9, va="center"
    )
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


CURVE_SYSTEMS = ("model", "model_coded", "model_latent", "copy", "wiener_pm")


def present_count_curves(
    summary: dict[str, dict[str, dict[str, float]]], channels: int, path: Path
) -> bool:
    """Quality against the number of present channels (one panel per metric); False (nothing
    written) when the evaluation had fewer than two sizes of present set."""
    sizes = sorted(int(g.split()[0]) for g in summary if g.endswith(f"of {channels} present"))
    if len(sizes) < 2:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric, note in zip(
        axes,
        ("mss", "d_snr", "d_icc"),
        ("lower is better", "higher is better", "lower is better"),
        strict=True,
    ):
        for system in CURVE_SYSTEMS:
            values = [
                summary[f"{k} of {channels} present"].get(system, {}).get(metric) for k in sizes
            ]
            if all(v is not None and math.isfinite(v) for v in values):
                style = "-o" if system.startswith("model") else "--s"
                ax.plot(sizes, values, style, label=system)
        ax.set_xlabel("channels present")
        ax.set_title(f"{metric} ({note})")
        ax.set_xticks(sizes)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"inferring a missing channel vs the number present ({channels} channels)")
    fig.tight_layout()
    _save(fig, path)
    return True


def spectrograms(examples: list[Example], path: Path) -> None:
    """Spectrograms (dB, log frequency) of the true missing channel, its estimates and the present
    channel it was inferred from: one row per signal, one column per example file, one colour
    scale per column."""
    n_fft = 2048
    names = list(examples[0].signals)
    fig, axes = plt.subplots(
        len(names),
        len(examples),
        figsize=(4.6 * len(examples) + 1.2, 1.8 * len(names) + 0.6),
        sharex="col",
        sharey=True,
        squeeze=False,
    )
    for col, example in enumerate(examples):
        mags = {
            k: 20 * np.log10(np.abs(stft(v, n_fft, n_fft // 4)).T + 1e-6)
            for k, v in example.signals.items()
        }
        top = max(m.max() for m in mags.values())
        seconds = next(iter(example.signals.values())).size / example.sample_rate
        freqs = np.fft.rfftfreq(n_fft, 1.0 / example.sample_rate)
        times = np.linspace(0, seconds, next(iter(mags.values())).shape[1])
        for row, name in enumerate(names):
            ax = axes[row, col]
            image = ax.pcolormesh(
                times,
                freqs[1:],
                mags[name][1:],
                vmin=top - 90,
                vmax=top,
                cmap="magma",
                shading="auto",
                rasterized=True,
            )
            ax.set_yscale("log")
            ax.set_ylim(40, example.sample_rate / 2)
            if col == 0:
                ax.set_ylabel(f"{name}\nHz", fontsize=9)
            if row == 0:
                ax.set_title(example.label, fontsize=9)
        axes[-1, col].set_xlabel("seconds (scored half)")
        fig.colorbar(image, ax=axes[:, col], label="dB", shrink=0.6)
    _save(fig, path)
