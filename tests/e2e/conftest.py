"""The end-to-end suite runs on a real kubelet node (tests/fixtures/realnode.py), as root.

Here `control_plane` is the variant a real node joins: no kwok node, the apiserver serving on the
node IP. With KUBERAG_E2E_KIND set (`make e2e-kind`), both fixtures stand for a kind cluster
instead (tests/e2e/kind.py). Every test in this directory is marked `e2e`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kind import KIND_CLUSTER, ExistingCluster, KindNode
from tests.fixtures.controlplane import ControlPlane, running_control_plane
from tests.fixtures.realnode import NODE_IP, NODE_NAME

# The first test of a session also pays for the node's start (and an image rebuild after a source
# change, ~1-3 min here): pytest-timeout counts fixture setup.
E2E_TEST_TIMEOUT_SECONDS = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(E2E_TEST_TIMEOUT_SECONDS))


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    if KIND_CLUSTER:
        yield ExistingCluster(Path(os.environ["KUBERAG_E2E_KUBECONFIG"]), tmp_path_factory.mktemp("kind"))
        return
    request.getfixturevalue("node_host")  # the node IP must exist before the apiserver binds it
    with running_control_plane(tmp_path_factory.mktemp("control-plane"), node_ip=NODE_IP, node_name=NODE_NAME) as plane:
        yield plane


if KIND_CLUSTER:
    @pytest.fixture(scope="session")
    def real_node() -> KindNode:
        return KindNode()
