"""What the end-to-end tests do to the cluster as a user would: install the operator, apply a
RagService, read its status, and drive it from client pods inside the cluster."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.controlplane import ControlPlane
from tests.fixtures.operator_process import wait_for
from tests.fixtures.realnode import REPO, RealNode

OPERATOR_NAMESPACE = "kuberag-system"
OPERATOR_LEASE = "kuberag-operator"
SAMPLE = REPO / "manifests" / "samples" / "kuberag.io_v1alpha1_ragservice.yaml"
# Of the ServiceMonitors (the operator's and the RagService's): short, so the monitoring test waits seconds.
SCRAPE_INTERVAL = "2s"
CORPUS = REPO / "api" / "kuberag_api" / "data" / "sample_corpus"
# Client pods run like the operator's: non-root, read-only root, no capabilities.
RESTRICTED_SECURITY = {
    "pod": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
    "container": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
}

# A client inside the cluster: POSTs questions to URL and prints one JSON line per response.
# Runs from the kuberag image (its Python), so it needs nothing but the standard library.
QUERY_CLIENT = r"""
import json, sys, urllib.error, urllib.request
url, user = sys.argv[1], sys.argv[2]
for question in sys.argv[3:]:
    body = json.dumps({"question": question, "user_id": user}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            print(json.dumps({"status": resp.status, "headers": dict(resp.headers), "body": json.load(resp)}))
    except urllib.error.HTTPError as exc:
        print(json.dumps({"status": exc.code, "headers": dict(exc.headers), "body": exc.read().decode()}))
"""

# Steady bounded load: RATE requests/s (at most) to URL until /tmp/stop appears or MAX seconds
# pass; every request must answer 200. Prints a JSON summary at the end.
LOAD_CLIENT = r"""
import collections, json, os, sys, threading, time, urllib.error, urllib.request
url, rate, max_seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
questions = ["How does kuberag rate limit clients?", "What does the operator create?",
             "How is the cache invalidated?", "Which metrics does the API export?"]
counts, failures, lock = collections.Counter(), [], threading.Lock()
start = time.monotonic()
print("load started", flush=True)
def worker(offset):
    n = offset
    while time.monotonic() - start < max_seconds and not os.path.exists("/tmp/stop"):
        began = time.monotonic()
        body = json.dumps({"question": questions[n % len(questions)], "user_id": f"load-{n}"}).encode()
        n += 2
        try:
            req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                json.load(resp)
                outcome = resp.status
        except urllib.error.HTTPError as exc:
            outcome = exc.code
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            counts[str(outcome)] += 1
            if outcome != 200 and len(failures) < 20:
                failures.append([round(time.monotonic() - start, 2), str(outcome)])
        time.sleep(max(0.0, 2 / rate - (time.monotonic() - began)))
threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"seconds": round(time.monotonic() - start, 1), "counts": counts, "failures": failures}), flush=True)
"""


def kubectl_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(plane.kubectl(*args, "-o", "json").stdout)


def install_operator(plane: ControlPlane, node: RealNode, workdir: Path, helm_test_namespace: str) -> str:
    """Install the operator as a user does, running from the local image (2 replicas, leader
    election): `helm install` of charts/kuberag when the chart exists, else `kubectl apply -k
    manifests/` with the image set as a kustomize `images:` override would. Returns how."""
    image = node.images["kuberag"]
    chart = REPO / "charts" / "kuberag"
    if (chart / "Chart.yaml").is_file():
        helm = plane.tools.helm
        subprocess.run(
            [str(helm), "install", "kuberag", str(chart), "--namespace", OPERATOR_NAMESPACE, "--create-namespace",
             "--kubeconfig", str(plane.kubeconfig), "--set", f"image.repository={image['name']}",
             "--set", f"image.tag={image['tag']}", "--set", "operator.replicas=2",
             "--set", f"helmTest.ragService.namespace={helm_test_namespace}",
             # The operator's ServiceMonitor and the alert rules, for the monitoring test's Prometheus.
             "--set", "serviceMonitor.enabled=true", "--set", f"serviceMonitor.interval={SCRAPE_INTERVAL}",
             "--set", f"serviceMonitor.scrapeTimeout={SCRAPE_INTERVAL}", "--set", "prometheusRule.enabled=true",
             "--wait", "--timeout", "5m"],
            check=True, capture_output=True, text=True, timeout=360,
        )
        how = "helm"
    else:
        docs = [d for d in yaml.safe_load_all(plane.kubectl("kustomize", str(REPO / "manifests")).stdout) if d]
        for doc in docs:
            if doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    container["image"] = image["ref"]
        rendered = workdir / "operator.yaml"
        rendered.write_text(yaml.safe_dump_all(docs))
        plane.kubectl("apply", "--server-side", "-f", str(rendered))
        how = "manifests"
    wait_for(lambda: operator_pods_ready(plane) == 2, timeout=240, what="2 operator pods Ready",
             diagnose=lambda: plane.kubectl("get", "pods", "-A", "-o", "wide").stdout + node.logs())
    wait_for(lambda: lease_holder(plane), timeout=120, what="an operator leader",
             diagnose=lambda: diagnose(plane, node, OPERATOR_NAMESPACE))
    return how


def operator_pods(plane: ControlPlane) -> list[dict]:
    return kubectl_json(plane, "get", "pods", "-n", OPERATOR_NAMESPACE, "-l",
                        "app.kubernetes.io/name=kuberag-operator")["items"]


def operator_pods_ready(plane: ControlPlane) -> int:
    return sum(1 for p in operator_pods(plane) if pod_ready(p) and not p["metadata"].get("deletionTimestamp"))


def lease_holder(plane: ControlPlane) -> str | None:
    lease = plane.kubectl("get", "lease", OPERATOR_LEASE, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False)
    if lease.returncode != 0:
        return None
    return json.loads(lease.stdout)["spec"].get("holderIdentity") or None


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def new_namespace(plane: ControlPlane, prefix: str) -> str:
    return plane.create_namespace(f"{prefix}-{uuid.uuid4().hex[:6]}")


def create_ragservice(plane: ControlPlane, node: RealNode, namespace: str, name: str, *,
                      replicas: int = 2, spec: dict | None = None) -> dict:
    """The sample RagService (manifests/samples), its admin Secret and corpus ConfigMap, with the
    local images."""
    plane.kubectl("create", "secret", "generic", f"{name}-admin", "-n", namespace,
                  f"--from-literal=apiKey={uuid.uuid4().hex}")
    plane.kubectl("create", "configmap", f"{name}-corpus", "-n", namespace, f"--from-file={CORPUS}")
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": namespace}
    body["spec"].update(
        replicas=replicas, image=node.images["kuberag"]["ref"], imagePullPolicy="IfNotPresent",
        corpus={"configMap": {"name": f"{name}-corpus"}},
        adminKeySecretRef={"name": f"{name}-admin", "key": "apiKey"},
    )
    body["spec"].setdefault("cache", {})["redis"] = {"image": node.images["redis"]["ref"]}
    for key, value in (spec or {}).items():
        body["spec"][key] = value
    return plane.apply(body)[0]


def ragservice(plane: ControlPlane, namespace: str, name: str) -> dict:
    return kubectl_json(plane, "get", "ragservice", name, "-n", namespace)


def condition(rag: dict, ctype: str) -> dict | None:
    return next((c for c in rag.get("status", {}).get("conditions", []) if c["type"] == ctype), None)


def wait_available(plane: ControlPlane, node: RealNode, namespace: str, name: str, replicas: int,
                   timeout: float = 300) -> dict:
    def available() -> dict | None:
        rag = ragservice(plane, namespace, name)
        status = rag.get("status", {})
        ok = (status.get("readyReplicas") == replicas and (condition(rag, "Available") or {}).get("status") == "True"
              and status.get("observedGeneration") == rag["metadata"]["generation"])
        return rag if ok else None

    return wait_for(available, timeout=timeout, what=f"RagService {namespace}/{name} Available with {replicas} ready",
                    interval=1, diagnose=lambda: diagnose(plane, node, namespace))


def diagnose(plane: ControlPlane, node: RealNode, namespace: str) -> str:
    parts = [plane.kubectl("get", "ragservice,deploy,pods,svc,endpoints", "-n", namespace, "-o", "wide", check=False).stdout,
             plane.kubectl("get", "events", "-n", namespace, check=False).stdout[-3000:],
             plane.kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide", check=False).stdout]
    for pod in kubectl_json(plane, "get", "pods", "-n", OPERATOR_NAMESPACE)["items"]:
        parts.append(plane.kubectl("logs", pod["metadata"]["name"], "-n", OPERATOR_NAMESPACE, "--tail=30",
                                   check=False).stdout)
    return "\n".join(parts) + node.logs()


def api_pods(plane: ControlPlane, namespace: str, name: str) -> list[dict]:
    pods = kubectl_json(plane, "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def restart_counts(pods: list[dict]) -> dict[str, dict[str, int]]:
    return {p["metadata"]["name"]: {c["name"]: c["restartCount"] for c in p["status"].get("containerStatuses", [])}
            for p in pods}


def run_client(plane: ControlPlane, node: RealNode, namespace: str, script: str, *args: str,
               timeout: float = 240) -> list[dict]:
    """Run a client script in a pod of the kuberag image; return its JSON output lines."""
    name = f"client-{uuid.uuid4().hex[:6]}"
    plane.apply(client_pod(node.images["kuberag"]["ref"], namespace, name, ["python", "-c", script, *args]))
    pod = wait_pod_phase(plane, namespace, name, {"Succeeded", "Failed"}, timeout)
    logs = plane.kubectl("logs", name, "-n", namespace).stdout
    assert pod["status"]["phase"] == "Succeeded", f"client pod failed:\n{logs}"
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def client_pod(image: str, namespace: str, name: str, command: list[str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "e2e-client"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": RESTRICTED_SECURITY["pod"],
            "containers": [{"name": "client", "image": image, "imagePullPolicy": "IfNotPresent", "command": command,
                            "securityContext": RESTRICTED_SECURITY["container"],
                            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def wait_pod_phase(plane: ControlPlane, namespace: str, name: str, phases: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pod = kubectl_json(plane, "get", "pod", name, "-n", namespace)
        if pod.get("status", {}).get("phase") in phases:
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {namespace}/{name} not in {phases} after {timeout}s: {json.dumps(pod.get('status'))[:3000]}")
        time.sleep(0.5)


class LoadClient:
    """LOAD_CLIENT in a pod: start() returns once it sends, stop() returns its summary."""

    def __init__(self, plane: ControlPlane, node: RealNode, namespace: str, url: str, rate: float = 20,
                 max_seconds: float = 600) -> None:
        self.plane, self.namespace = plane, namespace
        self.name = f"load-{uuid.uuid4().hex[:6]}"
        self.manifest = client_pod(node.images["kuberag"]["ref"], namespace, self.name,
                                   ["python", "-c", LOAD_CLIENT, url, str(rate), str(max_seconds)])

    def start(self, timeout: float = 120) -> LoadClient:
        self.plane.apply(self.manifest)
        wait_for(lambda: "load started" in self.plane.kubectl("logs", self.name, "-n", self.namespace, check=False).stdout,
                 timeout=timeout, what=f"load client {self.name} running", interval=0.5)
        return self

    def stop(self, timeout: float = 60) -> dict:
        self.plane.kubectl("exec", self.name, "-n", self.namespace, "--", "python", "-c",
                           "open('/tmp/stop', 'w').close()")
        wait_pod_phase(self.plane, self.namespace, self.name, {"Succeeded", "Failed"}, timeout)
        logs = self.plane.kubectl("logs", self.name, "-n", self.namespace).stdout
        return json.loads([line for line in logs.splitlines() if line.startswith("{")][-1])

