"""The real node itself: registered and Ready, cluster DNS, pods reach the API server through the
`kubernetes` Service, pods have no route off the machine, and no image pull leaves it."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.cluster import client_pod, run_client
from tests.e2e.kind import KIND_CLUSTER
from tests.fixtures.controlplane import ControlPlane
from tests.fixtures.realnode import NODE_IP, NODE_NAME, RealNode

API_FROM_POD = r"""
import json, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
addr = socket.gethostbyname("kubernetes.default.svc.cluster.local")
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/version",
                             headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
version = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
routes = [line.split()[1] for line in open("/proc/net/route").read().splitlines()[1:]]
print(json.dumps({"address": addr, "gitVersion": version["gitVersion"], "default_route": "00000000" in routes}))
"""


@pytest.mark.skipif(bool(KIND_CLUSTER), reason="checks the real node of `make e2e`, not kind")
def test_node_registered_with_its_ip_and_only_real_nodes(real_node: RealNode, control_plane: ControlPlane) -> None:
    nodes = json.loads(control_plane.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE_NAME]
    addresses = {a["type"]: a["address"] for a in nodes[0]["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP
    endpoints = json.loads(control_plane.kubectl("get", "endpoints", "kubernetes", "-n", "default", "-o", "json").stdout)
    assert [a["ip"] for a in endpoints["subsets"][0]["addresses"]] == [NODE_IP]


@pytest.mark.skipif(bool(KIND_CLUSTER), reason="checks the real node of `make e2e`, not kind")
def test_pod_reaches_api_server_by_service_name_without_default_route(
    real_node: RealNode, control_plane: ControlPlane
) -> None:
    # (run_client reads the pod's output with kubectl logs: apiserver -> kubelet on its InternalIP.)
    [result] = run_client(control_plane, real_node, "default", API_FROM_POD)
    assert result == {"address": "172.20.0.1", "gitVersion": control_plane.tools.kubernetes_version, "default_route": False}


@pytest.mark.skipif(bool(KIND_CLUSTER), reason="checks the real node of `make e2e`, not kind")
def test_image_pull_never_leaves_the_machine(real_node: RealNode, control_plane: ControlPlane) -> None:
    control_plane.apply(client_pod("registry.invalid/nothing:1", "default", "remote-image", ["true"]))
    deadline = time.monotonic() + 60
    while True:
        pod = json.loads(control_plane.kubectl("get", "pod", "remote-image", "-o", "json").stdout)
        waiting = [s["state"].get("waiting", {}) for s in pod["status"].get("containerStatuses", [])]
        reasons = {w.get("reason") for w in waiting}
        if reasons & {"ErrImagePull", "ImagePullBackOff"}:
            break
        assert time.monotonic() < deadline, f"the pull of a remote image did not fail: {pod['status']}"
        time.sleep(0.5)
    events = control_plane.kubectl("get", "events", "--field-selector", "involvedObject.name=remote-image").stdout
    assert "127.0.0.1:1" in events  # the closed loopback mirror, not the registry's host
    control_plane.kubectl("delete", "pod", "remote-image", "--wait=false")
