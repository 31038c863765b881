"""Dashboards and rules against a real Prometheus scraping a real ``kuberag serve`` and operator.

Two API processes labelled as RagServices ``NS/docs-qa`` and ``NS/faq`` (the labels the operator's
ServiceMonitor gives API pods) and the operator reconciling a RagService on the real control plane
are scraped every second by Prometheus (Debian's package), which evaluates
``dashboards/rules/kuberag.rules.yaml``. After a scripted load (misses, hits of each level, 429s, a
Redis outage, config reloads) every panel query and every rule is evaluated through Prometheus's
HTTP API, and the core panels must show what the load did.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client

from dashboards.rules import DEFAULTS, rule_groups
from tests.fixtures.monitoring import ApiProcess, scripted_load
from tests.fixtures.operator_process import OperatorProcess, install_crd, ragservice, wait_for
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
RULES = DASHBOARDS / "rules/kuberag.rules.yaml"
# $__rate_interval for the checks: longer than the scenario, so every rate starts at the counters' 0
# (the same extrapolation for each series: ratios of rates are exact).
RANGE = "10m"


def panel_queries(board: dict) -> list[tuple[str, str, str]]:
    return [(p["title"], t.get("legendFormat", ""), t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${name}", variables[name])
    assert "$" not in expr.replace("$labels", ""), f"unsubstituted variable in {expr}"
    return expr


@pytest.fixture(scope="module")
def scenario(control_plane, tmp_path_factory):
    work = tmp_path_factory.mktemp("monitoring")
    namespace = f"mon-{uuid.uuid4().hex[:6]}"
    redis = RedisServer(work / "redis")
    redis.start()
    main = ApiProcess(work / "docs-qa", namespace, "docs-qa", redis.url).start()
    other = ApiProcess(work / "faq", namespace, "faq", None).start()
    # The operator (admin credentials: RBAC is the chart and RBAC tests' business) with a RagService.
    install_crd(control_plane)
    control_plane.create_namespace(namespace)
    with control_plane.api_client() as api:
        client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
            metadata=client.V1ObjectMeta(name="admin"), string_data={"apiKey": "k"}))
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "kuberag.io", "v1alpha1", namespace, "ragservices",
            ragservice("docs-qa", namespace, {"replicas": 2, "adminKeySecretRef": {"name": "admin"}}))
    operator = OperatorProcess(control_plane.kubeconfig, work / "operator.log").start()
    prom = None
    try:
        main.wait_ready()
        other.wait_ready()
        operator.wait_healthy()
        prom = PrometheusServer(work / "prometheus", [
            {"job_name": "kuberag-api", "static_configs": [
                {"targets": [f"127.0.0.1:{api.metrics_port}"], "labels": api.target_labels} for api in (main, other)]},
            # honor_labels: the operator's per-RagService series carry their own namespace label.
            {"job_name": "kuberag-operator", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{operator.metrics_port}"]}]},
        ], rule_files=[RULES]).start()
        prom.wait_for('count(up{job=~"kuberag-api|kuberag-operator"} == 1)', lambda v: v == 3, what="3 targets up")
        prom.wait_for(f'kuberag_operator_ragservice_available{{namespace="{namespace}", ragservice="docs-qa"}}',
                      lambda v: v == 1, timeout=90, what="the operator's Available gauge of docs-qa")
        def settle() -> None:  # one more scrape of the API after each phase
            time.sleep(2.5)

        record = scripted_load(main, redis, settle)
        for q in ("Which port does the Redis sidecar listen on?", "How long does black tea take?"):
            httpx.post(other.base + "/query", json={"question": q, "user_id": "b"}, timeout=60)
        httpx.post(other.base + "/query", json={"question": "How long does black tea take?", "user_id": "b"}, timeout=60)
        # Prometheus has seen the whole load once the counters it stores equal the responses' count.
        sel = f'namespace="{namespace}", ragservice="docs-qa"'
        prom.wait_for(f'sum(kuberag_http_requests_total{{{sel}, route="/query"}})',
                      lambda v: v == sum(record.statuses.values()), what="every /query of the load scraped")
        prom.wait_for(f'sum(kuberag_http_requests_total{{namespace="{namespace}", ragservice="faq", route="/query"}})',
                      lambda v: v == 3, what="faq's 3 queries scraped")
        time.sleep(3)  # and the recording rules evaluated on them
        yield {"prom": prom, "record": record, "namespace": namespace, "main": main, "other": other,
               "operator": operator, "variables": {"namespace": namespace, "ragservice": "docs-qa",
                                                   "__rate_interval": RANGE, "job": "kuberag-operator"}}
    finally:
        if prom is not None:
            prom.stop()
        # Leave nothing for later modules' operators (their metrics and events are global): delete
        # the RagService while this operator runs (it forgets it), then its namespace.
        with control_plane.api_client() as api:
            custom = client.CustomObjectsApi(api)
            custom.delete_namespaced_custom_object("kuberag.io", "v1alpha1", namespace, "ragservices", "docs-qa")

            def deleted() -> bool:
                try:
                    custom.get_namespaced_custom_object("kuberag.io", "v1alpha1", namespace, "ragservices", "docs-qa")
                except client.ApiException as exc:
                    return exc.status == 404
                return False

            wait_for(deleted, timeout=60, what="the monitoring RagService deleted", diagnose=operator.log_tail)
            client.CoreV1Api(api).delete_namespace(namespace)
        operator.stop()
        for api in (main, other):
            api.stop()
        redis.stop()


def test_every_panel_query_evaluates_and_the_core_panels_have_data(scenario):
    prom, variables = scenario["prom"], scenario["variables"]
    empty = []
    for board_file in ("ragservice-overview.json", "operator.json"):
        board = json.loads((DASHBOARDS / board_file).read_text())
        for title, _legend, expr in panel_queries(board):
            result = prom.query(substitute(expr, variables))  # raises with Prometheus's error
            if not result:
                empty.append(f"{board_file}: {title}: {expr}")
    core = ("Request rate by status", "POST /query latency", "Cache hit ratio by level", "Cache hits and misses",
            "Rate-limited requests by scope", "Dependency health", "Stage timings (p95)", "Corpus",
            "Degraded answers by cause", "Config reloads", "Replicas: ready vs desired", "Reconciles by result",
            "Reconcile duration", "Managed RagServices", "Leader")
    assert not [e for e in empty if e.split(": ")[1] in core], "core panels without data:\n" + "\n".join(empty)
    # Only panels whose events the load cannot cause here may be empty (LLM tokens: no LLM; errors, drift).
    assert {e.split(": ")[1] for e in empty} <= {"LLM tokens", "LLM estimated cost", "LLM fallbacks and retries",
                                                   "Errors by kind", "Cache backend errors",
                                                   "Drift corrections by kind", "RagServices not Available",
                                                   "Shared limiter fallback"}, empty


def _panel(title: str) -> list[tuple[str, str]]:
    board = json.loads((DASHBOARDS / "ragservice-overview.json").read_text())
    return [(legend, expr) for t, legend, expr in panel_queries(board) if t == title]


def _by(result: list[dict], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def test_core_panels_match_what_the_load_did(scenario):
    prom, rec, variables = scenario["prom"], scenario["record"], scenario["variables"]
    looked = sum(rec.levels.values())
    # The counters behind the panels hold the exact counts of the load.
    ns = scenario["namespace"]
    counted = {level: prom.value(f'kuberag_cache_hits_total{{namespace="{ns}", ragservice="docs-qa", level="{level}"}}')
               for level in ("l1", "l2", "l3")}
    counted["miss"] = prom.value(f'kuberag_cache_misses_total{{namespace="{ns}", ragservice="docs-qa"}}')
    assert counted == {k: float(rec.levels[k]) for k in counted}, (counted, rec.levels)
    # Hit ratio by level: every counter starts at 0 in the same scrapes, so the ratio of rates is exact.
    ((_, expr),) = _panel("Cache hit ratio by level")
    ratios = _by(prom.query(substitute(expr, variables)), "level")
    for level in ("l1", "l2", "l3"):
        assert ratios[level] == pytest.approx(rec.levels[level] / looked, abs=0.01), (level, ratios, rec.levels)
    hits = dict(_panel("Cache hits and misses"))
    by_level = _by(prom.query(substitute(hits["hit {{level}}"], variables)), "level")
    miss = prom.value(substitute(hits["miss"], variables))
    assert by_level["l1"] / miss == pytest.approx(rec.levels["l1"] / rec.levels["miss"], rel=0.01)
    # Request rate by status: 200s and 429s. (A status series appears with its first request, so
    # rate() misses the 429s before its first scrape; the limiter's counter starts at 0 and has them all.)
    ((_, expr),) = _panel("Request rate by status")
    by_status = _by(prom.query(substitute(expr, variables)), "status")
    assert rec.statuses[429] >= 4 and by_status["429"] > 0
    ((_, expr),) = _panel("Rate-limited requests by scope")
    limited = _by(prom.query(substitute(expr, variables)), "scope")
    # Refusals per answered query (every 200 is one cache lookup: both counters start at 0).
    lookups = sum(by_level.values()) + miss
    assert limited["perReplica"] / lookups == pytest.approx(rec.statuses[429] / rec.statuses[200], rel=0.01)
    assert prom.value(f'sum(kuberag_rate_limited_requests_total{{namespace="{ns}", ragservice="docs-qa"}})') \
        == rec.statuses[429]
    # Latency quantiles: ordered, and the median inside the range the responses reported.
    lat = {legend: prom.value(substitute(expr, variables)) for legend, expr in _panel("POST /query latency")}
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= 10, lat
    # Redis health: down during the outage, up after it; degraded answers counted with cause l2.
    redis_expr = dict(_panel("Dependency health"))["redis sidecar (L2)"]
    assert prom.value(substitute(redis_expr, variables), at=rec.redis_down_at + 2) == 0
    assert prom.value(substitute(redis_expr, variables)) == 1
    degraded = _by(prom.query(substitute(_panel("Degraded answers by cause")[0][1], variables)), "cause")
    assert degraded["l2"] > 0 and degraded["limiter"] == 0
    assert prom.value(f'sum(kuberag_degraded_answers_total{{namespace="{ns}", ragservice="docs-qa"}})') == rec.degraded
    # Config: one reload applied, one file refused, and the gauge the alert watches says so.
    reloads = dict(_panel("Config reloads"))
    assert prom.value(f'kuberag_config_reloads_total{{namespace="{ns}", ragservice="docs-qa"}}') == 1
    assert prom.value(f'kuberag_config_reload_errors_total{{namespace="{ns}", ragservice="docs-qa"}}') == 1
    assert prom.value(substitute(reloads["last reload ok"], variables)) == 0
    # Replicas: the operator's view of the RagService (kwok pods turn Ready).
    replicas = dict(_panel("Replicas: ready vs desired"))
    assert prom.value(substitute(replicas["desired"], variables)) == 2
    assert prom.value(substitute(replicas["ready"], variables)) == 2


def test_the_ragservice_variable_filters_two_ragservices_apart(scenario):
    prom, variables = scenario["prom"], scenario["variables"]
    ns = scenario["namespace"]
    rec = scenario["record"]
    hits = dict(_panel("Cache hits and misses"))
    faq = {**variables, "ragservice": "faq"}
    # faq: 2 misses and 1 L1 hit; docs-qa: the load's counts (counters from 0: exact ratios).
    main_l1 = _by(prom.query(substitute(hits["hit {{level}}"], variables)), "level")["l1"]
    faq_l1 = _by(prom.query(substitute(hits["hit {{level}}"], faq)), "level")["l1"]
    main_miss, faq_miss = (prom.value(substitute(hits["miss"], v)) for v in (variables, faq))
    assert faq_l1 / faq_miss == pytest.approx(1 / 2, rel=0.01)
    assert main_l1 / main_miss == pytest.approx(rec.levels["l1"] / rec.levels["miss"], rel=0.01)
    # Across two targets rate()'s extrapolation to the window's end differs a little (scrape phase).
    assert main_miss / faq_miss == pytest.approx(rec.levels["miss"] / 2, rel=0.05)
    ((_, expr),) = _panel("Request rate by status")
    assert prom.query(substitute(expr, faq))
    # And a namespace with no such RagService shows nothing.
    assert not prom.query(substitute(expr, {**variables, "namespace": "elsewhere"}))
    hits = f'kuberag_cache_hits_total{{namespace="{ns}", ragservice="faq", level="l1"}}'
    assert prom.value(hits) == 1


def test_every_rule_evaluates_without_error(scenario):
    prom, ns = scenario["prom"], scenario["namespace"]
    rules = prom.rules()
    assert len(rules) == sum(len(g["rules"]) for g in rule_groups(DEFAULTS)["groups"])
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    for rule in rule_groups(DEFAULTS)["groups"][0]["rules"]:
        prom.query(rule["expr"])  # the expression itself, through the HTTP API
        result = prom.query(f'{rule["record"]}{{namespace="{ns}", ragservice="docs-qa"}}')
        assert result, f"recording rule {rule['record']} has no data for the loaded RagService"
    ratio = prom.value(f'namespace_ragservice:kuberag_cache_hit_ratio:rate5m{{namespace="{ns}", ragservice="docs-qa"}}')
    rec = scenario["record"]
    assert ratio == pytest.approx(1 - rec.levels["miss"] / sum(rec.levels.values()), abs=0.02)
    for rule in rule_groups(DEFAULTS)["groups"][1]["rules"]:
        prom.query(rule["expr"])


_METRIC = re.compile(r"(?<![:\w])(kuberag_[a-z0-9_]+)")


def _exported(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_every_metric_in_dashboards_and_rules_is_exported(scenario):
    exported = _exported(scenario["main"].exposition()) | _exported(httpx.get(
        f"http://127.0.0.1:{scenario['operator'].metrics_port}/metrics", timeout=5).text)
    used = {}
    for board_file in ("ragservice-overview.json", "operator.json"):
        for title, _legend, expr in panel_queries(json.loads((DASHBOARDS / board_file).read_text())):
            for name in _METRIC.findall(expr):
                used.setdefault(name, f"{board_file}: {title}")
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name in _METRIC.findall(rule["expr"]):
                used.setdefault(name, f"rule {rule.get('alert') or rule.get('record')}")
    assert len(used) >= 25
    missing = {name: where for name, where in used.items() if name not in exported}
    assert not missing, f"used but not exported: {missing}"


def test_promtool_checks_and_tests_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make system-deps` (apt-get install prometheus)")
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(DASHBOARDS / "rules/kuberag.rules.test.yaml")]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "SUCCESS" in out.stdout + out.stderr
