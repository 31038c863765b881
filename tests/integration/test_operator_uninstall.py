"""Deleting a RagService never waits for the operator: it carries no finalizer, its children go by
their owner references (the controller-manager's garbage collector), so a RagService deleted after
the operator was uninstalled (or while it is down) is gone at once. A RagService an older operator
version left with kopf's finalizer is released by the first pass of this one.

Its own operator processes: each test stops one.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.fixtures.operator_process import OperatorProcess, install_crd, ragservice, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "kuberag.io", "v1alpha1", "ragservices"
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@pytest.fixture
def ns(control_plane):
    name = control_plane.create_namespace(f"uninstall-{uuid.uuid4().hex[:8]}")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def api(control_plane):
    install_crd(control_plane)
    with control_plane.api_client() as a:
        yield a


def _get(custom, ns, name):
    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except client.ApiException as exc:
        assert exc.status == 404, exc
        return None


def _reconciled(custom, ns, name, op):
    def done():
        rs = _get(custom, ns, name)
        return rs is not None and (rs.get("status") or {}).get("observedGeneration") == rs["metadata"]["generation"]
    wait_for(done, timeout=90, what=f"{name} reconciled", diagnose=op.log_tail)
    return _get(custom, ns, name)


def _children_collected(api, ns, name, op):
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)

    def gone():
        return (not [d for d in apps.list_namespaced_deployment(ns).items if d.metadata.name == name]
                and not core.list_namespaced_service(ns).items
                and not [c for c in core.list_namespaced_config_map(ns).items if c.metadata.name == f"{name}-config"])
    wait_for(gone, timeout=90, what="the children garbage-collected by their owner references", diagnose=op.log_tail)


def test_a_ragservice_deleted_after_the_operator_is_gone_is_deleted_at_once(api, ns, control_plane, tmp_path):
    custom = client.CustomObjectsApi(api)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log").start()
    try:
        op.wait_healthy()
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ragservice("orphan", ns))
        rs = _reconciled(custom, ns, "orphan", op)
        wait_for(lambda: client.AppsV1Api(api).read_namespaced_deployment("orphan", ns), timeout=30,
                 what="the Deployment", diagnose=op.log_tail)
    finally:
        op.kill()  # what `helm uninstall` leaves: no operator at all
    assert not rs["metadata"].get("finalizers"), rs["metadata"]
    assert not [k for k in rs["metadata"].get("annotations") or {} if k.startswith("kopf.")], rs["metadata"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "orphan")
    # No finalizer: the API server removes it with the DELETE itself, nothing waits.
    assert _get(custom, ns, "orphan") is None
    _children_collected(api, ns, "orphan", op)


def test_the_finalizer_an_older_operator_left_is_released(api, ns, control_plane, tmp_path):
    custom = client.CustomObjectsApi(api)
    old = ragservice("legacy", ns)
    old["metadata"]["finalizers"] = [KOPF_FINALIZER]
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, old)
    op = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log").start()
    try:
        op.wait_healthy()
        _reconciled(custom, ns, "legacy", op)
        wait_for(lambda: not (_get(custom, ns, "legacy")["metadata"].get("finalizers")), timeout=60,
                 what="kopf's finalizer removed", diagnose=op.log_tail)
    finally:
        op.kill()
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "legacy")
    assert _get(custom, ns, "legacy") is None
    _children_collected(api, ns, "legacy", op)
