"""Run monitoring on rank 0: JSON-lines progress log, TensorBoard scalars, Prometheus, tqdm.

`RUN_DIR/progress.jsonl` is the machine-readable channel a trainer service tails: one object
per line with an "event" key (start, step, checkpoint, validation, stop, done).
"""

from __future__ import annotations

import json
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


SHOWN = ("spectral", "interchannel", "kl", "adversarial", "discriminator")
