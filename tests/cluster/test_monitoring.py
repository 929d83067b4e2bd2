"""Monitoring (docs/deployment.md, "Monitoring"; docs/cluster.md for the local cluster's Prometheus):
deploy/prometheus/rules.yml passes `promtool check rules` (a broken
copy does not), its unit tests (rules_test.yml: each alert fires on synthetic series, not on healthy ones) pass
under `promtool test rules`, and every metric the rules and the Grafana dashboard (deploy/grafana/neoxserve.json)
name is one neoxserve exports; and `neoxserve cluster start --prometheus` (`make cluster PROMETHEUS=1`) runs a real
Prometheus that scrapes every replica's metrics, with those rules loaded (its HTTP API, bounded waits)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from neoxserve.api.metrics import Metrics
from neoxserve.commands.cluster import LocalCluster, find_nginx, find_prometheus, find_promtool, find_redis_server
from neoxserve.engine.stats import EngineStats, carry_over, idle_snapshot
from needs import need

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/rules.yml"
RULES_TEST = REPO / "deploy/prometheus/rules_test.yml"
DASHBOARD = REPO / "deploy/grafana/neoxserve.json"

# PromQL words that look like metric names: functions, aggregations, keywords
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
                "histogram_quantile", "or", "and", "unless", "on", "ignoring", "le", "offset", "bool"}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@pytest.fixture(scope="module")
def promtool() -> str:
    return need(find_promtool(), "promtool")


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


# ---- a real Prometheus on the local cluster

COMPLETIONS = "/rpc/2.0/ai_custom/v1/wenxinworkshop/completions/demo-random"   # the random-weight model: fast steps
ADMIN_KEY = "monitoring-test-admin-key-0123456789"   # as a Kubernetes Secret would give it (NEOXSERVE_ADMIN_KEY)
WAIT = 60.0    # scrapes every 2 s, rules evaluated every 2 s: well within this


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    need(find_nginx(), "nginx", "nginx")
    need(find_redis_server(), "redis-server", "redis-server")
    need(find_prometheus(), "prometheus", "promtool")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NEOXSERVE_ADMIN_KEY", ADMIN_KEY)      # the replicas' environment
        c = LocalCluster.start(tmp_path_factory.mktemp("monitored"), replicas=2, prometheus=True,
                              model="demo-random")
    try:
        yield c
    finally:
        c.stop()
        assert not c.running()


def _query(cluster: LocalCluster, promql: str) -> list[dict]:
    r = httpx.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return r.json()["data"]["result"]


def _until(what: str, check, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


def test_prometheus_scrapes_every_replica(monitored):
    banner = monitored.first_start_banner()
    found = {label: line.split(":", 1)[1].strip() for line in banner.splitlines()
             for label in ("API Key", "Secret Key") if line.strip().startswith(label + ":")}
    assert "Admin key:" not in banner        # configured: nothing to print
    token = httpx.get(monitored.url + "/oauth/2.0/token", timeout=30, params={
        "grant_type": "client_credentials", "client_id": found["API Key"],
        "client_secret": found["Secret Key"]}).json()["access_token"]
    replicas = {f"127.0.0.1:{r.port}" for r in monitored.replicas}
    answered: set[str] = set()
    for _ in range(20):                      # fresh connections: least_conn spreads them over both
        r = httpx.post(monitored.url + COMPLETIONS, params={"access_token": token},
                       json={"prompt": "hi", "max_output_tokens": 2}, timeout=120)
        assert "result" in r.json(), r.text
        answered.add(r.headers["X-Neoxserve-Replica"].split(", ")[-1])
    assert answered == replicas

    targets = _until("every replica's target up", lambda: (
        t := httpx.get(f"{monitored.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    ) and all(x["health"] == "up" for x in t) and len(t) == 2 and t)
    assert {t["labels"]["instance"] for t in targets} == replicas
    assert {t["labels"]["replica"] for t in targets} == {"replica-0", "replica-1"}

    def ok_counts() -> dict[str, float]:
        result = _query(monitored, 'sum by (instance) (neoxserve_http_requests_total{error_code="0"})')
        return {s["metric"]["instance"]: float(s["value"][1]) for s in result}

    # the chat calls, counted by whichever replica answered, all 20 of them once both were scraped afterwards
    counts = _until("the request counter of every replica with every answer",
                    lambda: (c := ok_counts()) and set(c) == replicas and sum(c.values()) >= 20 and c)
    assert all(v >= 1 for v in counts.values()), counts
    running = _until("vllm:num_requests_running of every replica",
                     lambda: _query(monitored, "vllm:num_requests_running"))
    assert {s["metric"]["instance"] for s in running} == replicas
    assert {s["metric"]["model_name"] for s in running} == {"demo-random"}
    kv = _query(monitored, "neoxserve_engine_kv_blocks_total")
    assert {s["metric"]["instance"] for s in kv} == replicas and all(float(s["value"][1]) > 0 for s in kv)


def test_prometheus_loaded_the_alerting_rules(monitored):
    expected = set(re.findall(r"- alert: (\w+)", RULES.read_text()))

    def evaluated() -> list[dict]:
        groups = httpx.get(f"{monitored.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if {r["name"] for r in rules} == expected and all(
            not r.get("lastEvaluation", "0001").startswith("0001") and r["health"] == "ok" for r in rules) else []

    rules = _until("every alerting rule loaded and evaluated", evaluated)
    assert {r["type"] for r in rules} == {"alerting"}
    # a healthy cluster: none of them fires
    assert all(r["state"] == "inactive" for r in rules), [(r["name"], r["state"]) for r in rules]


def test_the_configured_admin_key_opens_the_console_through_nginx(monitored):
    origin = {"Origin": monitored.url}
    r = httpx.post(monitored.url + "/console/api/login", json={"key": ADMIN_KEY}, headers=origin, timeout=30)
    assert r.status_code == 200 and r.json()["expires_at"] > time.time(), r.text
    r = httpx.post(monitored.url + "/console/api/login", json={"key": ADMIN_KEY + "x"}, headers=origin, timeout=30)
    assert r.status_code == 401 and "wrong admin key" in r.text
