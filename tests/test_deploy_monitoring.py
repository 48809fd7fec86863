"""deploy/prometheus and deploy/grafana: configs and rules pass promtool, the rule unit tests pass,
and every dashboard query is valid PromQL over bounded labels."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from deploy_helpers import DASHBOARDS, PROMETHEUS, dashboard_queries, recording_rules, require_tool

RULES = PROMETHEUS / "rules" / "mcrave.rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_promtool_check_config_with_the_rules(config, tmp_path):
    # point rule_files at the repository's rules, so check config also checks them
    cfg = yaml.safe_load((PROMETHEUS / config).read_text())
    cfg["rule_files"] = [str(RULES)]
    path = tmp_path / config
    path.write_text(yaml.safe_dump(cfg))
    proc = promtool("check", "config", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 11 rules found" in proc.stdout + proc.stderr


def test_promtool_check_rules_and_unit_tests():
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = promtool("test", "rules", str(PROMETHEUS / "tests" / "mcrave.test.yml"))
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_rule_unit_tests_fail_when_an_alert_threshold_changes(tmp_path):
    """The unit tests pin behaviour: the same tests against a loosened rule must fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    loosened = RULES.read_text().replace("ratio_rate1m < 1", "ratio_rate1m < 0.4")
    assert loosened != RULES.read_text()
    (tmp_path / "rules" / RULES.name).write_text(loosened)
    test = tmp_path / "tests" / "t.yml"
    test.write_text((PROMETHEUS / "tests" / "mcrave.test.yml").read_text())
    proc = promtool("test", "rules", str(test))
    assert proc.returncode != 0 and "McraveSpeedBelowRealtime" in proc.stdout + proc.stderr


def test_required_alerts_exist_with_summaries():
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {"McraveSpeedBelowRealtime", "McraveHighErrorRate", "McraveNoReadyEncoder"} <= set(
        alerts
    )
    assert all(a["annotations"]["summary"] and a["labels"]["severity"] for a in alerts.values())


def test_dashboard_queries_parse_as_promql(tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 10
    rules = [
        {"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "1m")}
        for i, (_, e) in enumerate(queries)
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_covers_the_card_and_uses_no_unbounded_labels():
    titles = " | ".join(t for t, _ in dashboard_queries()).lower()
    for needed in ("throughput", "speed", "latency quantiles", "batch size", "training loss"):
        assert needed in titles
    exprs = [e for _, e in dashboard_queries()] + [e for _, e in recording_rules()]
    grouped = [
        set(map(str.strip, g.split(","))) for e in exprs for g in re.findall(r"by \(([^)]*)\)", e)
    ]
    forbidden = {"job_id", "job", "stream", "stream_id", "user", "run", "run_id"}
    assert not [g & forbidden for g in grouped if g & forbidden]
    for path in DASHBOARDS.glob("*.json"):
        dash = json.loads(path.read_text())
        assert dash["uid"] and dash["title"]
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert "{{job" not in json.dumps(panel), panel["title"]
