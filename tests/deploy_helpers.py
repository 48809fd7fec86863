"""Helpers for the deploy tests, and for any test that runs a real Prometheus.

`check_queries(prom_url)` runs every dashboard query and every recording rule's expression
against a live Prometheus and says which returned no data: a test that has the services streaming
into a scraping Prometheus calls it to prove the dashboard and rules use real metric names.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
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


def _query(prom_url: str, expr: str) -> list[dict]:
    url = f"{prom_url.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def check_queries(
    prom_url: str, rate_interval: str = "1m", training: bool = True
) -> dict[str, int]:
    """Run every dashboard query and recording-rule expression against a live Prometheus.

    Returns {expression: number of series returned}; callers assert all are > 0. Grafana's
    `$__rate_interval` becomes `rate_interval`. `training=False` leaves out the training panels
    (for a test with services but no training job).
    """
    exprs = [e for _, e in dashboard_queries()] + [e for _, e in recording_rules()]
    if not training:
        exprs = [e for e in exprs if not any(m in e for m in TRAINING_METRICS)]
    return {
        e: len(_query(prom_url, e.replace("$__rate_interval", rate_interval)))
        for e in dict.fromkeys(exprs)
    }
