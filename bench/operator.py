"""Operator benchmark (``make bench-operator``): against a real control plane started here.

- apply-to-children latency: create one RagService, time until its Deployment, Services and
  ConfigMap exist (repeated, p50/p95/max);
- time to reconcile N RagServices created at once (100, then 1,000): until every one reports
  ``status.observedGeneration == metadata.generation`` (all children applied, status written),
  and the API requests the operator sent per RagService until it went quiet: counted by the
  operator itself (its client's requests) and by the API server's audit log (every client by
  user agent, kopf's own requests included), with the CPU seconds of each component.

Writes ``bench/results/operator.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, watch

from tests.fixtures.controlplane import ControlPlane, ToolPaths
from tests.fixtures.operator_process import OperatorProcess, install_crd, ragservice

RESULTS = Path(__file__).resolve().parent / "results"
GROUP, VERSION, PLURAL = "kuberag.io", "v1alpha1", "ragservices"
# One audit event per request (when it completes), metadata only: who sent what, for counting.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
"""
# Clients by user agent: the operator's own client, and kopf's watches and Events, are the operator.
CLIENTS = (("kuberag-operator", "operator"), ("kopf/", "operator (kopf)"),
           ("kube-controller-manager", "kube-controller-manager"), ("kube-scheduler", "kube-scheduler"),
           ("kwok", "kwok"))
CREATE_THREADS = 8  # "created at once": several clients, as a GitOps tool or a script would send them


def _exists(fn) -> bool:
    try:
        fn()
        return True
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def apply_to_children(api: client.ApiClient, ns: str, runs: int) -> list[float]:
    custom, core, apps = client.CustomObjectsApi(api), client.CoreV1Api(api), client.AppsV1Api(api)
    latencies = []
    for i in range(runs):
        name = f"lat-{i}"
        start = time.perf_counter()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ragservice(name, ns))
        checks = [lambda n=name: apps.read_namespaced_deployment(n, ns),
                  lambda n=name: core.read_namespaced_service(n, ns),
                  lambda n=name: core.read_namespaced_service(f"{n}-metrics", ns),
                  lambda n=name: core.read_namespaced_config_map(f"{n}-config", ns)]
        deadline = start + 60
        while not all(_exists(c) for c in checks):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{name}: children did not appear within 60s")
            time.sleep(0.01)
        latencies.append(time.perf_counter() - start)
    return latencies


def _api_requests(samples: dict[str, float]) -> dict[str, float]:
    """kuberag_operator_api_requests_total by "METHOD resource"."""
    out = {}
    for key, value in samples.items():
        if key.startswith("kuberag_operator_api_requests_total{"):
            labels = dict(part.split("=", 1) for part in key[key.index("{") + 1:-1].split(","))
            out[f"{labels['method'].strip(chr(34))} {labels['resource'].strip(chr(34))}"] = value
    return out


class AuditLog:
    """The API server's audit log, read from where the last read stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def requests(self) -> tuple[Counter, Counter]:
        """(requests by client, operator requests by "verb resource") since the last skip/read."""
        by_client: Counter = Counter()
        by_call: Counter = Counter()
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            agent = event.get("userAgent") or ""
            who = next((name for prefix, name in CLIENTS if agent.startswith(prefix)), "other (the bench itself)")
            by_client[who] += 1
            if who.startswith("operator"):
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                by_call[f"{event.get('verb')} {resource}"] += 1
        return by_client, by_call


def reconcile_many(api: client.ApiClient, ns: str, count: int, replicas: int) -> dict:
    """Create ``count`` RagServices, then wait (watching, not polling: a list of 1,000 every 0.1 s
    would load the machine being measured) until each has its observedGeneration."""
    custom = client.CustomObjectsApi(api)
    done: set[str] = set()
    finished = threading.Event()

    def follow() -> None:
        while not finished.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                                           timeout_seconds=60):
                    obj = event["object"]
                    if (obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation"):
                        done.add(obj["metadata"]["name"])
                    if len(done) >= count:
                        finished.set()
                        stream.stop()
            except Exception:  # a dropped watch is restarted (it replays the current objects)
                time.sleep(0.5)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, ragservice(f"many-{i}", ns, {"replicas": replicas})), range(count)))
    created = time.perf_counter() - start
    if not finished.wait(timeout=900):
        raise RuntimeError(f"only {len(done)}/{count} RagServices reconciled within 900s")
    end = time.perf_counter()
    # The creates alone take seconds on a loaded machine (the API server admits each one): the
    # operator's own share is what it needed after the last create.
    return {"count": count, "replicas": replicas, "create_seconds": round(created, 3),
            "all_reconciled_seconds": round(end - start, 3),
            "reconciled_after_last_create_seconds": round(end - start - created, 3)}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User+system CPU seconds each process has used so far (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return out


def _medians(runs: list[dict]) -> list[dict]:
    """Per batch size: the median of each number over its runs."""
    out = []
    for count in dict.fromkeys(r["count"] for r in runs):
        same = [r for r in runs if r["count"] == count]
        out.append({"count": count, "runs": len(same), **{
            k: round(statistics.median(r[k] for r in same), 3)
            for k in ("create_seconds", "all_reconciled_seconds", "reconciled_after_last_create_seconds",
                      "api_requests_per_ragservice_total", "load_average_1m_at_end")}})
    return out


AFTERMATH_SECONDS = 15.0  # requests are counted until this long after the last RagService is reconciled


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.operator", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="apply-to-children samples")
    p.add_argument("--count", type=int, nargs="+", default=[100, 1000], help="RagServices created at once, one batch after another (each in its own namespace)")
    p.add_argument("--replicas", type=int, nargs="+", default=[2, 1],
                   help="spec.replicas of each RagService, per batch (the last one repeats)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each batch this many times (each in a new namespace); the medians are reported")
    args = p.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="kuberag-bench-operator-"))
    (work / "audit-policy.yaml").write_text(AUDIT_POLICY)
    audit = AuditLog(work / "audit.log")
    plane = ControlPlane(ToolPaths.load(), work, apiserver_args=[
        f"--audit-policy-file={work / 'audit-policy.yaml'}", f"--audit-log-path={audit.path}",
        "--audit-log-maxsize=0"])
    plane.start()
    op = None
    try:
        install_crd(plane)
        op = OperatorProcess(plane.kubeconfig, work / "operator.log").start()
        op.wait_healthy()
        with plane.api_client() as api:
            lat = apply_to_children(api, plane.create_namespace("bench-latency"), args.runs)
            many = []
            batches = [(n, count) for n, count in enumerate(args.count) for _ in range(args.repeat)]
            for i, (n, count) in enumerate(batches):
                replicas = args.replicas[min(n, len(args.replicas) - 1)]
                ns = plane.create_namespace(f"bench-many-{i}")
                before = _api_requests(op.metrics())
                audit.skip()
                pids = {"operator": op.proc.pid, **{k: p.pid for k, p in plane._processes.items()}}
                cpu_before = cpu_seconds(pids)
                run = reconcile_many(api, ns, count, replicas)
                cpu_after = cpu_seconds(pids)
                # Where the CPU went until every RagService was reconciled (2 cores shared with others).
                run["cpu_seconds"] = {k: round(cpu_after[k] - cpu_before.get(k, 0), 1) for k in cpu_after}
                run["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
                time.sleep(AFTERMATH_SECONDS)  # the pods turning ready, their status events
                after = _api_requests(op.metrics())
                calls = {k: round((v - before.get(k, 0)) / count, 2) for k, v in after.items() if v != before.get(k, 0)}
                # Every request from the first create until AFTERMATH_SECONDS after the last
                # reconcile (children's status events and the pod-health timer included).
                run["api_requests_per_ragservice"] = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
                run["api_requests_per_ragservice_total"] = round(sum(calls.values()), 2)
                # The same window seen by the API server: kopf's requests too, and every other client.
                by_client, by_call = audit.requests()
                run["audit_requests_per_ragservice_by_client"] = {
                    k: round(v / count, 2) for k, v in by_client.most_common()}
                run["audit_operator_requests_per_ragservice"] = {
                    k: round(v / count, 2) for k, v in by_call.most_common()}
                many.append(run)
                print(json.dumps(run), flush=True)
        samples = op.metrics()
    finally:
        if op is not None:
            op.stop()
        plane.stop()
    lat_sorted = sorted(lat)
    result = {
        "kubernetes_version": plane.tools.kubernetes_version,
        "apply_to_children_seconds": {
            "runs": len(lat), "p50": round(statistics.median(lat), 4),
            "p95": round(lat_sorted[max(0, int(0.95 * len(lat)) - 1)], 4), "max": round(max(lat), 4)},
        "load_average_before": load_before,
        "reconcile_many": many,
        "reconcile_many_medians": _medians(many),
        "operator_reconciles": {k: v for k, v in samples.items() if k.startswith("kuberag_operator_reconciles_total")},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "operator.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
