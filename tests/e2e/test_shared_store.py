"""A RagService on a shared store, on real pods: the operator's indexing Job (two shards) runs on the
real node against a real Weaviate, the API pods turn ready only once the index exists, and a client
pod's question is answered from it.

Weaviate runs on this machine bound to the node IP; pods reach it through a Service without a
selector whose EndpointSlice points at the node IP (the way they reach the API server), by its
cluster DNS name.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.cluster import (
    QUERY_CLIENT,
    api_pods,
    condition,
    create_ragservice,
    diagnose,
    install_operator,
    kubectl_json,
    new_namespace,
    operator_pods,
    operator_pods_ready,
    ragservice,
    run_client,
    wait_available,
)
from tests.fixtures.controlplane import ControlPlane
from tests.fixtures.operator_process import wait_for
from tests.fixtures.realnode import NODE_IP, RealNode
from tests.fixtures.weaviate_server import WeaviateServer, start_weaviate

NAME = "shared-qa"
ROOMY_LIMIT = {"requestsPerMinute": 60000, "burst": 1000}


@pytest.fixture(scope="module")
def namespace(real_node: RealNode, control_plane: ControlPlane) -> str:
    return new_namespace(control_plane, "e2e-shared")


@pytest.fixture(scope="module")
def weaviate_for_pods(namespace: str, real_node: RealNode, control_plane: ControlPlane,
                      tmp_path_factory: pytest.TempPathFactory):
    server = start_weaviate(tmp_path_factory.mktemp("weaviate-e2e"), host=NODE_IP)
    try:
        ports = [{"name": "http", "port": 8080, "targetPort": server.http_port, "protocol": "TCP"},
                 {"name": "grpc", "port": 50051, "targetPort": server.grpc_port, "protocol": "TCP"}]
        control_plane.apply({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": "weaviate", "namespace": namespace},
                             "spec": {"ports": ports}})
        control_plane.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                             "metadata": {"name": "weaviate-node", "namespace": namespace,
                                          "labels": {"kubernetes.io/service-name": "weaviate"}},
                             "addressType": "IPv4", "endpoints": [{"addresses": [NODE_IP]}],
                             "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": "TCP"} for p in ports]})
        control_plane.kubectl("create", "secret", "generic", "weaviate", "-n", namespace,
                              f"--from-literal=apiKey={server.api_key}")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator(namespace: str, real_node: RealNode, control_plane: ControlPlane,
             tmp_path_factory: pytest.TempPathFactory) -> str:
    # One release per cluster: when the suite's RagService module installed it, this one reuses it.
    if operator_pods(control_plane):
        wait_for(lambda: operator_pods_ready(control_plane) >= 1, timeout=300, interval=2,
                 what="an operator pod Ready")
        return "reused"
    control_plane.install_servicemonitor_crd()  # the chart's ServiceMonitor and rules need the CRDs
    return install_operator(control_plane, real_node, tmp_path_factory.mktemp("operator"), namespace)


@pytest.fixture(scope="module")
def shared_qa(operator: str, namespace: str, weaviate_for_pods: WeaviateServer, real_node: RealNode,
              control_plane: ControlPlane) -> dict:
    started = time.monotonic()
    create_ragservice(control_plane, real_node, namespace, NAME, replicas=2, spec={
        "rateLimit": ROOMY_LIMIT, "indexing": {"shards": 2},
        "vectorStore": {"url": f"http://weaviate.{namespace}.svc:8080", "grpcPort": 50051,
                        "apiKeySecretRef": {"name": "weaviate"}}})
    rag = wait_for(lambda: (condition(ragservice(control_plane, namespace, NAME), "Indexed") or {}).get("status")
                   == "True" and ragservice(control_plane, namespace, NAME), timeout=600, interval=2,
                   what="Indexed=True (the Job's two shards ran on the node)",
                   diagnose=lambda: diagnose(control_plane, real_node, namespace)
                   + control_plane.kubectl("logs", "-n", namespace, f"job/{NAME}-index", "--all-containers",
                                           "--tail=50", check=False).stdout)
    indexed = time.monotonic() - started
    wait_available(control_plane, real_node, namespace, NAME, 2)
    print(f"\nRagService {namespace}/{NAME}: indexed {indexed:.1f}s, 2 pods Ready "
          f"{time.monotonic() - started:.1f}s after apply")
    return rag


def test_the_job_ran_on_the_node_and_built_the_index(shared_qa: dict, namespace: str,
                                                      control_plane: ControlPlane) -> None:
    job = kubectl_json(control_plane, "get", "job", f"{NAME}-index", "-n", namespace)
    assert job["status"]["succeeded"] == 2 and job["spec"]["completionMode"] == "Indexed"
    pods = kubectl_json(control_plane, "get", "pods", "-n", namespace, "-l",
                        f"batch.kubernetes.io/job-name={NAME}-index")["items"]
    assert len(pods) == 2 and all(p["spec"]["nodeName"] == "kuberag-node" for p in pods)
    logs = "".join(control_plane.kubectl("logs", "-n", namespace, p["metadata"]["name"]).stdout for p in pods)
    assert "shard 1 of 2" in logs and "shard 2 of 2" in logs and "ingestion summary" in logs
    status = shared_qa["status"]["indexing"]
    assert status["state"] == "Indexed" and status["lastIndexedBuild"] == status["build"]


def test_api_pods_query_the_shared_index(shared_qa: dict, namespace: str, real_node: RealNode,
                                         control_plane: ControlPlane) -> None:
    # The indexing Job's (completed) pods carry the instance label too, under another name.
    pods = [p for p in api_pods(control_plane, namespace, NAME)
            if p["metadata"]["labels"].get("app.kubernetes.io/name") == "kuberag"]
    assert len(pods) == 2
    for pod in pods:  # no corpus in the API pods: they only query the shared store
        assert all(v["name"] != "corpus" for v in pod["spec"]["volumes"])
    url = shared_qa["status"]["endpoint"] + "/query"
    first, second = run_client(control_plane, real_node, namespace, QUERY_CLIENT, url, "alice",
                               "How does kuberag rate limit clients?", "How does kuberag rate limit clients?")
    assert first["status"] == 200 and first["body"]["sources"], first
    assert any("rate" in s["source"] for s in first["body"]["sources"]), first["body"]["sources"]
    assert second["status"] == 200
