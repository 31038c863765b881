"""ObservedChildren: the watch-fed copy of the children, and which events are worth a reconcile."""

import pytest
from kuberag_operator.kube import ObservedChildren, request_resource

pytestmark = pytest.mark.unit


def _dep(rv, ready=0, image="a", pdb_status=None):
    return {"kind": "Deployment", "metadata": {"name": "d", "namespace": "n", "resourceVersion": str(rv),
                                               "managedFields": [{"manager": str(rv)}]},
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
            "status": {"readyReplicas": ready, "unavailableReplicas": 2 - ready, "collisionCount": pdb_status}}


def test_echoes_and_unread_status_churn_are_not_news_but_changes_are():
    seen = ObservedChildren()
    assert seen.put(_dep(5)) is True  # first sight
    assert seen.put(_dep(5)) is False  # the watch echo of the operator's own apply
    assert seen.put(_dep(4, image="old")) is False  # older than what is known: ignored
    assert seen.get("Deployment", "n", "d")["metadata"]["resourceVersion"] == "5"
    assert seen.put(_dep(6, pdb_status=1)) is False  # status the RagService's status does not read
    assert seen.put(_dep(7, ready=1)) is True  # readyReplicas: the status follows it
    assert seen.put(_dep(8, ready=1, image="evil")) is True  # an edit: drift
    seen.forget("Deployment", "n", "d")
    assert seen.get("Deployment", "n", "d") is None


def test_request_resource_names_the_resource_of_full_urls_and_paths():
    assert request_resource("https://127.0.0.1:6443/apis/apps/v1/namespaces/ns/deployments/x?fieldManager=a") == \
        "deployments"
    assert request_resource("/apis/kuberag.io/v1alpha1/namespaces/ns/ragservices/x/status") == "ragservices/status"
    assert request_resource("/api/v1/namespaces/ns/pods") == "pods"
    assert request_resource("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x") == "customresourcedefinitions"

