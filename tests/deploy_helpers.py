"""Helpers for the deploy tests, and for any test that runs a real Prometheus.

`check_queries(prom_url)` runs every dashboard query and every recording rule's expression
against a live Prometheus and says which returned no data: a test that has the services streaming
into a scraping Prometheus calls it to prove the dashboard and rules use real metric names.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas"
PYTORCHJOB_SCHEMA = SHARED_SCHEMAS / "kubeflow.org_v1_pytorchjob.schema.json"
K8S_VERSION = "1.32"
TRAINING_METRICS = ("mcrave_train_", "mcrave_trainer_")


def require_tool(name: str) -> str:
    """Path of a command-line tool, or skip naming the package that provides it."""
    path = shutil.which(name)
    if path is None:
        pkg = {"promtool": "Debian package prometheus", "docker-compose": "Debian docker-compose"}
        pytest.skip(f"{name} not installed ({pkg.get(name, 'see deploy/README.md')})")
    return path


def kustomize(path: Path) -> list[dict]:
    """`kubectl kustomize PATH` parsed into its objects (fails the test on a render error)."""
    kubectl = require_tool("kubectl")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def strict_schema(schema: dict) -> dict:
    """A copy of a CRD's openAPIV3Schema that rejects unknown fields, as the API server's strict
    field validation does (plain JSON Schema would let a misspelled field through)."""
    out = {k: (strict_schema(v) if isinstance(v, dict) else v) for k, v in schema.items()}
    for key in ("properties", "patternProperties"):
        if key in out:
            out[key] = {name: strict_schema(sub) for name, sub in schema[key].items()}
    if "items" in out and isinstance(schema["items"], dict):
        out["items"] = strict_schema(schema["items"])
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and "properties" in out and not preserve:
        out.setdefault("additionalProperties", False)
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every dashboard JSON."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            out += [(panel["title"], t["expr"]) for t in panel.get("targets", [])]
    return out


def recording_rules() -> list[tuple[str, str]]:
    """(record name, PromQL) of every recording rule."""
    out = []
    for path in sorted((PROMETHEUS / "rules").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [(r["record"], r["expr"]) for r in group["rules"] if "record" in r]
    return out


def _query_range(prom_url: str, expr: str, window_s: float) -> list[dict]:
    end = time.time()
    params = {"query": expr, "start": end - window_s, "end": end, "step": "1s"}
    url = f"{prom_url.rstrip('/')}/api/v1/query_range?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", f"{expr}: {body}"
    return [series for series in body["data"]["result"] if series["values"]]


def check_queries(
    prom_url: str, rate_interval: str = "1m", training: bool = True, window_s: float = 600
) -> dict[str, int]:
    """Run every dashboard query and recording-rule expression against a live Prometheus over
    the last `window_s` seconds (as a dashboard would show them).

    Returns {expression: number of series with data}; callers assert all are > 0. Grafana's
    `$__rate_interval` becomes `rate_interval`. `training=False` leaves out the training panels
    (for a test with services but no training job).
    """
    exprs = [e for _, e in dashboard_queries()] + [e for _, e in recording_rules()]
    if not training:
        exprs = [e for e in exprs if not any(m in e for m in TRAINING_METRICS)]
    return {
        e: len(_query_range(prom_url, e.replace("$__rate_interval", rate_interval), window_s))
        for e in dict.fromkeys(exprs)
    }


def prometheus_config(out_dir: Path, serving: dict[str, str], sd_file: Path) -> Path:
    """deploy/prometheus/prometheus.yml pointed at local targets ({service: host:port}) and the
    trainer's file_sd list, scraping and evaluating the repository's rules twice a second (a test
    training job lives a few seconds)."""
    cfg = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "500ms", "evaluation_interval": "500ms"}
    cfg["rule_files"] = [str(p) for p in sorted((PROMETHEUS / "rules").glob("*.rules.yml"))]
    for job in cfg["scrape_configs"]:
        if "static_configs" in job:
            job["static_configs"] = [
                {"targets": [addr], "labels": {"service": name}} for name, addr in serving.items()
            ]
        for sd in job.get("file_sd_configs", []):
            sd["files"], sd["refresh_interval"] = [str(sd_file)], "1s"
    path = out_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_prometheus(out_dir: Path, config: Path) -> tuple[subprocess.Popen, str]:
    """A real Prometheus server (Debian package `prometheus`) on a free port; caller stops it."""
    binary = require_tool("prometheus")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={out_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(out_dir / "prometheus.log", "wb"),  # noqa: SIM115 - lives with the process
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                return proc, url
        except OSError:
            assert proc.poll() is None, (out_dir / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("prometheus did not become ready in 30 s")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` (transient ClientErrors count as not yet) until true or fail naming it."""
    from mcrave_client.errors import ClientError

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if condition():
                return
        except ClientError:
            pass
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def make_data_root(tmp: Path, name: str = "ds") -> Path:
    """A data root holding one tiny 2-channel dataset `name` (the training tests' tone set)."""
    from training_helpers import write_dataset

    root = tmp / "data"
    write_dataset(root / name, channels=2, files=2, frames=12000, valid_files=1)
    return root


class Services:
    """`mcrave serve ...` subprocesses on port 0 (ports read from --ready-file); every process
    is stopped on exit, SIGKILL if SIGTERM is not enough."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.named: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start `mcrave serve *args` without waiting (several start faster in parallel)."""
        ready = self.tmp / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcrave.cli.main", "serve", *args, "--ready-file", str(ready)],
            stdout=open(self.tmp / f"{name}.log", "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        )
        self.procs.append(proc)
        self.named[name] = proc

    def ready(self, name: str, timeout: float = 90) -> dict:
        """Wait for `name`'s ready file; returns its ports."""
        ready, proc = self.tmp / f"{name}.ready.json", self.named[name]
        deadline = time.time() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log = (self.tmp / f"{name}.log").read_text()[-3000:]
                pytest.fail(f"{name} did not start:\n{log}")
            time.sleep(0.1)
        return json.loads(ready.read_text())

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> dict:
        self.spawn(name, args, env)
        return self.ready(name)

    def stop(self, name: str) -> None:
        proc = self.named[name]
        proc.terminate()
        proc.wait(15)

    def trainer(self, data_root: Path, models: Path, *extra: str, **kw) -> dict:
        args = [
            "trainer", "--jobs-dir", str(self.tmp / "jobs"), "--data-root", str(data_root),
            "--models", str(models), "--port", "0", "--metrics-port", "0", "--health-port", "0",
            "--threads", "1", *extra,
        ]  # fmt: skip
        return self.start("trainer", args, **kw)

    def spawn_service(self, service: str, models: Path, *extra: str, name: str = "") -> str:
        """Spawn `mcrave serve encoder|decoder` (collect it with `ready(name)`); returns name."""
        args = [
            service, "--models", str(models), "--port", "0", "--metrics-port", "0",
            "--poll-seconds", "0.5", "--threads", "1", *extra,
        ]  # fmt: skip
        self.spawn(name or service, args)
        return name or service

    def alive(self, name: str) -> bool:
        return self.named[name].poll() is None
