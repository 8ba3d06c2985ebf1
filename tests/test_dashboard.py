"""The Grafana dashboard and the Prometheus alert rules query only metrics svdq exports, the dashboard
shows every one of them, every query parses as PromQL (promql-parser, the Prometheus grammar), and every
alert says how bad it is and where its runbook entry is."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml

from ops.harness import ROOT

MONITORING = ROOT / "ops" / "monitoring"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
ALERTS = MONITORING / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "ops" / "README.md"

# The metric names are fixed (API /metrics and the worker exporter); this list is the contract.
HISTOGRAMS = {"svdq_job_queue_wait_seconds", "svdq_job_render_seconds", "svdq_http_request_duration_seconds",
              "svdq_worker_step_seconds"}
METRICS = HISTOGRAMS | {"svdq_jobs_finished_total", "svdq_jobs_queued", "svdq_jobs_running", "svdq_queue_depth",
                        "svdq_workers_ready", "svdq_worker_renders_total", "svdq_worker_failures_total",
                        "svdq_worker_peak_gpu_memory_bytes", "svdq_worker_model_load_seconds", "svdq_worker_busy"}
# Grafana's own variables, replaced by values of the same type before parsing
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """Every metric a PromQL expression selects, histogram series folded into their histogram."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    folded = set()
    for name in names:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        folded.add(base if base in HISTOGRAMS else name)
    return folded


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    panels = list(dashboard["panels"])
    for p in dashboard["panels"]:
        panels += p.get("panels", [])  # panels inside collapsed rows
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_metric_names_reads_selectors_not_text() -> None:
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate(svdq_job_render_seconds_bucket[5m])))') == {
        "svdq_job_render_seconds"}
    assert metric_names('sum(svdq_jobs_queued{model="svdq_fake"}) / up') == {"svdq_jobs_queued", "up"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(svdq_jobs_finished_total[5m])")


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_only_and_all_of_svdqs_metrics(path: Any) -> None:
    dashboard = json.loads(path.read_text())
    exprs = dashboard_exprs(dashboard)
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert {n for n in names if n.startswith("svdq_")} <= METRICS, expr
        used |= names
    assert METRICS - used == set(), f"not on the dashboard: {sorted(METRICS - used)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_the_provisioned_datasource(path: Any) -> None:
    provisioned = yaml.safe_load((MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
                                 .read_text())["datasources"]
    uids = {d["uid"] for d in provisioned}
    dashboard = json.loads(path.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]


def test_alert_rules_query_only_svdqs_metrics_and_scrape_jobs() -> None:
    prom = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    assert [f.rsplit("/", 1)[-1] for f in prom["rule_files"]] == [ALERTS.name]
    rules = alert_rules()
    assert rules
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names <= METRICS | {"up"}, rule["alert"]
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job in jobs, rule["alert"]


def test_alerts_cover_a_stalled_queue_failures_api_errors_slow_answers_and_a_dead_worker() -> None:
    """Queue growing with no workers, failure rate, API errors and latency, a worker down."""
    names = {r["alert"] for r in alert_rules()}
    assert {"SvdqQueueWithoutWorkers", "SvdqRenderFailureRate", "SvdqApi5xxRate", "SvdqApiLatencyHigh",
            "SvdqWorkerDown"} <= names


def test_every_alert_has_a_severity_a_summary_and_a_runbook_entry() -> None:
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "ops/README.md" and anchor == rule["alert"].lower() and anchor in headings, rule["alert"]
