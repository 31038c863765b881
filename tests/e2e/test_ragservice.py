"""A user's path on real pods: install the operator (2 replicas, leader election, from the local
image), apply the sample RagService, call it from inside the cluster by its DNS name, change its
rate limit live, roll it to a new image tag under load, and survive faults.

The tests of this module share one operator install and one RagService and run in file order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster import (
    OPERATOR_NAMESPACE,
    QUERY_CLIENT,
    SCRAPE_INTERVAL,
    LoadClient,
    api_pods,
    condition,
    create_ragservice,
    diagnose,
    install_operator,
    kubectl_json,
    lease_holder,
    new_namespace,
    operator_pods,
    operator_pods_ready,
    pod_ready,
    ragservice,
    restart_counts,
    run_client,
    wait_available,
)
from tests.e2e.kind import KIND_CLUSTER
from tests.e2e.monitoring import cluster_prometheus
from tests.fixtures.controlplane import ControlPlane
from tests.fixtures.operator_process import wait_for
from tests.fixtures.realnode import CONFIGMAP_PROPAGATION_BOUND_SECONDS, REPO, RealNode

NAME = "docs-qa"
QUESTION = "How does kuberag rate limit clients?"
# Limits are per calling client (its IP here), each client pod sends from one IP: room for the load
# tests' steady 20 requests/s; the rate-limit test tightens and restores it.
ROOMY_LIMIT = {"requestsPerMinute": 60000, "burst": 1000}


@pytest.fixture(scope="module")
def docs_qa_namespace(real_node: RealNode, control_plane: ControlPlane) -> str:
    return new_namespace(control_plane, "e2e")


@pytest.fixture(scope="module")
def operator(docs_qa_namespace: str, real_node: RealNode, control_plane: ControlPlane,
             tmp_path_factory: pytest.TempPathFactory) -> str:
    # Before the operator starts, so it watches ServiceMonitors (kopf resolves its types at start).
    control_plane.install_servicemonitor_crd()
    # `helm test` asks the sample RagService of docs_qa_namespace.
    return install_operator(control_plane, real_node, tmp_path_factory.mktemp("operator"), docs_qa_namespace)


@pytest.fixture(scope="module")
def docs_qa(operator: str, docs_qa_namespace: str, real_node: RealNode, control_plane: ControlPlane) -> str:
    namespace = docs_qa_namespace
    create_ragservice(control_plane, real_node, namespace, NAME, replicas=2, spec={
        "rateLimit": ROOMY_LIMIT, "monitoring": {"serviceMonitor": {"enabled": True, "interval": SCRAPE_INTERVAL}}})
    start = time.monotonic()
    wait_available(control_plane, real_node, namespace, NAME, 2)
    print(f"\nRagService {namespace}/{NAME}: 2 pods Ready and Available {time.monotonic() - start:.1f}s after apply")
    return namespace


def endpoint(plane: ControlPlane, namespace: str) -> str:
    return ragservice(plane, namespace, NAME)["status"]["endpoint"]


def test_pods_ready_and_status_follows(docs_qa: str, real_node: RealNode, control_plane: ControlPlane) -> None:
    rag = ragservice(control_plane, docs_qa, NAME)
    assert rag["status"]["endpoint"] == f"http://{NAME}.{docs_qa}.svc:8000"
    assert rag["status"]["replicas"] == 2 and rag["status"]["readyReplicas"] == 2
    pods = api_pods(control_plane, docs_qa, NAME)
    assert len(pods) == 2
    for pod in pods:
        statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
        assert set(statuses) == {"api", "redis"}
        assert all(c["ready"] and "running" in c["state"] for c in statuses.values()), statuses
        assert statuses["api"]["image"].endswith(real_node.images["kuberag"]["ref"])
        # Running on the real node, with an IP from its pod CIDR.
        assert pod["spec"]["nodeName"] == "kuberag-node" and pod["status"]["podIP"].startswith("172.21.0.")
    # The operator reconciles from its pod: 2 replicas, one leader.
    assert len(operator_pods(control_plane)) == 2
    assert lease_holder(control_plane) in {p["metadata"]["name"] for p in operator_pods(control_plane)}


def test_client_pod_asks_by_dns_name_and_second_call_hits_the_cache(
    docs_qa: str, real_node: RealNode, control_plane: ControlPlane
) -> None:
    url = endpoint(control_plane, docs_qa) + "/query"
    first, second = run_client(control_plane, real_node, docs_qa, QUERY_CLIENT, url, "alice", QUESTION, QUESTION)
    assert first["status"] == 200 and second["status"] == 200, (first, second)
    assert first["body"]["sources"] and first["body"]["answer"]
    assert first["body"]["cache_hit"] is False
    # The Service may route the second call to the other pod: L1 there misses, the L2 sidecar is
    # per pod, so the hit is L1 (same pod) or a miss; ask the same pod twice for a sure hit.
    pods = api_pods(control_plane, docs_qa, NAME)
    pod_url = f"http://{pods[0]['status']['podIP']}:8000/query"
    # A question unlike any asked before (the L3 semantic cache would answer a paraphrase).
    fresh = "How is the answer cache invalidated when the documents change?"
    a, b = run_client(control_plane, real_node, docs_qa, QUERY_CLIENT, pod_url, "bob", fresh, fresh)
    assert a["body"]["cache_hit"] is False and b["body"]["cache_hit"] is True, (a["body"], b["body"])
    assert b["body"]["sources"] == a["body"]["sources"]
    # Through the Service: each pod computes the answer at most once, every other call is a hit.
    results = run_client(control_plane, real_node, docs_qa, QUERY_CLIENT, url, "carol", *[QUESTION] * 6)
    assert all(r["status"] == 200 for r in results)
    assert sum(r["body"]["cache_hit"] for r in results) >= 4, [r["body"]["cache_hit"] for r in results]


# Every panel of the RagService overview, and of the operator dashboard, with its variables.
DASHBOARDS = REPO / "dashboards"
# $__rate_interval: longer than the Prometheus below has run, so each rate spans all its samples.
RATE_WINDOW = "10m"
# Panels the load here cannot fill: no LLM (extractive answers), no error, no Redis error, no drift,
# no shared limiter, nothing not Available, no refused request yet (the rate-limit test comes later).
MAY_BE_EMPTY = {"LLM tokens", "LLM estimated cost", "LLM fallbacks and retries", "Errors by kind",
                "Cache backend errors", "Shared limiter fallback", "Drift corrections by kind",
                "RagServices not Available", "Rate-limited requests by scope", "Config reloads"}
CORE_PANELS = {"Requests/s", "Request rate by status", "POST /query latency", "p99 /query", "Cache hit ratio",
               "Cache hit ratio by level", "Cache hits and misses", "Dependency health", "Replicas: ready vs desired",
               "Ready / desired replicas", "Available", "Corpus", "Stage timings (p95)", "Leaders", "Managed RagServices",
               "Ready vs desired replicas"}


def _panel_queries(board_file: str) -> list[tuple[str, str, str]]:
    board = json.loads((DASHBOARDS / board_file).read_text())
    return [(p["title"], t.get("legendFormat", ""), t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def _substitute(expr: str, variables: dict[str, str]) -> str:
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${name}", variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


@pytest.mark.skipif(bool(KIND_CLUSTER), reason="Prometheus runs on this host and scrapes pod IPs through the node's "
                    "CNI bridge: kind's pod network is not routed to the Docker host")
def test_prometheus_scrapes_the_pods_the_servicemonitors_select_and_the_dashboards_have_data(
    operator: str, docs_qa: str, real_node: RealNode, control_plane: ControlPlane, tmp_path: Path
) -> None:
    ns = docs_qa
    # The operator's ServiceMonitor selects the metrics Service, and only it, by its labels and port name.
    sm = kubectl_json(control_plane, "get", "servicemonitor", NAME, "-n", ns)
    selector = sm["spec"]["selector"]["matchLabels"]
    services = kubectl_json(control_plane, "get", "services", "-n", ns)["items"]
    selected = [s for s in services if selector.items() <= s["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in selected] == [f"{NAME}-metrics"], selector
    [sm_endpoint] = sm["spec"]["endpoints"]
    assert [(p["name"], p["port"]) for p in selected[0]["spec"]["ports"]] == [(sm_endpoint["port"], 9090)]
    # ... whose Endpoints list the real API pods by their pod IPs.
    pods = api_pods(control_plane, ns, NAME)
    endpoints = kubectl_json(control_plane, "get", "endpoints", f"{NAME}-metrics", "-n", ns)
    listed = {(a["ip"], a["targetRef"]["name"]) for subset in endpoints["subsets"] for a in subset.get("addresses", [])}
    assert listed == {(p["status"]["podIP"], p["metadata"]["name"]) for p in pods}
    assert all(port["name"] == sm_endpoint["port"] and port["port"] == 9090
               for subset in endpoints["subsets"] for port in subset["ports"])
    # The chart's ServiceMonitor for the operator and its PrometheusRule.
    assert operator == "helm", "the operator's ServiceMonitor and PrometheusRule come with the chart"
    operator_sm = kubectl_json(control_plane, "get", "servicemonitor", "-n", OPERATOR_NAMESPACE)["items"]
    [rule] = kubectl_json(control_plane, "get", "prometheusrule", "-n", OPERATOR_NAMESPACE)["items"]
    rules_file = tmp_path / "kuberag.rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))

    # A pod's labelled series (a route's requests, a cache level's hits) appear at its first such
    # request: a miss and an L1 hit on each pod now, before Prometheus starts, so every series the
    # load below increases already exists and rate() over the window sees all of the load (a series
    # born during the load would start at its count so far).
    warmup = "What does a warm-up question do?"
    for pod in pods:
        answers = run_client(control_plane, real_node, ns, QUERY_CLIENT, f"http://{pod['status']['podIP']}:8000/query",
                             "warmup", warmup, warmup)
        assert [(r["status"], r["body"]["cache_hit"]) for r in answers] == [(200, False), (200, True)], answers

    prom = cluster_prometheus(control_plane, tmp_path, [sm, *operator_sm], [rules_file])
    try:
        pod_labels = {f"{p['status']['podIP']}:9090": p["metadata"]["name"] for p in pods}

        def api_targets_up() -> list[dict] | None:
            active = prom.api("targets")["activeTargets"]
            mine = [t for t in active if t["labels"].get("service") == f"{NAME}-metrics"]
            return mine if len(mine) == len(pods) and all(t["health"] == "up" for t in mine) else None

        targets = wait_for(api_targets_up, timeout=120, what="Prometheus scraping both API pods", interval=1,
                           diagnose=lambda: json.dumps(prom.api("targets"), indent=1)[-4000:] + prom.log_tail())
        # Discovered from the Endpoints: the pod IPs, labelled as the ServiceMonitor's relabelling says.
        assert {t["discoveredLabels"]["__address__"]: t["labels"]["pod"] for t in targets} == pod_labels
        for t in targets:
            assert t["scrapeUrl"] == f"http://{t['discoveredLabels']['__address__']}/metrics"
            assert {k: t["labels"][k] for k in ("namespace", "ragservice", "container", "endpoint", "job")} == {
                "namespace": ns, "ragservice": NAME, "container": "api", "endpoint": "metrics", "job": f"{NAME}-metrics"}
        operator_ips = {f"{p['status']['podIP']}:8080" for p in operator_pods(control_plane)}
        prom.wait_for('count(up{job="kuberag-operator", namespace="kuberag-system"} == 1)',
                      lambda v: v == len(operator_ips), timeout=120, what="both operator pods scraped")
        scraped = {t["discoveredLabels"]["__address__"] for t in prom.api("targets")["activeTargets"]
                   if t["labels"].get("job") == "kuberag-operator"}
        assert scraped == operator_ips

        # The counters before the load, once each pod has been scraped a few times.
        sel = f'namespace="{ns}", ragservice="{NAME}"'
        prom.wait_for(f'min(count_over_time(up{{{sel}}}[{RATE_WINDOW}]))', lambda v: (v or 0) >= 3, timeout=60,
                      what="three scrapes of each API pod")
        counters = {"queries": f'sum(kuberag_http_requests_total{{{sel}, route="/query"}})',
                    "hits": f"sum(kuberag_cache_hits_total{{{sel}}})", "misses": f"sum(kuberag_cache_misses_total{{{sel}}})"}
        before = {k: prom.value(q) or 0.0 for k, q in counters.items()}
        # The load: questions never asked before, each three times through the Service (by DNS name).
        questions = ["Which labels does the ServiceMonitor add?", "Where are the dashboards generated from?",
                     "What does the Redis sidecar cache?"]
        results = run_client(control_plane, real_node, ns, QUERY_CLIENT, endpoint(control_plane, ns) + "/query",
                             "mallory", *[q for q in questions for _ in range(3)])
        assert [r["status"] for r in results] == [200] * 9, results
        hits = sum(r["body"]["cache_hit"] for r in results)
        prom.wait_for(counters["queries"], lambda v: v == before["queries"] + len(results), timeout=60,
                      what="every query of the load scraped from the pods")
        # Hits and misses as the responses said (each pod counts its own; the sums are exact).
        after = {k: prom.value(q) for k, q in counters.items()}
        assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (hits, len(results) - hits)
        time.sleep(3)  # the rules evaluated on the last scrape too

        variables = {"namespace": ns, "ragservice": NAME, "__rate_interval": RATE_WINDOW, "job": "kuberag-operator"}
        empty, values = [], {}
        for board_file in ("ragservice-overview.json", "operator.json"):
            for title, legend, expr in _panel_queries(board_file):
                result = prom.query(_substitute(expr, variables))  # raises with Prometheus's error
                values[(title, legend)] = result
                if not result:
                    empty.append(title)
        assert not set(empty) & CORE_PANELS, f"core panels without data from the real pods: {sorted(set(empty))}"
        assert set(empty) <= MAY_BE_EMPTY, sorted(set(empty))

        def value(title: str, legend: str) -> float:
            [sample] = values[(title, legend)]
            return float(sample["value"][1])

        def by(title: str, legend: str, label: str) -> dict[str, float]:
            return {r["metric"].get(label, ""): float(r["value"][1]) for r in values[(title, legend)]}

        # Request rate, latency quantiles, hit ratio, Redis health, replicas: from the two real pods.
        assert by("Request rate by status", "{{status}}", "status")["200"] > 0
        latency = {q: value("POST /query latency", q) for q in ("p50", "p95", "p99")}
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= 30, latency
        # (rate() extrapolates each pod's series a little differently: close, not exact.)
        assert value("Cache hit ratio", "Cache hit ratio") == pytest.approx(hits / len(results), abs=0.05)
        assert value("Dependency health", "redis sidecar (L2)") == 1
        assert by("Dependency health", "{{dependency}}", "dependency")["redis"] == 1
        assert value("Replicas: ready vs desired", "ready") == 2 and value("Replicas: ready vs desired", "desired") == 2
        assert value("Replicas: ready vs desired", "pods scraped") == 2
        assert value("Ready / desired replicas", "Ready / desired replicas") == 1
        assert value("Available", "Available") == 1
        # One leader between the two operator pods.
        assert value("Leaders", "Leaders") == 1

        # The chart's rules load and evaluate on the real series.
        rules = prom.rules()
        assert rules and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules
                                                                    if r["health"] != "ok"]
        recorded = [r["name"] for r in rules if r["type"] == "recording"]
        assert recorded and not [name for name in recorded if not prom.query(f"{name}{{{sel}}}")], \
            "recording rules without data for the loaded RagService"
    finally:
        prom.stop()


# Each API pod limits each client (here: the client pod's IP) on its own. PROBE_LIMIT polls every
# pod until its RateLimit-Limit header shows the expected burst; BURST then spends a fresh
# client's bucket on each pod (run it from a new pod: a new IP, a full bucket).
LIMIT_PROBE = r"""
import json, sys, time, urllib.error, urllib.request
mode, expected, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
def ask(url):
    req = urllib.request.Request(url, data=json.dumps({"question": "What is kuberag?"}).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers  # (case-insensitive lookups)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers
result = {}
for ip in sys.argv[4:]:
    url, start = f"http://{ip}:8000/query", time.monotonic()
    if mode == "poll":
        while True:
            status, headers = ask(url)
            if headers.get("RateLimit-Limit") == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        result[ip] = {"limit": headers.get("RateLimit-Limit"), "seconds": round(time.monotonic() - start, 1)}
    else:
        answers = [ask(url) for _ in range(int(expected) + 2)]
        result[ip] = {"statuses": [s for s, _ in answers], "limit": answers[0][1].get("RateLimit-Limit"),
                      "retry_after": answers[-1][1].get("Retry-After")}
print(json.dumps(result))
"""


def test_helm_test_passes(operator: str, docs_qa: str, control_plane: ControlPlane) -> None:
    if operator != "helm":
        pytest.skip("the operator was installed from manifests/ (no charts/kuberag): no release to test")
    result = subprocess.run([str(control_plane.tools.helm), "test", "kuberag", "--namespace", OPERATOR_NAMESPACE,
                             "--kubeconfig", str(control_plane.kubeconfig), "--timeout", "5m", "--logs"],
                            capture_output=True, text=True, timeout=360)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Succeeded" in result.stdout


def test_live_rate_limit_change_is_enforced_without_restarts(
    docs_qa: str, real_node: RealNode, control_plane: ControlPlane
) -> None:
    pods = api_pods(control_plane, docs_qa, NAME)
    before = restart_counts(pods)
    uids = {p["metadata"]["uid"] for p in pods}
    ips = [p["status"]["podIP"] for p in pods]
    old_hash = ragservice(control_plane, docs_qa, NAME)["status"]["configHash"]
    [start_limits] = run_client(control_plane, real_node, docs_qa, LIMIT_PROBE, "poll", str(ROOMY_LIMIT["burst"]), "0", *ips)
    assert {v["limit"] for v in start_limits.values()} == {str(ROOMY_LIMIT["burst"])}, start_limits

    changed = time.monotonic()
    control_plane.kubectl("patch", "ragservice", NAME, "-n", docs_qa, "--type=merge",
                          "-p", json.dumps({"spec": {"rateLimit": {"requestsPerMinute": 1, "burst": 3}}}))
    # Generous for a loaded machine; the measured delay is printed.
    [seen] = run_client(control_plane, real_node, docs_qa, LIMIT_PROBE, "poll", "3", "120", *ips)
    print(f"\nnew rate limit seen by both pods {time.monotonic() - changed:.1f}s after the patch "
          f"(kubelet bound ~{CONFIGMAP_PROPAGATION_BOUND_SECONDS:.0f}s, plus the client pod's start): {seen}")
    assert {v["limit"] for v in seen.values()} == {"3"}, seen
    [burst] = run_client(control_plane, real_node, docs_qa, LIMIT_PROBE, "burst", "3", "0", *ips)
    for ip, result in burst.items():
        assert result["statuses"] == [200, 200, 200, 429, 429], (ip, result)
        assert int(result["retry_after"]) > 0
    pods = api_pods(control_plane, docs_qa, NAME)
    assert {p["metadata"]["uid"] for p in pods} == uids, "the pods were replaced"
    assert restart_counts(pods) == before, "a container restarted"
    assert ragservice(control_plane, docs_qa, NAME)["status"]["configHash"] != old_hash
    # Back to the roomy limits for the tests that follow.
    control_plane.kubectl("patch", "ragservice", NAME, "-n", docs_qa, "--type=merge",
                          "-p", json.dumps({"spec": {"rateLimit": ROOMY_LIMIT}}))
    [back] = run_client(control_plane, real_node, docs_qa, LIMIT_PROBE, "poll", str(ROOMY_LIMIT["burst"]), "120", *ips)
    assert {v["limit"] for v in back.values()} == {str(ROOMY_LIMIT["burst"])}, back


def test_rolling_update_to_a_new_image_tag_under_load_has_no_failed_request(
    docs_qa: str, real_node: RealNode, control_plane: ControlPlane
) -> None:
    image = real_node.images["kuberag"]
    new_ref = real_node.tag_image(image["ref"], f"{image['name']}:{image['tag']}-rolled")
    old_pods = {p["metadata"]["name"] for p in api_pods(control_plane, docs_qa, NAME)}
    load = LoadClient(control_plane, real_node, docs_qa, endpoint(control_plane, docs_qa) + "/query").start()
    time.sleep(3)  # steady state before the change
    control_plane.kubectl("patch", "ragservice", NAME, "-n", docs_qa, "--type=merge",
                          "-p", json.dumps({"spec": {"image": new_ref}}))

    def rolled() -> bool:
        pods = api_pods(control_plane, docs_qa, NAME)
        all_pods = kubectl_json(control_plane, "get", "pods", "-n", docs_qa, "-l", f"app.kubernetes.io/instance={NAME}")["items"]
        return (len(pods) == 2 and all(pod_ready(p) for p in pods) and not ({p["metadata"]["name"] for p in all_pods} & old_pods)
                and all(p["spec"]["containers"][0]["image"] == new_ref for p in pods))

    wait_for(rolled, timeout=300, what="the rollout to the new tag", interval=1,
             diagnose=lambda: diagnose(control_plane, real_node, docs_qa))
    time.sleep(3)  # and steady state after it
    summary = load.stop()
    print(f"\nrolling update under load: {summary}")
    assert summary["counts"].get("200", 0) > 50, summary
    assert set(summary["counts"]) == {"200"}, f"failed requests during the rollout: {summary}"
    wait_available(control_plane, real_node, docs_qa, NAME, 2)


def _container(pod: dict, name: str) -> dict:
    return next(c for c in pod["status"]["containerStatuses"] if c["name"] == name)


# The pod's own view of its Redis sidecar, from its metrics port (as Prometheus and the operator read it).
REDIS_UP = r"""
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}:9090/metrics", timeout=5).read().decode()
match = re.search(r'^kuberag_dependency_up{dependency="redis"} (\S+)', text, re.M)
print('{"redis_up": %s}' % (match.group(1) if match else "null"))
"""


def test_killed_redis_sidecar_is_restarted_and_requests_keep_succeeding(
    docs_qa: str, real_node: RealNode, control_plane: ControlPlane
) -> None:
    pod = api_pods(control_plane, docs_qa, NAME)[0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    redis = _container(pod, "redis")
    load = LoadClient(control_plane, real_node, docs_qa, f"http://{ip}:8000/query").start()
    real_node.kill_container(redis["containerID"])

    def restarted() -> dict | None:
        current = kubectl_json(control_plane, "get", "pod", name, "-n", docs_qa)
        c = _container(current, "redis")
        return current if c["restartCount"] == redis["restartCount"] + 1 and c["ready"] else None

    wait_for(restarted, timeout=120, what="the kubelet restarting the killed Redis sidecar", interval=1)
    # L2 comes back by itself (the breaker's probe).
    wait_for(lambda: run_client(control_plane, real_node, docs_qa, REDIS_UP, ip)[0]["redis_up"] == 1,
             timeout=90, what="L2 Redis up again (kuberag_dependency_up)", interval=1)
    summary = load.stop()
    assert set(summary["counts"]) == {"200"}, f"requests failed while Redis was down: {summary}"
    assert _container(kubectl_json(control_plane, "get", "pod", name, "-n", docs_qa), "api")["restartCount"] == \
        _container(pod, "api")["restartCount"]


def test_deleted_api_pod_service_keeps_answering(docs_qa: str, real_node: RealNode, control_plane: ControlPlane) -> None:
    victim = api_pods(control_plane, docs_qa, NAME)[0]["metadata"]["name"]
    load = LoadClient(control_plane, real_node, docs_qa, endpoint(control_plane, docs_qa) + "/query").start()
    time.sleep(2)
    control_plane.kubectl("delete", "pod", victim, "-n", docs_qa, "--wait=true", timeout=120)
    wait_available(control_plane, real_node, docs_qa, NAME, 2)
    summary = load.stop()
    assert set(summary["counts"]) == {"200"}, f"requests failed while a pod was deleted: {summary}"
    assert victim not in {p["metadata"]["name"] for p in api_pods(control_plane, docs_qa, NAME)}


def test_killed_leader_operator_is_replaced_and_the_other_reconciles(
    docs_qa: str, real_node: RealNode, control_plane: ControlPlane
) -> None:
    leader = lease_holder(control_plane)
    pod = kubectl_json(control_plane, "get", "pod", leader, "-n", OPERATOR_NAMESPACE)
    # A crash (SIGKILL: no Lease release), and the pod is gone for good (as when its node dies):
    # a restarted container would come back under the same identity and simply renew.
    real_node.kill_container(pod["status"]["containerStatuses"][0]["containerID"])
    killed = time.monotonic()
    control_plane.kubectl("delete", "pod", leader, "-n", OPERATOR_NAMESPACE, "--wait=false")
    new_leader = wait_for(lambda: (h := lease_holder(control_plane)) and h != leader and h, timeout=120,
                          what="another operator pod taking the Lease", interval=0.5,
                          diagnose=lambda: diagnose(control_plane, real_node, OPERATOR_NAMESPACE))
    print(f"\nleader {leader} SIGKILLed and deleted; {new_leader} took the Lease after {time.monotonic() - killed:.1f}s")
    namespace = new_namespace(control_plane, "e2e-failover")
    create_ragservice(control_plane, real_node, namespace, "after-failover", replicas=1)
    rag = wait_available(control_plane, real_node, namespace, "after-failover", 1)
    assert (condition(rag, "Available") or {}).get("status") == "True"
    wait_for(lambda: operator_pods_ready(control_plane) == 2, timeout=180, what="the operator back to 2 pods")
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")


def test_stopped_redis_sidecar_shows_in_the_ragservice_status(
    docs_qa: str, real_node: RealNode, control_plane: ControlPlane
) -> None:
    pod = api_pods(control_plane, docs_qa, NAME)[0]
    redis = _container(pod, "redis")
    # Frozen, not killed: the kubelet does not restart it, the API's L2 calls time out.
    real_node.kill_container(redis["containerID"], signal.SIGSTOP)
    try:
        load = LoadClient(control_plane, real_node, docs_qa, f"http://{pod['status']['podIP']}:8000/query").start()

        def redis_down() -> dict | None:
            c = condition(ragservice(control_plane, docs_qa, NAME), "DependenciesReady") or {}
            return c if c.get("status") == "False" else None

        down = wait_for(redis_down, timeout=180, what="DependenciesReady=False for the stopped Redis", interval=1,
                        diagnose=lambda: json.dumps(ragservice(control_plane, docs_qa, NAME).get("status"), indent=1))
        assert down["reason"] == "RedisDown" and pod["metadata"]["name"] in down["message"], down
        summary = load.stop()
        # Answers still come (degraded, L2 skipped): only the rate of success matters here.
        assert summary["counts"].get("200", 0) > 0, summary
    finally:
        real_node.kill_container(redis["containerID"], signal.SIGCONT)
    wait_for(lambda: (condition(ragservice(control_plane, docs_qa, NAME), "DependenciesReady") or {}).get("status") == "True",
             timeout=180, what="DependenciesReady=True again once Redis runs", interval=1)
