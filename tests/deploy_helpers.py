"""Helpers for the deploy tests, and for any test that runs a real Prometheus.

`check_queries(prom_url)` runs every dashboard query and every recording rule's expression
against a live Prometheus and says which returned no data: a test that has the services streaming
into a scraping Prometheus calls it to prove the dashboard and rules use real metric names.
"""

from __future__ import annotations

import functools
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

import jsonschema
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


def require_pytorchjob_schema() -> None:
    if not PYTORCHJOB_SCHEMA.is_file():
        pytest.skip(f"PyTorchJob CRD schema absent: {PYTORCHJOB_SCHEMA} (../shared/schemas)")


@functools.cache
def _pytorchjob_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict_schema(json.loads(PYTORCHJOB_SCHEMA.read_text())))


def object_problems(obj: dict) -> str | None:
    """Why the API server would refuse `obj` under strict field validation (None = valid):
    kubernetes-validate (strict) for built-in kinds; for a PyTorchJob, its CRD schema made
    strict, and each replica's pod template as a core PodTemplate."""
    import kubernetes_validate as kv

    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    if obj.get("kind") == "PyTorchJob":
        error = jsonschema.exceptions.best_match(_pytorchjob_validator().iter_errors(obj))
        if error is not None:
            return f"{name}: {error.message} at {'.'.join(map(str, error.absolute_path))}"
        for role, replica in obj["spec"]["pytorchReplicaSpecs"].items():
            template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": role}}
            problem = object_problems({**template, "template": replica["template"]})
            if problem:
                return f"{name} {role}: {problem}"
        return None
    try:
        kv.validate(obj, K8S_VERSION, strict=True)
    except kv.ValidationError as err:
        return f"{name}: {err.message} at {'.'.join(map(str, err.path))}"
    return None


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


RECORDINGS = K8S / "recorded"


def _merge(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class ReplayApiServer:
    """A local HTTP server answering Kubernetes API requests from a recording (format in
    services/trainer/README.md), validating every object sent to it as a strict API server would.

    A request takes the first unused exchange with its method and path whose `after` request (if
    any) has been seen; with none left it gets the last one it used again. `"body": "$request"`
    echoes the sent object (as the API server does on create), a PATCH answers the stored object
    with the patch merged, and `{"$stored": true, "status": ...}` answers the stored object with
    the recorded fields (its status) merged in; `{"$text": "..."}` is sent as text/plain. Every request lands in `requests`; refused objects in `invalid`,
    requests no exchange matched in `unexpected`.
    """

    def __init__(self, recording: str, substitutions: dict[str, str] | None = None) -> None:
        import http.server
        import threading

        text = (RECORDINGS / recording).read_text()
        for key, value in (substitutions or {}).items():
            text = text.replace(key, value)
        self.exchanges = json.loads(text)["exchanges"]
        self.used: list[int] = []
        self.requests: list[tuple[str, str, object]] = []
        self.invalid: list[str] = []
        self.unexpected: list[str] = []
        self.objects: dict[str, dict] = {}
        replay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = replay.answer(self.command, self.path, raw)
                text = isinstance(body, dict) and body.get("$text")  # e.g. a pod log
                data = text.encode() if text else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def seen(self, method: str, path: str) -> bool:
        return any(m == method and p.split("?")[0] == path for m, p, _ in self.requests)

    def _pick(self, method: str, path: str) -> int | None:
        def eligible(i: int) -> bool:
            req = self.exchanges[i]["request"]
            after = req.get("after")
            query = req.get("query")
            return (
                req["method"] == method
                and req["path"] == path.split("?")[0]
                and (not query or all(f"{k}={v}" in urllib.parse.unquote(path)
                                      for k, v in query.items()))
                and (not after or self.seen(after["method"], after["path"]))
            )  # fmt: skip

        fresh = [i for i in range(len(self.exchanges)) if i not in self.used and eligible(i)]
        if fresh:
            return fresh[0]
        again = [i for i in reversed(self.used) if eligible(i)]
        return again[0] if again else None

    def answer(self, method: str, path: str, raw: bytes) -> tuple[int, object]:
        sent = json.loads(raw) if raw else None
        index = self._pick(method, path)
        self.requests.append((method, path, sent))
        if index is None:
            self.unexpected.append(f"{method} {path}")
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
        self.used.append(index)
        response = self.exchanges[index]["response"]
        body = response.get("body")
        base = path.split("?")[0]
        if method == "POST" and isinstance(sent, dict):
            key = f"{base}/{sent['metadata']['name']}"
            self.objects[key] = _merge(sent, {"metadata": {"uid": key, "resourceVersion": "1"}})
            problem = object_problems(sent)
        elif method == "PATCH":
            self.objects[base] = _merge(self.objects.get(base, {}), sent)
            problem = object_problems(self.objects[base])
        else:
            problem = None
        if problem:
            self.invalid.append(problem)
            return 422, {"kind": "Status", "status": "Failure", "reason": "Invalid",
                         "message": problem, "code": 422}  # fmt: skip
        if body == "$request":
            body = self.objects[base if method == "PATCH" else f"{base}/{sent['metadata']['name']}"]
        elif isinstance(body, dict) and body.get("$stored"):  # the stored object, as it is now
            body = _merge(self.objects[base], {k: v for k, v in body.items() if k != "$stored"})
        return response["status"], body
