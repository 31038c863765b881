"""Rate limits exact under concurrency: per replica (in-process) and shared (Lua on a real Redis,
two API instances as two pods); a failing shared Redis is visible, never a silent fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kuberag_api.app import create_app
from kuberag_api.identity import ClientKeyStore
from kuberag_api.live_config import LiveConfig
from kuberag_contract.config import parse_client_keys, parse_config
from litestar.testing import AsyncTestClient

from tests.fixtures.api_app import ADMIN_KEY, app_settings, client_keys_yaml, open_engine

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": ADMIN_KEY}

# One request per minute refills: within the test only the burst counts, so the count is exact.
PER_REPLICA = "rateLimit: {requestsPerMinute: 1, burst: 20}"
SHARED = "rateLimit: {requestsPerMinute: 1, burst: 20, scope: shared}"


@pytest.fixture
def engine(tmp_path: Path):
    eng = open_engine(tmp_path)
    yield eng
    eng.close()


USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
# Each test caller is a verified client (callers without a key would all share the test IP's budget).
KEYS = client_keys_yaml(*({"name": u, "key": f"{u}-key-0123456789abcdef"} for u in USERS))


def make_app(tmp_path: Path, engine, config: str, limiter_url: str | None = None):
    # A generous Redis timeout: on a loaded machine a 50 ms one expires now and then, and the pod
    # then (rightly) limits per replica for that request, which is not what these tests count.
    settings = app_settings(tmp_path, limiter_url=limiter_url, breaker_reset_seconds=0.3, socket_timeout=10.0)
    return create_app(settings, engine=engine, live=LiveConfig(parse_config(config)), serve_metrics=False,
                      client_keys=ClientKeyStore(parse_client_keys(KEYS)), background_interval=0.1)


def as_client(user: str) -> dict[str, str]:
    return {"X-API-Key": f"{user}-key-0123456789abcdef"}


async def fire(client: AsyncTestClient, n: int, user: str) -> list[int]:
    q = {"question": "How is green tea brewed?"}
    responses = await asyncio.gather(*(client.post("/query", json=q, headers=as_client(user)) for _ in range(n)))
    return [r.status_code for r in responses]


async def test_per_replica_limit_is_exact_under_concurrency(tmp_path, engine):
    async with AsyncTestClient(make_app(tmp_path, engine, PER_REPLICA)) as client:
        codes = await fire(client, 60, "alice")
        assert codes.count(200) == 20 and codes.count(429) == 40
        assert (await fire(client, 5, "bob")).count(200) == 5
        assert (await client.get("/metrics")).json()["rate_limited"] == 40


async def test_shared_limit_is_exact_across_two_pods(tmp_path, engine, redis_server):
    pod_a = AsyncTestClient(make_app(tmp_path / "a", engine, SHARED, redis_server.url))
    pod_b = AsyncTestClient(make_app(tmp_path / "b", engine, SHARED, redis_server.url))
    async with pod_a, pod_b:
        results = await asyncio.gather(fire(pod_a, 30, "carol"), fire(pod_b, 30, "carol"))
        codes = results[0] + results[1]
        fallbacks = sum(pod.app.state.limiter.fallbacks for pod in (pod_a, pod_b))
        assert fallbacks == 0, "a shared-limiter call failed: those requests were limited per replica"
        assert codes.count(200) == 20 and codes.count(429) == 40
        ready = (await pod_a.get("/readyz", headers=ADMIN)).json()["checks"]["limiter"]
        assert ready["scope"] == "shared" and ready["status"] == "ok"


async def test_shared_limiter_failure_is_visible_and_still_limits(tmp_path, engine, redis_server):
    async with AsyncTestClient(make_app(tmp_path, engine, SHARED, redis_server.url)) as client:
        assert (await fire(client, 3, "dave")).count(200) == 3
        redis_server.kill()
        codes = await fire(client, 30, "erin")
        # Fail-open to the per-replica limiter, not to "unlimited".
        assert codes.count(200) == 20 and codes.count(429) == 10
        r = await client.post("/query", json={"question": "How is green tea brewed?"}, headers=as_client("frank"))
        assert r.status_code == 200 and r.json()["degraded"] is True
        limiter = (await client.get("/readyz", headers=ADMIN)).json()["checks"]["limiter"]
        assert limiter["status"].startswith("degraded")
        redis_server.start()
        for _ in range(100):
            r = await client.post("/query", json={"question": "How is green tea brewed?"}, headers=as_client("gina"))
            if not r.json().get("degraded"):
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200 and r.json()["degraded"] is False
        assert (await client.get("/readyz", headers=ADMIN)).json()["checks"]["limiter"]["status"] == "ok"


async def test_shared_limit_with_per_user_buckets_is_exact_across_two_pods(tmp_path, engine, redis_server):
    """A user's bucket lives inside its client's, in one atomic script: across two pods, 4 users of
    one client with 3 requests each get exactly the client's 8 (and no user more than its 3)."""
    config = "rateLimit: {requestsPerMinute: 1, burst: 8, scope: shared, perUser: {requestsPerMinute: 1, burst: 3}}"
    pod_a = AsyncTestClient(make_app(tmp_path / "a", engine, config, redis_server.url))
    pod_b = AsyncTestClient(make_app(tmp_path / "b", engine, config, redis_server.url))

    async def ask(pod, user_id):
        r = await pod.post("/query", json={"question": "How is green tea brewed?", "user_id": user_id},
                           headers=as_client("alice"))
        return user_id, r.status_code

    async with pod_a, pod_b:
        results = await asyncio.gather(*(ask(pod, f"user{u}") for u in range(4) for pod in (pod_a, pod_b, pod_a)))
        allowed = [u for u, code in results if code == 200]
        assert sum(pod.app.state.limiter.fallbacks for pod in (pod_a, pod_b)) == 0
        assert len(allowed) == 8 and all(allowed.count(f"user{u}") <= 3 for u in range(4))
        assert sorted(code for _, code in results).count(429) == 4
