"""The operator's read of a pod's dependency state, against a real `kuberag serve` and a real
redis-server as its sidecar: the same metrics port, names and format a pod serves.

(Finding the pods and reading their IPs is tested against the control plane in
test_operator_status.py; the real-node suite reads a real pod whose sidecar is stopped.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from kuberag_operator.health import DependencyHealth, read_pod_health
from kuberag_operator.status import dependency_condition

from tests.fixtures.api_app import write_corpus
from tests.fixtures.api_process import start_serve, stop_serve
from tests.fixtures.redis_server import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def api_pod(tmp_path: Path, redis_server):
    """`kuberag serve` as in a pod: config with a corpus, the Redis sidecar on its URL."""
    corpus = write_corpus(tmp_path / "corpus")
    config = tmp_path / "config.yaml"
    config.write_text(f"apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\ncorpus: {{path: {corpus}}}\n")
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "KUBERAG_PORT": str(port), "KUBERAG_METRICS_PORT": str(metrics_port),
           "KUBERAG_REDIS_URL": redis_server.url, "KUBERAG_DATA_DIR": str(tmp_path / "data"),
           "KUBERAG_CONFIG": str(config), "KUBERAG_HOST": "127.0.0.1"}
    proc = start_serve(env, port, tmp_path / "server.log")
    yield {"metrics_port": metrics_port, "redis": redis_server}
    stop_serve(proc)


def _read_until(port: int, wanted: dict[str, bool], timeout: float = 30.0):
    """The pod refreshes its gauges every 2 s: read until they say ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        health = read_pod_health("docs-abc", "127.0.0.1", port)
        if health.dependencies == wanted or time.monotonic() > deadline:
            return health
        time.sleep(0.5)


def test_a_stopped_redis_sidecar_shows_in_dependencies_ready(api_pod):
    health = _read_until(api_pod["metrics_port"], {"redis": True, "index": True})
    assert health.error is None and health.dependencies == {"redis": True, "index": True}
    cond = dependency_condition(DependencyHealth(pods=(health,)))
    assert (cond.status, cond.reason) == (True, "AllUp")

    api_pod["redis"].kill()
    health = _read_until(api_pod["metrics_port"], {"redis": False, "index": True})
    cond = dependency_condition(DependencyHealth(pods=(health,)))
    assert (cond.status, cond.reason) == (False, "RedisDown")
    assert cond.message == 'pod docs-abc: Redis sidecar down (kuberag_dependency_up{dependency="redis"} 0)'


def test_an_unreachable_metrics_port_is_unknown_not_down():
    port = free_port()  # nothing listens there
    health = read_pod_health("docs-xyz", "127.0.0.1", port, timeout=2)
    assert health.error
    cond = dependency_condition(DependencyHealth(pods=(health,)))
    assert cond.status is None and cond.reason == "MetricsUnreachable"
    assert f"pod docs-xyz: metrics at 127.0.0.1:{port} unreadable" in cond.message
