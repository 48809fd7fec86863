"""One evaluation run: a model and files in, report.json / report.md / figures out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mcrave.evaluation.bitrate import latent_bitrate
from mcrave.evaluation.gates import check_gates
from mcrave.evaluation.plots import metric_bars, present_count_curves, spectrograms
from mcrave.evaluation.report import summarise, write_json, write_markdown
from mcrave.evaluation.runner import (
    BASELINES,
    CODED,
    LATENT_ONLY,
    PASSTHROUGH_SYSTEMS,
    RECON,
    evaluate_file,
)
from mcrave.evaluation.sources import EvalFile
from mcrave.inference import infer_array
from mcrave.streaming import StreamingEngine

# a residual lag is trusted only when the output correlates this well with the input
LATENCY_PEAK_MIN = 0.5


SPECTROGRAM_FILES = 3  # example files (columns) in spectrograms.png


def _short(model_path: str) -> str:
    """A model path as a reader wants it in a figure: relative to here when below, else its tail."""
    path = Path(model_path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(Path(*path.parts[-3:]))


def _latency_summary(checks: list[dict], latency: int) -> dict:
    trusted = [c for c in checks if c["peak"] >= LATENCY_PEAK_MIN]
    lags = sorted({c["residual_lag"] for c in trusted})
    if not trusted:
        text = (
            f"model reports {latency} samples; cross-correlation inconclusive (peak < "
            f"{LATENCY_PEAK_MIN}: the output does not follow the input's waveform closely enough "
            "to time it, as with a generative decoder or an untrained model)"
        )
    elif lags == [0]:
        text = f"model reports {latency} samples; cross-correlation confirms 0 residual lag"
    else:
        text = f"model reports {latency} samples; RESIDUAL LAGS {lags} samples measured"
    return {"reported_samples": latency, "trusted_lags": lags, "summary": text, "checks": checks}


def run_evaluation(
    engine: StreamingEngine,
    model_path: str,
    files: list[EvalFile],
    present_sets: list[tuple[int, ...]],
    out_dir: Path,
    passthrough: bool = False,
    chunk: int | None = None,
    progress: Callable[[int, EvalFile], None] | None = None,
) -> dict:
    """Evaluate the engine's model on `files`; writes the report into `out_dir` and returns it.

    `chunk` (samples, checked by the caller with `engine.check_chunk`) streams inference in
    chunks; None runs one offline pass. `progress(done, file)` follows each scored file.
    """
    model = engine.model
    if model.channels < 2:
        raise ValueError(f"{model_path}: a 1-channel model has no channel to infer")
    cfg = model.cfg
    names = tuple(cfg.names)

    def infer(audio: np.ndarray, present: tuple[int, ...], mode: str) -> np.ndarray:
        # only the present channels are handed over (all of them to the coded case's encoder,
        # never to the spatial stage), so a masking bug can never leak the truth
        return infer_array(
            engine,
            audio if mode == "coded" else audio[list(present)],
            present=list(present),
            chunk=chunk,
            latent_only=mode == "latent",
            coded=mode == "coded",
        )

    spatial = cfg.spatial
    results = []
    for i, f in enumerate(files):
        results.append(
            evaluate_file(
                f,
                infer,
                present_sets,
                model.sample_rate,
                names,
                passthrough,
                keep_example=i < SPECTROGRAM_FILES,
                spatial=spatial,
            )
        )
        if progress is not None:
            progress(i + 1, f)
    rows = [row for r in results for row in r.rows]
    systems = [
        *BASELINES,
        "model",
        *((CODED, LATENT_ONLY) if spatial else ()),
        *(PASSTHROUGH_SYSTEMS if passthrough else ()),
        RECON,
    ]
    summary = summarise(rows, systems, model.channels)
    report = {
        "model": {
            "path": model_path,
            "preset": cfg.preset,
            "channels": model.channels,
            "names": list(names),
            "sample_rate": model.sample_rate,
            "ratio": model.ratio,
            "latent_size": model.latent_size,
            "latency": int(model.latency),
            "projection": cfg.projection,
            "spatial": spatial,
        },
        "settings": {
            "present_sets": [list(s) for s in present_sets],
            "passthrough": passthrough,
            "chunk": chunk,
            "scored": "second half of each file",
            "wiener_fit": "first half of each file",
        },
        "files": [
            {"name": f.name, "seconds": f.audio.shape[-1] / model.sample_rate} for f in files
        ],
        "bitrate": latent_bitrate(engine.model, [f.audio for f in files]),
        "latency_check": _latency_summary(
            [c for r in results for c in r.latency], int(model.latency)
        ),
        "systems": systems,
        "summary": summary,
        "gates": {
            group: check_gates(table) for group, table in summary.items() if "model" in table
        },
        "gates_coded": {
            group: check_gates(table, CODED) for group, table in summary.items() if CODED in table
        },
        "rows": rows,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = ["metrics.png"]
    metric_bars(
        report["summary"]["all"], out_dir / "metrics.png", f"{_short(model_path)}: all cases"
    )
    if present_count_curves(report["summary"], model.channels, out_dir / "present_count.png"):
        figures.append("present_count.png")
    examples = [r.example for r in results if r.example is not None]
    if examples:
        spectrograms(examples, out_dir / "spectrograms.png")
        figures.append("spectrograms.png")
    write_json(out_dir / "report.json", report)
    write_markdown(out_dir / "report.md", report, figures)
    return report
