"""`kuberag serve` as a real process (uvicorn) with a real Redis sidecar: answers over HTTP,
Prometheus exposition on the separate metrics port, JSON logs with request ids and no secrets."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.fixtures.api_app import write_corpus
from tests.fixtures.api_process import start_serve, stop_serve
from tests.fixtures.redis_server import free_port

pytestmark = pytest.mark.integration

SECRET = "admin-secret-never-logged"


@pytest.fixture
def server(tmp_path: Path, redis_server):
    corpus = write_corpus(tmp_path / "corpus")
    config = tmp_path / "config.yaml"
    config.write_text(f"apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\ncorpus: {{path: {corpus}}}\n")
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "KUBERAG_PORT": str(port), "KUBERAG_METRICS_PORT": str(metrics_port),
           "KUBERAG_REDIS_URL": redis_server.url, "KUBERAG_DATA_DIR": str(tmp_path / "data"),
           "KUBERAG_CONFIG": str(config), "KUBERAG_ADMIN_API_KEY": SECRET, "KUBERAG_HOST": "127.0.0.1",
           "KUBERAG_ACCESS_LOG": "all"}
    log_path = tmp_path / "server.log"
    proc = start_serve(env, port, log_path)
    base = f"http://127.0.0.1:{port}"
    yield {"base": base, "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "proc": proc, "log": log_path,
           "config": config}
    stop_serve(proc)


def test_serves_queries_metrics_and_logs(server):
    base = server["base"]
    q = {"question": "Which port does the Redis sidecar listen on?", "user_id": "u1"}
    first = httpx.post(base + "/query", json=q).json()
    assert "6379" in first["answer"] and first["cache_hit"] is False
    second = httpx.post(base + "/query", json=q).json()
    assert second["cache_level"] == "l1"
    assert httpx.post(base + "/query", json={"question": ""}).status_code == 400
    assert httpx.delete(base + "/cache", headers={"X-API-Key": SECRET}).status_code == 200
    # The public port serves the JSON summary; Prometheus exposition lives on its own port.
    assert httpx.get(base + "/metrics").json()["total_requests"] == 2
    text = httpx.get(server["metrics"]).text
    for name in ("kuberag_http_requests_total", "kuberag_http_request_duration_seconds_bucket",
                 "kuberag_cache_hits_total", "kuberag_cache_misses_total",
                 "kuberag_stage_duration_seconds_bucket", "kuberag_corpus_chunks", "kuberag_corpus_documents",
                 "kuberag_redis_up", "kuberag_dependency_up", "kuberag_config_info",
                 "kuberag_rate_limiter_degraded", "kuberag_config_reload_errors_total"):
        assert name in text, name
    assert 'kuberag_http_requests_total{method="POST",route="/query",status="200"} 2.0' in text
    assert 'kuberag_cache_hits_total{level="l1"} 1.0' in text
    assert 'stage="embed"' in text and 'stage="retrieve"' in text and 'stage="generate"' in text
    assert "kuberag_redis_up 1.0" in text
    file_hash = hashlib.sha256(server["config"].read_bytes()).hexdigest()
    assert f'kuberag_config_info{{hash="{file_hash}"}} 1.0' in text

    server["proc"].send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal (exit status -SIGTERM).
    assert server["proc"].wait(timeout=15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server["log"].read_text()
    lines = [json.loads(line) for line in server["log"].read_text().splitlines() if line.startswith("{")]
    access = [ln for ln in lines if ln.get("logger") == "kuberag.access"]
    assert len(access) >= 5 and all(ln.get("request_id") for ln in access)
    assert first["request_id"] in {ln.get("request_id") for ln in access}
    assert SECRET not in server["log"].read_text()


def test_ask_against_the_server(server, capsys):
    from kuberag_api.cli import main

    assert main(["ask", "Which port does the Redis sidecar listen on?", "--url", server["base"]]) == 0
    out = capsys.readouterr().out
    assert "6379" in out and "redis.md" in out
    assert main(["ask", "hello?", "--url", "http://127.0.0.1:9"]) == 3
    assert "cannot reach" in capsys.readouterr().err
