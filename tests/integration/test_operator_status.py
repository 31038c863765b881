"""Status conditions against a real control plane: Progressing only during a rollout, Degraded
when no pod has been ready for a while, and DependenciesReady read from the pods' metrics port.

Its own operator, with a 3 s no-ready grace and a 3 s pod-health interval instead of 60 s / 30 s.
Pods are kwok's: a test marks one not ready through the pod status subresource, as a kubelet
would. kwok's pod IPs are not reachable from here, so the metrics read reports them unreachable
(DependenciesReady=Unknown, naming each pod and address); test_operator_health.py reads a real
API process's metrics port, and the real-node suite a real pod's.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.fixtures.operator_process import ragservice, running_operator, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "kuberag.io", "v1alpha1", "ragservices"


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    env = {"KUBERAG_OPERATOR_NO_READY_GRACE_SECONDS": "3", "KUBERAG_OPERATOR_POD_HEALTH_SECONDS": "3"}
    with running_operator(control_plane, tmp_path_factory.mktemp("status-operator") / "operator.log", env) as proc:
        yield proc


@pytest.fixture
def ns(control_plane):
    name = control_plane.create_namespace(f"status-{uuid.uuid4().hex[:8]}")
    yield name
    # Many RagServices with pods: gone before later tests (an operator taking over resumes them all).
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def api(control_plane):
    with control_plane.api_client() as a:
        yield a


def _conditions(api, ns, name):
    rs = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return {c["type"]: c for c in (rs.get("status") or {}).get("conditions") or []}, rs.get("status") or {}


def _wait_condition(api, ns, name, ctype, status, operator, reason=None, timeout=60):
    def probe():
        c = _conditions(api, ns, name)[0].get(ctype)
        return c and c["status"] == status and (reason is None or c["reason"] == reason) and c
    return wait_for(probe, timeout=timeout, what=f"{ctype}={status} {reason or ''}", diagnose=lambda: (
        f"conditions: {_conditions(api, ns, name)[0]}\n{operator.log_tail()}"))


def _set_pod_ready(api, ns, pod, ready: bool):
    """What a kubelet reports when a readiness probe starts failing (or passing again)."""
    status = "True" if ready else "False"
    core = client.CoreV1Api(api)
    current = core.read_namespaced_pod_status(pod, ns)
    conditions = [{"type": c.type, "status": status if c.type in ("Ready", "ContainersReady") else c.status}
                  for c in current.status.conditions]
    containers = [{"name": c.name, "ready": ready, "image": c.image, "imageID": c.image_id or "",
                   "restartCount": c.restart_count, "started": c.started,
                   "state": client.ApiClient().sanitize_for_serialization(c.state)}
                  for c in current.status.container_statuses]
    core.patch_namespaced_pod_status(pod, ns, {"status": {"conditions": conditions, "containerStatuses": containers}})


def _service_with_ready_pods(api, ns, name, replicas, operator):
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, ragservice(name, ns, {"replicas": replicas}))
    wait_for(lambda: _conditions(api, ns, name)[1].get("readyReplicas") == replicas, timeout=120,
             what=f"{replicas} ready replicas", diagnose=operator.log_tail)
    _wait_condition(api, ns, name, "Progressing", "False", operator, "RolloutComplete")
    # Not the pods of an earlier template still terminating: the operator rightly ignores those.
    return [p.metadata.name for p in client.CoreV1Api(api).list_namespaced_pod(
        ns, label_selector=f"app.kubernetes.io/instance={name}").items if p.metadata.deletion_timestamp is None]


def test_a_pod_not_ready_after_the_rollout_is_not_progressing(api, ns, operator):
    pods = _service_with_ready_pods(api, ns, "steady", 3, operator)
    _set_pod_ready(api, ns, pods[0], False)
    wait_for(lambda: _conditions(api, ns, "steady")[1].get("readyReplicas") == 2, timeout=60,
             what="readyReplicas 2", diagnose=operator.log_tail)
    conds, _ = _conditions(api, ns, "steady")
    assert conds["Progressing"]["status"] == "False", conds["Progressing"]  # not "RollingOut 3/3 updated, 2 ready"
    assert conds["Available"]["status"] == "True" and conds["Available"]["message"] == "2/3 replicas ready"
    assert conds["Degraded"]["status"] == "False"


def test_no_ready_pod_for_a_while_is_degraded_and_recovers(api, ns, operator):
    pods = _service_with_ready_pods(api, ns, "down", 2, operator)
    for pod in pods:
        _set_pod_ready(api, ns, pod, False)
    _wait_condition(api, ns, "down", "Available", "False", operator, "NoReadyReplicas")
    degraded = _wait_condition(api, ns, "down", "Degraded", "True", operator, "NoReadyReplicas")
    assert "no pod has been ready for" in degraded["message"]
    assert _conditions(api, ns, "down")[0]["Progressing"]["status"] == "False"
    _set_pod_ready(api, ns, pods[0], True)
    _wait_condition(api, ns, "down", "Degraded", "False", operator)
    assert _conditions(api, ns, "down")[0]["Available"]["status"] == "True"


def test_dependencies_condition_reads_every_pods_metrics_port(api, ns, operator):
    pods = _service_with_ready_pods(api, ns, "deps", 2, operator)
    core = client.CoreV1Api(api)
    expected = [f"pod {pod}: metrics at {core.read_namespaced_pod(pod, ns).status.pod_ip}:9090 unreadable"
                for pod in pods]

    def every_pod_named():
        # The condition first set may come from a read made while only one pod was running: the
        # next read (every 3 s) names both. The condition must get there, not be there at once.
        c = _conditions(api, ns, "deps")[0].get("DependenciesReady")
        return (c and c["status"] == "Unknown" and c["reason"] == "MetricsUnreachable"
                and all(e in c["message"] for e in expected) and c)
    wait_for(every_pod_named, timeout=60, what=f"DependenciesReady=Unknown naming {expected}",
             diagnose=lambda: f"conditions: {_conditions(api, ns, 'deps')[0]}\n{operator.log_tail()}")
    # Unknown is not Degraded: the operator cannot tell.
    assert _conditions(api, ns, "deps")[0]["Degraded"]["status"] == "False"
