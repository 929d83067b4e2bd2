"""Monitoring (docs/cluster.md, "Monitoring"): deploy/prometheus/rules.yml passes `promtool check rules` (a broken
copy does not), its unit tests (rules_test.yml: each alert fires on synthetic series, not on healthy ones) pass
under `promtool test rules`, and every metric the rules and the Grafana dashboard (deploy/grafana/neoxserve.json)
name is one neoxserve exports."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from neoxserve.api.metrics import Metrics
from neoxserve.commands.cluster import find_promtool
from neoxserve.engine.stats import EngineStats, carry_over, idle_snapshot

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/rules.yml"
RULES_TEST = REPO / "deploy/prometheus/rules_test.yml"
DASHBOARD = REPO / "deploy/grafana/neoxserve.json"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# PromQL words that look like metric names: functions, aggregations, keywords
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
                "histogram_quantile", "or", "and", "unless", "on", "ignoring", "le", "offset", "bool"}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = find_promtool()
    if binary is None:
        reason = ("no promtool: `make test` installs Debian's prometheus package where the machine allows "
                  "(`make promtool`)")
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=cwd)


def test_the_rules_pass_promtool_check(promtool):
    result = run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_a_broken_copy_of_the_rules_fails_promtool_check(promtool, tmp_path):
    broken = tmp_path / "rules.yml"
    broken.write_text(RULES.read_text().replace("neoxserve_engine_up == 0", "neoxserve_engine_up == = 0", 1))
    result = run(promtool, "check", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_each_alert_fires_on_synthetic_series_and_not_on_healthy_ones(promtool, tmp_path):
    # a copy, so promtool writes nothing into deploy/
    for path in (RULES, RULES_TEST):
        shutil.copy(path, tmp_path / path.name)
    result = run(promtool, "test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    assert tested == set(re.findall(r"- alert: (\w+)", RULES.read_text()))


def exported_names() -> set[str]:
    """Every metric name of an in-process /metrics page whose engine stats have the supervised engine's layout
    (engine/stats.py and the supervisor's up/restarts), with a request observed so the HTTP families appear."""
    stats = EngineStats().snapshot(running=1, waiting=0, kv_blocks_used=3, kv_blocks_total=10,
                                   prefix_queries=1, prefix_hits=1, preemptions=0)
    supervised = {**carry_over(idle_snapshot(), stats), "up": 1, "restarts": 0}
    metrics = Metrics(lambda: supervised, "demo")
    metrics.observe("chat", 0, 0.1, completion_tokens=2)
    text = metrics.render().decode()
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))


def names_in(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', "", expr)          # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)         # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)        # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)   # grouping labels
    return {n for n in NAME.findall(expr) if n not in PROMQL_WORDS}


def test_the_rules_and_the_dashboard_name_only_exported_metrics():
    exported = exported_names()
    assert {"neoxserve_engine_up", "neoxserve_engine_restarts_total", "neoxserve_http_requests_total",
            "vllm:kv_cache_usage_perc"} <= exported
    rule_exprs = re.findall(r"expr: \|?\n?((?:.+\n?)+?)\s+(?:for|labels):", RULES.read_text())
    assert len(rule_exprs) == 6
    dashboard = json.loads(DASHBOARD.read_text())
    panel_exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert panel_exprs
    for expr in rule_exprs + panel_exprs:
        used = names_in(expr)
        assert used, expr
        assert used <= exported, (expr, used - exported)
