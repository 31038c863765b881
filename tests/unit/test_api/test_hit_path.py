"""The L1 hit is answered in front of Litestar's router (``hit_path.L1FrontDoor``): it must be the
same response the handler builds, with every header, metric and rule of the full path."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit

QUESTION = "Which port does the Redis sidecar listen on?"
KEYS = """
apiVersion: kuberag.io/v1alpha1
kind: ClientKeys
clients:
  - {name: acme, key: acme-secret-key-0123456789}
"""


async def test_an_l1_hit_has_the_handlers_headers_and_fields(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 1, burst: 50}", client_keys=KEYS) as client:
        key = {"X-API-Key": "acme-secret-key-0123456789"}
        miss = await client.post("/query", json={"question": QUESTION}, headers={**key, "X-Request-ID": "miss-1"})
        hit = await client.post("/query", json={"question": QUESTION}, headers={**key, "X-Request-ID": "hit-1"})
        assert miss.status_code == hit.status_code == 200, hit.text
        assert miss.json()["cache_level"] is None and hit.json()["cache_level"] == "l1"
        # The same headers (request id, the client's rate-limit headers, type, length), by name.
        assert sorted(hit.headers.keys()) == sorted(miss.headers.keys())
        assert hit.headers["content-type"] == miss.headers["content-type"] == "application/json"
        assert int(hit.headers["content-length"]) == len(hit.content)
        assert hit.headers["x-request-id"] == hit.json()["request_id"] == "hit-1"
        assert int(hit.headers["ratelimit-remaining"]) == int(miss.headers["ratelimit-remaining"]) - 1
        # The same fields, the same answer.
        m, h = miss.json(), hit.json()
        assert m.keys() == h.keys()
        assert (h["answer"], h["sources"], h["model"], h["degraded"]) == (m["answer"], m["sources"], m["model"], False)
        summary = (await client.get("/metrics")).json()
        assert summary["hits_by_level"]["l1"] == 1 and summary["cache_misses"] == 1
        assert summary["total_requests"] == 2


async def test_the_hit_path_keeps_the_full_paths_rules(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 600, burst: 50}") as client:
        assert (await client.post("/query", json={"question": QUESTION})).status_code == 200
        # use_cache: false and Cache-Control: no-cache go on to the handler (a computed answer).
        r = await client.post("/query", json={"question": QUESTION, "use_cache": False})
        assert r.json()["cache_hit"] is False
        r = await client.post("/query", json={"question": QUESTION}, headers={"Cache-Control": "max-age=0, No-Cache"})
        assert r.json()["cache_hit"] is False
        # Bodies are judged as before: a cached question in a body with an unknown field is a 400
        # naming it, a body declared as another type a 415, both problems with the request id.
        r = await client.post("/query", json={"question": QUESTION, "extra": 1})
        assert r.status_code == 400 and "extra" in r.text
        assert r.headers["content-type"] == "application/problem+json" and r.headers["x-request-id"]
        r = await client.post("/query", content=b'{"question": "%s"}' % QUESTION.encode(),
                              headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and r.headers["content-type"] == "application/problem+json"
        # An unknown client key is refused before any cache lookup.
        r = await client.post("/query", json={"question": QUESTION}, headers={"X-API-Key": "made-up"})
        assert r.status_code == 401


async def test_an_l1_hit_while_the_index_is_not_ready_is_a_503(make_client):
    async with make_client() as client:
        assert (await client.post("/query", json={"question": QUESTION})).json()["cache_hit"] is False
        slot = client.app.state.slot
        engine, slot.engine = slot.engine, None
        try:
            r = await client.post("/query", json={"question": QUESTION})
            assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        finally:
            slot.engine = engine


def _sample(client, name: str, **labels: str) -> float:
    return client.app.state.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_hit_is_limited_like_any_request(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 1, burst: 2}") as client:
        assert (await client.post("/query", json={"question": QUESTION})).status_code == 200
        hit = await client.post("/query", json={"question": QUESTION})
        assert hit.json()["cache_level"] == "l1" and hit.headers["ratelimit-remaining"] == "0"
        refused = await client.post("/query", json={"question": QUESTION}, headers={"X-Request-ID": "over-1"})
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["x-request-id"] == "over-1"
        assert refused.json()["request_id"] == "over-1" and "IP" in refused.json()["detail"]
        assert (await client.get("/metrics")).json()["rate_limited"] == 1
        assert _sample(client, "kuberag_http_requests_total", route="/query", method="POST", status="429") == 1


async def test_a_hit_is_charged_to_the_users_bucket_inside_its_callers(make_client):
    config = "rateLimit: {requestsPerMinute: 600, burst: 100, perUser: {requestsPerMinute: 1, burst: 1}}"
    async with make_client(config) as client:
        assert (await client.post("/query", json={"question": QUESTION, "user_id": "a"})).status_code == 200
        again = await client.post("/query", json={"question": QUESTION, "user_id": "a"})
        assert again.status_code == 429 and "user_id 'a'" in again.json()["detail"]
        other = await client.post("/query", json={"question": QUESTION, "user_id": "b"})
        assert other.status_code == 200 and other.json()["cache_level"] == "l1"


async def test_hits_are_counted_under_their_route(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 600, burst: 100}") as client:
        for _ in range(3):
            assert (await client.post("/query", json={"question": QUESTION})).status_code == 200
        assert _sample(client, "kuberag_http_requests_total", route="/query", method="POST", status="200") == 3
        assert _sample(client, "kuberag_http_request_duration_seconds_count", route="/query") == 3
        assert _sample(client, "kuberag_cache_hits_total", level="l1") == 2


async def _post_raw(app, body: bytes, chunks: int, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, bytes]:
    """POST /query straight to the ASGI app, the body in ``chunks`` receive messages."""
    size = -(-len(body) // chunks)
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/query", "raw_path": b"/query", "root_path": "", "query_string": b"",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "headers": headers, "state": {}}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def test_bodies_in_pieces_or_without_a_length_get_the_same_answer(make_client):
    import json

    async with make_client("rateLimit: {requestsPerMinute: 600, burst: 100}") as client:
        assert (await client.post("/query", json={"question": QUESTION})).status_code == 200
        body = json.dumps({"question": QUESTION}).encode()
        typed = [(b"content-type", b"application/json")]
        length = [(b"content-length", str(len(body)).encode())]
        for chunks, headers in ((3, typed + length), (1, typed), (2, typed + [(b"transfer-encoding", b"chunked")])):
            status, headers_out, out = await _post_raw(client.app, body, chunks, headers)
            assert status == 200, out
            assert json.loads(out)["cache_level"] == "l1" and headers_out["x-request-id"]
