"""The end-to-end suite runs on a real kubelet node (tests/fixtures/realnode.py), as root.

Here `control_plane` is the variant a real node joins: no kwok node, the apiserver serving on the
node IP. Every test in this directory is marked `e2e`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.controlplane import ControlPlane, running_control_plane
from tests.fixtures.realnode import NODE_IP, NODE_NAME, NodeHost


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane(node_host: NodeHost, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running_control_plane(tmp_path_factory.mktemp("control-plane"), node_ip=NODE_IP, node_name=NODE_NAME) as plane:
        yield plane
