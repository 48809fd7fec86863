"""Run monitoring on rank 0: JSON-lines progress log, TensorBoard scalars, Prometheus, and for
people a tqdm bar on a terminal or plain timestamped lines when stdout/stderr go to a file.

`RUN_DIR/progress.jsonl` is the machine-readable channel a trainer service tails: one object
per line with an "event" key (start, step, checkpoint, validation, stop, done). The human lines
say the same (step, the losses that matter, steps/s, ETA, checkpoints, a final summary), so a
redirected `mcrave train ... > log` or a trainer job's log is never silent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from tqdm import tqdm

PROGRESS_LOG = "progress.jsonl"


class Monitor:
    """Writes every channel; created only on rank 0 (other ranks hold None)."""

    def __init__(
        self,
        run_dir: Path,
        start_step: int,
        max_steps: int,
        metrics_port: int | None,
        metrics_linger: float = 0.0,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy import, rank 0 only

        self.max_steps = max_steps
        self._log = open(run_dir / PROGRESS_LOG, "a", buffering=1)  # noqa: SIM115 (lives with run)
        self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step)
        self._bar = tqdm(
            total=max_steps, initial=start_step, unit="step", disable=None, dynamic_ncols=True
        )
        self._started = time.monotonic()
        self._best: tuple[float, int] | None = None
        self._last_checkpoint = ""
        self.registry = CollectorRegistry()
        self._steps = Counter(
            "mcrave_train_steps", "optimisation steps done in this process", registry=self.registry
        )
        self._step_s = Gauge(
            "mcrave_train_step_seconds", "wall seconds of the last step", registry=self.registry
        )
        self._xrt = Gauge(
            "mcrave_train_realtime_factor",
            "audio seconds trained per wall second (all ranks)",
            registry=self.registry,
        )
        self._step = Gauge("mcrave_train_step", "current step", registry=self.registry)
        self._loss = Gauge(
            "mcrave_train_loss", "last logged loss", ["name"], registry=self.registry
        )
        self._window: dict[str, tuple[float, int]] = {}
        self._window_seconds: list[float] = []
        self.metrics_port = None
        self._server = None
        self._linger = metrics_linger
        if metrics_port is not None:
            try:
                self._server, _ = start_http_server(metrics_port, registry=self.registry)
            except OSError as exc:
                self.close()
                raise ValueError(f"--metrics-port {metrics_port}: {exc}") from exc
            self.metrics_port = self._server.server_port

    def event(self, kind: str, **fields: Any) -> None:
        self._log.write(json.dumps({"event": kind, "time": time.time(), **fields}) + "\n")
        line = self._describe(kind, fields)
        if line:
            self.say(line)

    def say(self, text: str) -> None:
        """One human line: above the bar on a terminal, timestamped on stdout otherwise."""
        if self._bar.disable:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} mcrave train: {text}", file=sys.stdout, flush=True)
        else:
            self._bar.write(f"mcrave train: {text}")

    def _describe(self, kind: str, fields: dict[str, Any]) -> str:
        step = fields.get("step")
        if kind == "start":
            return f"start at step {step} of {self.max_steps}, {fields.get('world', 1)} process(es)"
        if kind == "checkpoint":
            self._last_checkpoint = str(fields["path"])
            return f"step {step}: checkpoint {fields['path']}"
        if kind == "validation":
            if fields.get("best"):
                self._best = (float(fields["spectral"]), int(step))
            mark = " (best so far)" if fields.get("best") else ""
            return f"step {step}: validation {fields['spectral']:.4g}{mark}"
        if kind == "step" and self._bar.disable:
            losses = fields["losses"]
            shown = " ".join(f"{k} {losses[k]:.4g}" for k in SHOWN if k in losses)
            rate = 1.0 / fields["step_seconds"] if fields["step_seconds"] > 0 else 0.0
            eta = _duration(fields["eta_seconds"])
            return (
                f"step {step}/{self.max_steps} {shown} | {rate:.2f} steps/s, "
                f"{fields['x_realtime']:.1f}x realtime, ETA {eta}"
            )
        if kind in ("done", "stop", "error"):
            what = fields.get("message") or fields.get("reason", kind)
            best = (
                f", best validation {self._best[0]:.4g} at step {self._best[1]}"
                if self._best
                else ""
            )
            last = f", last checkpoint {self._last_checkpoint}" if self._last_checkpoint else ""
            elapsed = _duration(time.monotonic() - self._started)
            return f"{kind} ({what}) at step {step} after {elapsed}{best}{last}"
        return ""

    def step(
        self,
        step: int,
        losses: dict[str, float],
        step_seconds: float,
        audio_seconds: float,
        mean_step_seconds: float,
        write: bool,
    ) -> None:
        """Per-step gauges and bar; every `log_every` steps (`write`) the log and TensorBoard get
        the losses and step time averaged over the steps since the last write (phase 2's G and D
        losses each over the steps that had them)."""
        self._steps.inc()
        self._step.set(step)
        self._step_s.set(step_seconds)
        self._xrt.set(audio_seconds / step_seconds if step_seconds > 0 else 0.0)
        self._bar.update(1)
        for name, value in losses.items():
            total, count = self._window.get(name, (0.0, 0))
            self._window[name] = (total + value, count + 1)
        self._window_seconds.append(step_seconds)
        if not write:
            return
        means = {name: total / count for name, (total, count) in self._window.items()}
        seconds = sum(self._window_seconds) / len(self._window_seconds)
        self._window, self._window_seconds = {}, []
        for name, value in means.items():
            self._loss.labels(name).set(value)
            self._tb.add_scalar(f"loss/{name}", value, step)
        self._tb.add_scalar("speed/x_realtime", audio_seconds / seconds, step)
        self._bar.set_postfix(
            {k: f"{v:.3g}" for k, v in means.items() if k in SHOWN}, refresh=False
        )
        self.event(
            "step",
            step=step,
            losses=means,
            step_seconds=seconds,
            x_realtime=audio_seconds / seconds,
            eta_seconds=(self.max_steps - step) * mean_step_seconds,
        )

    def close(self) -> None:
        self._bar.close()
        self._tb.close()
        self._log.close()
        if self._server is not None:
            # a short job can end between two scrapes: keep its last values up for a while
            time.sleep(self._linger)
            self._server.shutdown()


# the losses people watch, in this order (the log and TensorBoard get all of them)
SHOWN = (
    "loss",
    "spectral",
    "spatial_spectral",
    "interchannel",
    "spatial_interchannel",
    "kl",
    "adversarial",
    "discriminator",
)


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
