"""Encoder/decoder services as real `mcrave serve` subprocesses, for the service benches and the
SDK tests: a throwaway registry with one untrained model, ports chosen by the servers (port 0,
read back from `--ready-file`), SIGTERM (drain) on exit, and RSS read from /proc; plus the
benches' report writer (JSON + markdown).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Service:
    name: str
    target: str
    metrics_port: int
    proc: subprocess.Popen

    def rss_bytes(self) -> int:
        """Resident memory of the service process now (Linux /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.proc.pid}")


def publish_untrained(root: Path, name: str, config: str, channels: int, seed: int = 0) -> None:
    """An untrained model of preset `config` as `root/name/1` (benches time it; no training)."""
    import torch

    from mcrave.checkpoint import save_checkpoint
    from mcrave.config import preset
    from mcrave.model import MCRave
    from mcrave.registry import publish_version

    torch.manual_seed(seed)
    ckpt = root.parent / f".{name}.ckpt"
    save_checkpoint(ckpt, MCRave(preset(config, channels=channels).model), force=True)
    publish_version(root, name, ckpt)
    ckpt.unlink()


@contextmanager
def services(
    models: Path,
    workdir: Path,
    *extra: str,
    names: tuple[str, ...] = ("encoder", "decoder"),
    ports: tuple[int, ...] | None = None,
    threads: int = 1,
    timeout: float = 120,
    per_service: tuple[tuple[str, ...], ...] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[list[Service]]:
    """Start `mcrave serve NAME` for each name in its own process, all at once (`extra` flags for
    all, `per_service[i]` for the i-th, `env` added to the environment); yield them when every
    one is serving; SIGTERM them (drain) and reap them on exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **(env or {})}
    started = []
    try:
        ports = ports or (0,) * len(names)
        per_service = per_service or ((),) * len(names)
        for name, port, own in zip(names, ports, per_service, strict=True):
            stamp = time.monotonic_ns()
            ready, log = workdir / f"{name}-{stamp}.ready.json", workdir / f"{name}-{stamp}.log"
            cmd = [
                sys.executable,
                "-m",
                "mcrave.cli.main",
                "serve",
                name,
                "--models",
                str(models),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--threads",
                str(threads),
                "--ready-file",
                str(ready),
                "--grace-seconds",
                "2",
                *extra,
                *own,
            ]
            with open(log, "wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            started.append((name, ready, log, proc))
        running = []
        deadline = time.monotonic() + timeout
        for name, ready, log, proc in started:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} service did not start:\n{tail}")
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            running.append(Service(name, f"127.0.0.1:{info['port']}", info["metrics_port"], proc))
        yield running
    finally:
        for *_, proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for *_, proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_report(out: Path, result: dict, table: str) -> None:
    """`out` (JSON) and the markdown `table` beside it (`.md`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.md')}")
