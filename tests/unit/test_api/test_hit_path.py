"""The L1 hit is answered before the handler (``answer_from_l1``): it must be the same response the
handler builds, with every header, metric and rule of the full path."""

from __future__ import annotations

import pytest
from kuberag_api.controllers import EncodedJSON
from litestar import Litestar, Request, post
from litestar.testing import AsyncTestClient

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


async def test_encoded_json_gives_way_to_headers_a_layer_adds():
    """Should a layer (app/router ``response_headers``) add headers, they are not dropped."""

    @post("/x", response_headers={"X-Layer": "kept"}, status_code=200)
    async def handler(request: Request) -> EncodedJSON:
        return EncodedJSON(b'{"a":1}')

    async with AsyncTestClient(Litestar([handler])) as client:
        r = await client.post("/x")
        assert r.json() == {"a": 1} and r.headers["x-layer"] == "kept"
        assert r.headers["content-type"] == "application/json"
