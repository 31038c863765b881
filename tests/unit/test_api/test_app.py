"""The HTTP contract: routes, validation as problem details, admin auth, cache behaviour, SSE."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import generate_latest

from tests.fixtures.api_app import ADMIN_KEY

pytestmark = pytest.mark.unit

ADMIN = {"X-API-Key": ADMIN_KEY}


async def test_health_contract(client):
    r = await client.get("/")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and body["version"] and body["timestamp"]
    assert "/query" in body["endpoints"]
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_reports_index_redis_limiter(client):
    r = await client.get("/readyz", headers=ADMIN)
    assert r.status_code == 200
    checks = r.json()["checks"]
    assert checks["index"]["status"] == "ready" and checks["index"]["documents"] == 4
    assert "disabled" in checks["redis"]["status"]
    assert checks["limiter"]["scope"] == "perReplica"


async def test_openapi_has_stable_operation_ids(client):
    doc = (await client.get("/schema/openapi.json")).json()
    ops = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {"Query", "QueryStream", "GetHealth", "GetReadiness", "ClearCache", "IngestDocument",
            "ListDocuments", "DeleteDocument", "GetMetricsSummary"} <= ops


async def test_query_answers_with_sources_and_measured_latency(client):
    r = await client.post("/query", json={"question": "Which port does the Redis sidecar listen on?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "6379" in body["answer"]
    assert body["sources"][0]["source"] == "redis.md"
    assert body["cache_hit"] is False and body["cache_level"] is None
    assert body["latency_ms"] > 0 and body["request_id"] == r.headers["x-request-id"]
    assert body["model"] == "extractive" and body["degraded"] is False
    again = (await client.post("/query", json={"question": "which port does the redis sidecar listen on"})).json()
    assert again["cache_hit"] is True and again["cache_level"] == "l1"
    assert again["answer"] == body["answer"]
    assert again["latency_ms"] != body["latency_ms"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   \n\t "}, "question"),
        ({"question": "x" * 501}, "question"),
        ({"question": 42}, "question"),
        ({"question": "ok?", "use_cache": "yes"}, "use_cache"),
        ({"question": "ok?", "user_id": 7}, "user_id"),
        ({}, "question"),
        ({"question": "ok?", "colour": "red"}, "colour"),
    ],
)
async def test_bad_query_is_a_problem_naming_the_field(client, body, field):
    r = await client.post("/query", json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 400
    assert field in problem["detail"]
    assert any(e["field"] == field for e in problem["errors"])


async def test_question_of_500_chars_after_strip_is_accepted(client):
    r = await client.post("/query", json={"question": "  " + "a" * 500 + "  "})
    assert r.status_code == 200


async def test_malformed_json_and_oversized_body(client):
    r = await client.post("/query", content=b'{"question": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "json" in r.json()["detail"].lower()
    big = b'{"question": "' + b"a" * 70_000 + b'"}'
    r = await client.post("/query", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "65536 bytes" in r.json()["detail"]


async def test_unknown_route_is_a_problem_with_the_request_id(client):
    """The defect: a 404 for an unknown route carried no request id."""
    r = await client.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["x-request-id"] and r.json()["request_id"] == r.headers["x-request-id"]
    r = await client.get("/nope", headers={"X-Request-ID": "trace-404"})
    assert r.json()["request_id"] == "trace-404" == r.headers["x-request-id"]
    r = await client.put("/query", json={})  # no such method: 405, also with the id and counted
    assert r.status_code == 405 and r.json()["request_id"] == r.headers["x-request-id"]
    text = generate_latest(client.app.state.metrics.registry).decode()
    assert 'route="unmatched",status="404"' in text


async def test_readyz_says_only_what_a_probe_needs_without_the_admin_key(tmp_path, make_client):
    """The defect: /readyz gave anyone the config file's path, Redis error texts and YAML messages."""
    config = tmp_path / "etc" / "config.yaml"
    config.parent.mkdir()
    config.write_text("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\nrateLimit: {burst: 50}\n")
    async with make_client(config_path=config, redis_url="redis://127.0.0.1:9/0") as c:
        config.write_text("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\nrateLimit: {burst: [secret-ish}\n")
        c.app.state.live.check()
        c.app.state.cache.l2.last_error = "get: ConnectionError: Error 111 connecting to 127.0.0.1:9"
        public = await c.get("/readyz")
        assert public.status_code == 200 and public.json() == {"status": "ready", "reasons": []}
        for leak in (str(config.parent), "secret-ish", "127.0.0.1:9", "ConnectionError"):
            assert leak not in public.text
        for key in (None, "wrong-key"):
            r = await c.get("/readyz", headers={"X-API-Key": key} if key else {})
            assert "checks" not in r.json()
        detail = (await c.get("/readyz", headers=ADMIN)).json()
        assert detail["checks"]["config"]["source"] == str(config) and "secret-ish" in detail["checks"]["config"]["error"]


async def test_admin_routes_need_the_key(client):
    for method, path in (("DELETE", "/cache"), ("GET", "/documents"), ("DELETE", "/documents/abc")):
        r = await client.request(method, path)
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"], (method, path)
        r = await client.request(method, path, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "invalid" in r.json()["detail"], (method, path)
    assert (await client.get("/documents", headers=ADMIN)).status_code == 200


async def test_admin_routes_refused_without_configured_key(make_client):
    async with make_client(admin_key=None) as c:
        r = await c.delete("/cache", headers={"X-API-Key": "anything"})
        assert r.status_code == 403
        assert "KUBERAG_ADMIN_API_KEY" in r.json()["detail"]


async def test_cache_control_and_use_cache(client):
    q = {"question": "How many requests per minute may a client send?"}
    assert (await client.post("/query", json=q)).json()["cache_hit"] is False
    assert (await client.post("/query", json=q)).json()["cache_level"] == "l1"
    r = await client.post("/query", json=q, headers={"Cache-Control": "no-cache"})
    assert r.json()["cache_hit"] is False
    r = await client.post("/query", json={**q, "use_cache": False})
    assert r.json()["cache_hit"] is False
    q2 = {"question": "How is green tea brewed?"}
    await client.post("/query", json=q2, headers={"Cache-Control": "no-store"})
    assert (await client.post("/query", json=q2)).json()["cache_hit"] is False  # nothing was stored
    assert (await client.post("/query", json=q2)).json()["cache_hit"] is True


async def test_delete_cache_bumps_epoch(client):
    q = {"question": "What does the operator create?"}
    await client.post("/query", json=q)
    assert (await client.post("/query", json=q)).json()["cache_hit"] is True
    r = await client.delete("/cache", headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["epoch"] == 1 and r.json()["cleared"]["l1"] >= 1
    assert (await client.post("/query", json=q)).json()["cache_hit"] is False


async def test_semantic_hit_for_a_paraphrase_but_not_for_the_negation(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 100000, burst: 1000}\ncache: {l3: {threshold: 0.9}}") as c:
        first = (await c.post("/query", json={"question": "Which port does the Redis sidecar listen on?"})).json()
        assert first["cache_hit"] is False
        para = (await c.post("/query", json={"question": "On which port does the Redis sidecar listen?"})).json()
        assert para["cache_level"] == "l3", para
        assert para["similarity"] >= 0.9 and para["answer"] == first["answer"]
        neg = (await c.post("/query", json={"question": "Which port does the Redis sidecar not listen on?"})).json()
        assert neg["cache_hit"] is False, neg


async def test_stream_sends_sources_deltas_done_and_caches_the_answer(client):
    q = {"question": "What temperature is green tea brewed at?"}
    r = await client.post("/query/stream", json=q)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in r.text.strip().split("\r\n\r\n" if "\r\n\r\n" in r.text else "\n\n"):
        lines = [ln for ln in block.replace("\r\n", "\n").split("\n") if ln]
        kind = next(ln[6:].strip() for ln in lines if ln.startswith("event:"))
        data = "\n".join(ln[5:].lstrip() for ln in lines if ln.startswith("data:"))
        events.append((kind, json.loads(data)))
    kinds = [k for k, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done" and "delta" in kinds
    assert events[0][1][0]["source"] == "tea.txt"
    done = events[-1][1]
    assert done["answer"] == "".join(d["text"] for k, d in events if k == "delta")
    assert "80" in done["answer"] and done["latency_ms"] > 0
    cached = (await client.post("/query", json=q)).json()
    assert cached["cache_level"] == "l1" and cached["answer"] == done["answer"]


async def test_metrics_summary_counts(client):
    q = {"question": "How are clients identified for rate limiting?"}
    await client.post("/query", json=q)
    await client.post("/query", json=q)
    await client.post("/query", json={"question": ""})
    m = (await client.get("/metrics")).json()
    assert m["total_requests"] == 2 and m["cache_hits"] == 1 and m["cache_misses"] == 1
    assert m["cache_hit_rate"] == 0.5 and m["hits_by_level"]["l1"] == 1
    assert m["errors"] == 1 and m["avg_latency"] > 0


async def test_single_flight_computes_identical_misses_once(client, engine):
    calls = 0
    original = engine.retrieve

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    engine.retrieve = counting
    q = {"question": "How long does black tea steep?"}
    results = await asyncio.gather(*(client.post("/query", json=q) for _ in range(8)))
    assert all(r.status_code == 200 for r in results)
    assert calls == 1
    assert len({r.json()["answer"] for r in results}) == 1


async def test_unexpected_error_is_a_500_problem_without_internals(client, engine):
    def broken(*_a, **_k):
        raise RuntimeError("secret internal detail /etc/passwd")

    engine.retrieve = broken
    r = await client.post("/query", json={"question": "anything not cached?"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_no_stale_answer_after_ingest_and_delete(client):
    q = {"question": "What is the capital of Wakanda?"}
    before = (await client.post("/query", json=q)).json()
    assert "Birnin Zana" not in before["answer"]
    doc = b"# Wakanda\n\nThe capital of Wakanda is Birnin Zana, a city on the river.\n"
    r = await client.post("/documents", files={"file": ("wakanda.md", doc, "text/markdown")}, headers=ADMIN)
    assert r.status_code == 201, r.text
    doc_id = r.json()["doc_id"]
    after = (await client.post("/query", json=q)).json()
    assert after["cache_hit"] is False and "Birnin Zana" in after["answer"]
    r = await client.delete(f"/documents/{doc_id}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["deleted"] is True
    gone = (await client.post("/query", json=q)).json()
    # The corpus is back to its earlier content (same corpus version): the earlier answer is valid again.
    assert "Birnin Zana" not in gone["answer"] and gone["answer"] == before["answer"]
    assert (await client.delete(f"/documents/{doc_id}", headers=ADMIN)).status_code == 404


async def test_unsupported_upload_and_missing_file_field(client):
    r = await client.post("/documents", files={"file": ("tool.exe", b"MZ\x90\x00", "application/octet-stream")},
                          headers=ADMIN)
    assert r.status_code == 415 and "unsupported" in r.json()["detail"]
    r = await client.post("/documents", files={"other": ("a.txt", b"hello", "text/plain")}, headers=ADMIN)
    assert r.status_code == 400 and "file" in r.json()["detail"]


async def test_rate_limit_headers_and_429(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 1, burst: 3}") as c:
        q = {"question": "How is green tea brewed?", "user_id": "alice"}
        seen = []
        for _ in range(3):
            r = await c.post("/query", json=q)
            assert r.status_code == 200
            seen.append(int(r.headers["ratelimit-remaining"]))
            assert r.headers["ratelimit-limit"] == "3"
        assert seen == [2, 1, 0]
        r = await c.post("/query", json=q)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1 and r.headers["ratelimit-remaining"] == "0"
        assert "rate limit" in r.json()["detail"]
        # another user_id is the same caller (its IP): no new budget; probes are never limited
        assert (await c.post("/query", json={**q, "user_id": "bob"})).status_code == 429
        for _ in range(5):
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/readyz")).status_code == 200
            assert (await c.get("/metrics")).status_code == 200
        assert (await c.get("/metrics")).json()["rate_limited"] == 2


async def test_stream_of_a_cached_answer(client):
    q = {"question": "What does the operator create?"}
    first = (await client.post("/query", json=q)).json()
    r = await client.post("/query/stream", json=q)
    text = r.text.replace("\r\n", "\n")
    assert text.index("event: sources") < text.index("event: delta") < text.index("event: done")
    done = json.loads(text.split("event: done\n", 1)[1].split("data: ", 1)[1].split("\n", 1)[0])
    assert done["cache_level"] == "l1" and done["answer"] == first["answer"]


async def test_pod_wide_total_limit(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 1000, burst: 2, totalRequestsPerMinute: 1}") as c:
        codes = [(await c.post("/query", json={"question": "How is tea brewed?", "user_id": f"user{i}"})).status_code
                 for i in range(4)]
        assert codes == [200, 200, 429, 429]


async def test_index_not_loaded_is_503_with_the_reason(tmp_path):
    from kuberag_api.app import create_app
    from kuberag_api.live_config import LiveConfig
    from kuberag_contract.config import parse_config
    from litestar.testing import AsyncTestClient

    from tests.fixtures.api_app import app_settings

    live = LiveConfig(parse_config(f"corpus: {{path: {tmp_path / 'no-such-corpus'}}}"))
    app = create_app(app_settings(tmp_path), live=live, serve_metrics=False)
    async with AsyncTestClient(app) as c:
        for _ in range(200):
            r = await c.get("/readyz", headers=ADMIN)
            if "failed" in r.json()["checks"]["index"]["status"]:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 503
        assert "no-such-corpus" in r.json()["reasons"][0]
        q = await c.post("/query", json={"question": "anything?"})
        assert q.status_code == 503 and q.headers["retry-after"] == "5"
        assert "failed to load" in q.json()["detail"]
        assert (await c.get("/healthz")).status_code == 200  # alive: readiness says why it is not ready
        # The probe's 503s are answers, not errors; the refused query is one.
        assert (await c.get("/metrics")).json()["errors"] == 1


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"content": b"", "headers": {"content-type": "application/json"}}, "empty"),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, "object"),
    ],
)
async def test_body_that_is_not_an_object(client, kwargs, expected):
    r = await client.post("/query", **kwargs)
    assert r.status_code == 400 and expected in r.json()["detail"]


async def test_upload_that_is_not_multipart_or_has_no_file_name(client):
    r = await client.post("/documents", json={"file": "x"}, headers=ADMIN)
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = await client.post("/documents", files={"file": ("", b"hello", "text/plain")}, headers=ADMIN)
    assert r.status_code == 400 and "file name" in r.json()["detail"]


async def test_while_draining_new_requests_get_503_and_readiness_turns_off(client):
    client.app.state.shutdown.begin()
    r = await client.post("/query", json={"question": "How is green tea brewed?"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "shutting down" in r.json()["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200  # alive: the kubelet must not restart it
