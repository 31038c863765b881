"""Drift and Events against a real control plane: what another field manager changes in a child,
and that Events and the drift metric count only what really happened.

Its own operator process (the restart test stops and starts it).
"""

from __future__ import annotations

import time
import uuid

import pytest
from kuberag_contract import LABEL_MANAGED_BY, MANAGED_BY
from kubernetes import client

from tests.fixtures.operator_process import ragservice, running_operator, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "kuberag.io", "v1alpha1", "ragservices"
QUIET_SECONDS = 4.0  # after a change settles, this long without a new Event counts as "no more"


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    with running_operator(control_plane, tmp_path_factory.mktemp("drift-operator") / "operator.log") as proc:
        yield proc


@pytest.fixture
def ns(control_plane):
    name = control_plane.create_namespace(f"drift-{uuid.uuid4().hex[:8]}")
    yield name
    # Many RagServices with pods: gone before later tests (an operator taking over resumes them all).
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def api(control_plane):
    with control_plane.api_client() as a:
        yield a


def _wait(probe, what, proc, timeout=60):
    # On a timeout: every operator thread's stack too (what a stalled pass waits on).
    return wait_for(probe, timeout=timeout, what=what, diagnose=proc.dump_stacks)


def _events(api, ns, uid):
    events = client.CoreV1Api(api).list_namespaced_event(ns, field_selector=f"involvedObject.uid={uid}").items
    return sorted((e.reason, e.message) for e in events for _ in range(e.count or 1))


def _reasons(api, ns, uid):
    return [r for r, _ in _events(api, ns, uid)]


def _settled(api, ns, uid, proc, timeout=60):
    """The Events once none has been added for QUIET_SECONDS."""
    deadline = time.monotonic() + timeout
    last, since = _events(api, ns, uid), time.monotonic()
    while time.monotonic() - since < QUIET_SECONDS:
        assert time.monotonic() < deadline, f"Events kept coming: {last}\n{proc.log_tail()}"
        time.sleep(0.5)
        now = _events(api, ns, uid)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _ready_service(api, ns, name, proc, spec=None):
    custom = client.CustomObjectsApi(api)
    rs = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ragservice(name, ns, spec or {"replicas": 2}))

    def available():
        st = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}
        return st.get("readyReplicas") == (spec or {"replicas": 2}).get("replicas", 1) and st
    _wait(available, f"{name} with every pod ready", proc, timeout=120)
    return rs["metadata"]["uid"]


def _drift_total(proc):
    return sum(v for k, v in proc.metrics().items() if k.startswith("kuberag_operator_drift_corrections_total"))


def test_creation_posts_one_created_event_and_no_drift(api, ns, operator):
    """Many at once, each with pods whose status churns while the children are applied: the
    churn once made fresh creations look like drift."""
    drift_before = _drift_total(operator)
    custom = client.CustomObjectsApi(api)
    names = [f"fresh-{i}" for i in range(12)]
    uids = [custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ragservice(n, ns, {"replicas": 3}))[
        "metadata"]["uid"] for n in names]

    def all_ready():
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        return sum((i.get("status") or {}).get("readyReplicas") == 3 for i in items) == len(names)
    _wait(all_ready, "every pod ready", operator, timeout=180)
    for uid in uids:
        assert [r for r, _ in _settled(api, ns, uid, operator)] == ["Created"]
    assert _drift_total(operator) == drift_before


def test_one_hand_edit_is_one_drift_correction(api, ns, operator, control_plane):
    uid = _ready_service(api, ns, "scaled", operator)
    _settled(api, ns, uid, operator)
    drift_before = _drift_total(operator)
    # Many pods: their status churn runs alongside the correction (it once doubled the event).
    control_plane.kubectl("-n", ns, "scale", "deployment/scaled", "--replicas=12")
    apps = client.AppsV1Api(api)
    _wait(lambda: _reasons(api, ns, uid).count("DriftCorrected") >= 1, "a DriftCorrected event", operator)
    _wait(lambda: apps.read_namespaced_deployment("scaled", ns).spec.replicas == 2, "replicas back to 2", operator)
    events = _settled(api, ns, uid, operator)
    assert [r for r, _ in events].count("DriftCorrected") == 1, events
    assert ("DriftCorrected", "corrected Deployment/scaled") in events
    assert _drift_total(operator) == drift_before + 1


def test_restart_with_nothing_changed_posts_no_event(api, ns, operator, control_plane):
    uid = _ready_service(api, ns, "steady", operator)
    before = _settled(api, ns, uid, operator)
    operator.stop()
    operator.start()
    operator.wait_healthy()
    # The resume pass has run once the operator reconciles something new.
    _ready_service(api, ns, "marker", operator, {"replicas": 1})
    assert _settled(api, ns, uid, operator) == before


def test_foreign_changes_to_what_runs_are_removed_and_harmless_metadata_stays(api, ns, operator, control_plane):
    uid = _ready_service(api, ns, "owned", operator, {"replicas": 1})
    _settled(api, ns, uid, operator)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    generation = apps.read_namespaced_deployment("owned", ns).metadata.generation
    control_plane.kubectl("-n", ns, "set", "env", "deployment/owned", "-c", "api", "EXTRA=1")
    control_plane.kubectl("-n", ns, "label", "service/owned", "team=search")
    core.patch_namespaced_config_map("owned-config", ns, {"data": {"extra.yaml": "x: 1"}})

    def env_gone():
        env = apps.read_namespaced_deployment("owned", ns).spec.template.spec.containers[0].env
        return "EXTRA" not in [e.name for e in env]
    _wait(env_gone, "the foreign env var removed from the pod template", operator)
    _wait(lambda: "extra.yaml" not in core.read_namespaced_config_map("owned-config", ns).data,
          "the foreign ConfigMap key removed", operator)
    events = _settled(api, ns, uid, operator)
    assert core.read_namespaced_service("owned", ns).metadata.labels["team"] == "search"  # harmless: stays
    assert [r for r, _ in events].count("DriftCorrected") >= 1
    # The template is back to the declared one: the roll the edit started is undone, and it stays put.
    dep = apps.read_namespaced_deployment("owned", ns)
    assert dep.metadata.generation <= generation + 2
    # A rollout restart is how a user restarts pods: its annotation stays.
    control_plane.kubectl("-n", ns, "rollout", "restart", "deployment/owned")
    time.sleep(QUIET_SECONDS)
    annotations = apps.read_namespaced_deployment("owned", ns).spec.template.metadata.annotations
    assert "kubectl.kubernetes.io/restartedAt" in annotations


def test_a_removed_managed_by_label_comes_back(api, ns, operator, control_plane):
    """The children's watch selects by this label: a child that lost it must still be seen (by its
    owner reference) and corrected, not dropped from the operator's view for good."""
    uid = _ready_service(api, ns, "unlabelled", operator, {"replicas": 1})
    _settled(api, ns, uid, operator)
    apps = client.AppsV1Api(api)
    control_plane.kubectl("-n", ns, "label", "deployment/unlabelled", f"{LABEL_MANAGED_BY}-")
    _wait(lambda: (apps.read_namespaced_deployment("unlabelled", ns).metadata.labels or {}).get(LABEL_MANAGED_BY)
          == MANAGED_BY, "the managed-by label restored", operator)
    events = _settled(api, ns, uid, operator)
    assert ("DriftCorrected", "corrected Deployment/unlabelled") in events
