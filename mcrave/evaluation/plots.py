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
from mcrave.evaluation.metrics import METRICS  # noqa: E402
from mcrave.evaluation.runner import Example  # noqa: E402
from mcrave.evaluation.spectral import stft  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def metric_bars(table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    """One panel per metric, one horizontal bar per system; infinite values are marked, not drawn."""
    systems = list(table)
    fig, axes = plt.subplots(2, 4, figsize=(14, 1.2 + 0.55 * len(systems)))
    colours = ["tab:red" if s.startswith(("model", "coded")) else "tab:gray" for s in systems]
    rows = np.arange(len(systems))
    for ax, metric in zip(axes.flat, METRICS, strict=False):
        values = [table[s][metric] for s in systems]
        ax.barh(rows, [v if math.isfinite(v) else 0.0 for v in values], color=colours)
        for row, value in zip(rows, values, strict=True):
            if not math.isfinite(value):
                mark = "n/a" if math.isnan(value) else ("−∞" if value < 0 else "+∞")
                ax.annotate(mark, (0, row), va="center")
        ax.set_yticks(rows, systems, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.5)
        ax.set_title(metric)
    axes.flat[-1].axis("off")
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


def spectrograms(example: Example, path: Path) -> None:
    """Log-magnitude spectrograms of the true missing channel and its estimates, one colour scale."""
    n_fft = 1024
    mags = {
        k: 20 * np.log10(np.abs(stft(v, n_fft, n_fft // 4)).T + 1e-6)
        for k, v in example.signals.items()
    }
    top = max(m.max() for m in mags.values())
    seconds = next(iter(example.signals.values())).size / example.sample_rate
    fig, axes = plt.subplots(len(mags), 1, figsize=(8, 2.0 * len(mags)), sharex=True)
    for ax, (name, mag) in zip(np.atleast_1d(axes), mags.items(), strict=True):
        ax.imshow(
            mag,
            origin="lower",
            aspect="auto",
            vmin=top - 90,
            vmax=top,
            cmap="magma",
            extent=(0, seconds, 0, example.sample_rate / 2000),
        )
        ax.set_ylabel(f"{name}\nkHz")
    np.atleast_1d(axes)[-1].set_xlabel("seconds (scored half)")
    fig.suptitle(example.label)
    fig.tight_layout()
    _save(fig, path)
