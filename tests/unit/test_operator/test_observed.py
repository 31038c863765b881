"""ObservedChildren: the watch-fed copy of the children, and which events are worth a reconcile."""

import pytest
from kuberag_operator.kube import (
    NEW,
    NEW_GENERATION,
    OBJECT,
    STATUS,
    ObservedChildren,
    ObservedRagServices,
    request_resource,
)

pytestmark = pytest.mark.unit


def _dep(rv, ready=0, image="a", pdb_status=None):
    return {"kind": "Deployment", "metadata": {"name": "d", "namespace": "n", "resourceVersion": str(rv),
                                               "managedFields": [{"manager": str(rv)}]},
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
            "status": {"readyReplicas": ready, "unavailableReplicas": 2 - ready, "collisionCount": pdb_status}}


def test_echoes_and_unread_status_churn_are_not_news_but_changes_are():
    seen = ObservedChildren()
    assert seen.put(_dep(5)) == OBJECT  # first sight
    assert seen.put(_dep(5)) is None  # the watch echo of the operator's own apply
    assert seen.put(_dep(4, image="old")) is None  # older than what is known: ignored
    assert seen.get("Deployment", "n", "d")["metadata"]["resourceVersion"] == "5"
    assert seen.put(_dep(6, pdb_status=1)) is None  # status the RagService's status does not read
    assert seen.put(_dep(7, ready=1)) == STATUS  # readyReplicas: the status follows it
    assert seen.put(_dep(8, ready=1, image="evil")) == OBJECT  # an edit: drift
    seen.forget("Deployment", "n", "d")
    assert seen.get("Deployment", "n", "d") is None


def _rs(rv, generation=1, uid="u1", status=None, deleting=False):
    meta = {"name": "r", "namespace": "n", "uid": uid, "resourceVersion": str(rv), "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"kind": "RagService", "metadata": meta, "spec": {}, "status": status or {}}


def test_ragservice_events_that_need_a_pass_and_the_echo_of_a_status_write_that_does_not():
    seen = ObservedRagServices()
    assert seen.put(_rs(1)) == NEW
    assert seen.put(_rs(2, status={"observedGeneration": 1})) is None  # the echo of the operator's status write
    assert seen.put(_rs(1)) is None  # older: ignored
    assert seen.get(("n", "r"))["metadata"]["resourceVersion"] == "2"
    assert seen.put(_rs(3, generation=2)) == NEW_GENERATION  # a spec edit
    assert seen.put(_rs(4, generation=2, deleting=True)) == NEW_GENERATION  # deletion started
    assert seen.put(_rs(1, uid="u2")) == NEW  # deleted and created again under the same name
    assert seen.keys() == [("n", "r")] and len(seen) == 1
    seen.forget(("n", "r"))
    assert seen.get(("n", "r")) is None


def test_request_resource_names_the_resource_of_full_urls_and_paths():
    assert request_resource("https://127.0.0.1:6443/apis/apps/v1/namespaces/ns/deployments/x?fieldManager=a") == \
        "deployments"
    assert request_resource("/apis/kuberag.io/v1alpha1/namespaces/ns/ragservices/x/status") == "ragservices/status"
    assert request_resource("/api/v1/namespaces/ns/pods") == "pods"
    assert request_resource("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x") == "customresourcedefinitions"



def test_every_request_the_operator_sends_is_bounded(monkeypatch):
    """The dynamic client's discovery passes no timeout: one lost answer held Cluster's lock forever.

    A real request through the real client to a socket that accepts and never answers (the lost
    answer itself), with the bound shortened so the test takes a second, not 30."""
    import socket
    import time

    import urllib3
    from kuberag_operator import kube

    monkeypatch.setattr(kube, "REQUEST_TIMEOUT", (1, 1))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        api = kube._CountingApiClient(2)
        api.configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        # As the dynamic client's discovery sends it: no _request_timeout of its own.
        with pytest.raises(urllib3.exceptions.MaxRetryError, match="Read timed out"):  # after urllib3's retries
            api.call_api("GET", api.configuration.host + "/apis/apps/v1")
        assert time.monotonic() - started < 10
