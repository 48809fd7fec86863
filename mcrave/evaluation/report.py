"""Aggregates metric rows into means and writes report.json and report.md (atomically)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mcrave.atomic import atomic_write_bytes
from mcrave.evaluation.metrics import METRICS

REPORT_FORMAT = "mcrave-eval-report"
REPORT_VERSION = 1


def mean_metric(values: list[float]) -> float:
    """Mean ignoring NaN (undefined cases); +-inf propagate (a copy's w_err is -inf by design)."""
    finite_or_inf = [v for v in values if not math.isnan(v)]
    if not finite_or_inf:
        return float("nan")
    with np.errstate(invalid="ignore"):
        return float(np.mean(finite_or_inf))


def summarise(
    rows: list[dict], systems: list[str], channels: int
) -> dict[str, dict[str, dict[str, float]]]:
    """{group: {system: means}}. Groups: "all" (every case of every file; the all-present
    reconstruction rows keep their own system name), then "k of N present" when the cases have
    several sizes of present set (e.g. single channels vs leave-one-out), then each case."""
    groups: dict[str, list[dict]] = {"all": rows}
    inferred = [r for r in rows if len(r["present"]) < channels]
    sizes = sorted({len(r["present"]) for r in inferred})
    if len(sizes) > 1:
        for k in sizes:
            groups[f"{k} of {channels} present"] = [r for r in inferred if len(r["present"]) == k]
    for row in rows:
        groups.setdefault(row["case"], []).append(row)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for group, members in groups.items():
        table = {}
        for system in systems:
            picked = [r for r in members if r["system"] == system]
            if picked:
                table[system] = {m: mean_metric([r[m] for r in picked]) for m in METRICS}
                table[system]["n"] = len(picked)
        summary[group] = table
    return summary


def _jsonable(value: Any) -> Any:
    """Non-finite floats become "inf" / "-inf" / "nan" strings (float() reads them back)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def write_json(path: Path, report: dict) -> None:
    body = {"format": REPORT_FORMAT, "version": REPORT_VERSION, **report}
    atomic_write_bytes(
        path, (json.dumps(_jsonable(body), indent=1, allow_nan=False) + "\n").encode()
    )


def _cell(metric: str, value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "−∞" if value < 0 else "+∞"
    return f"{value:.3f}" if metric in ("d_icc", "d_ipd") else f"{value:.2f}"


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    lines = ["| system | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for system, means in table.items():
        lines.append(f"| {system} | " + " | ".join(_cell(m, means[m]) for m in METRICS) + " |")
    return "\n".join(lines)


def gates_table(gates: dict[str, dict[str, bool]]) -> str:
    """One row per case, one column per must-show comparison of a system (yes = it is better)."""
    keys = list(next(iter(gates.values())))
    lines = ["| case | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for group, checks in gates.items():
        cells = ["yes" if checks.get(k) else "**no**" for k in keys]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, report: dict, figures: list[str]) -> None:
    model, bitrate = report["model"], report["bitrate"]
    summary = report["summary"]
    files = report["files"]
    seconds = sum(f["seconds"] for f in files)
    lines = [
        f"# mcrave eval: {model['path']}",
        "",
        f"- model: preset {model['preset']}, {model['channels']} channels ({', '.join(model['names'])}),"
        f" {model['sample_rate']} Hz, ratio {model['ratio']}, latent {model['latent_size']},"
        f" latency {model['latency']} samples",
        f"- data: {len(files)} file(s), {seconds:.1f} s; second halves scored, Wiener fitted on first halves",
        f"- latent rate: {bitrate['latent_frames_per_second']:.2f} frames/s,"
        f" raw {bitrate['raw_bits_per_second'] / 1000:.1f} kbit/s (float32),"
        f" KL estimate {bitrate['kl_bits_per_second'] / 1000:.2f} kbit/s",
        *(
            [
                "- what travels to the decoder (spatial stage): the latents above plus each present"
                f" channel's audio, {bitrate['present_audio_bits_per_second_per_channel'] / 1000:.0f}"
                " kbit/s per channel as f32 on the wire (half that as 16-bit PCM)"
            ]
            if bitrate.get("present_audio_bits_per_second_per_channel")
            else []
        ),
        f"- latency check: {report['latency_check']['summary']}",
        "",
        "Means over files, present sets and missing channels (recon_all: every channel with all"
        " present). Lower is better for mss, d_ild, d_icc, d_ipd; higher for si_sdr, d_snr;"
        " w_err best at 0.",
        "",
        markdown_table(summary["all"]),
    ]
    if report["gates"]:
        lines += [
            "",
            "## Must-show checks",
            "",
            "`model` (encoder and spatial stage see only the present channels) against the"
            " baselines, on means"
            " (metric<baseline: model lower = better).",
            "",
            gates_table(report["gates"]),
        ]
    if report.get("gates_coded"):
        lines += [
            "",
            "`model_coded` (the codec case: latents of all channels, audio of the present ones)"
            " against the same baselines:",
            "",
            gates_table(report["gates_coded"]),
        ]
    for group, table in summary.items():
        if group != "all":
            lines += ["", f"## {group}", "", markdown_table(table)]
    lines += [""] + [f"![{name}]({name})" for name in figures]
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
