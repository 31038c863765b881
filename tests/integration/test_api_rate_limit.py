"""Rate limits exact under concurrency: per replica (in-process) and shared (Lua on a real Redis,
two API instances as two pods); a failing shared Redis is visible, never a silent fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kuberag_api.app import create_app
from kuberag_api.live_config import LiveConfig
from kuberag_contract.config import parse_config
from litestar.testing import AsyncTestClient

from tests.fixtures.api_app import app_settings, open_engine

pytestmark = pytest.mark.integration

# One request per minute refills: within the test only the burst counts, so the count is exact.
PER_REPLICA = "rateLimit: {requestsPerMinute: 1, burst: 20}"
SHARED = "rateLimit: {requestsPerMinute: 1, burst: 20, scope: shared}"


@pytest.fixture
def engine(tmp_path: Path):
    eng = open_engine(tmp_path)
    yield eng
    eng.close()


def make_app(tmp_path: Path, engine, config: str, limiter_url: str | None = None):
    settings = app_settings(tmp_path, limiter_url=limiter_url, breaker_reset_seconds=0.3)
    return create_app(settings, engine=engine, live=LiveConfig(parse_config(config)), serve_metrics=False,
                      background_interval=0.1)


async def fire(client: AsyncTestClient, n: int, user: str) -> list[int]:
    q = {"question": "How is green tea brewed?", "user_id": user}
    responses = await asyncio.gather(*(client.post("/query", json=q) for _ in range(n)))
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
        assert codes.count(200) == 20 and codes.count(429) == 40
        ready = (await pod_a.get("/readyz")).json()["checks"]["limiter"]
        assert ready["scope"] == "shared" and ready["status"] == "ok"


async def test_shared_limiter_failure_is_visible_and_still_limits(tmp_path, engine, redis_server):
    async with AsyncTestClient(make_app(tmp_path, engine, SHARED, redis_server.url)) as client:
        assert (await fire(client, 3, "dave")).count(200) == 3
        redis_server.kill()
        codes = await fire(client, 30, "erin")
        # Fail-open to the per-replica limiter, not to "unlimited".
        assert codes.count(200) == 20 and codes.count(429) == 10
        r = await client.post("/query", json={"question": "How is green tea brewed?", "user_id": "frank"})
        assert r.status_code == 200 and r.json()["degraded"] is True
        limiter = (await client.get("/readyz")).json()["checks"]["limiter"]
        assert limiter["status"].startswith("degraded")
        redis_server.start()
        for _ in range(100):
            r = await client.post("/query", json={"question": "How is green tea brewed?", "user_id": "gina"})
            if not r.json().get("degraded"):
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 200 and r.json()["degraded"] is False
        assert (await client.get("/readyz")).json()["checks"]["limiter"]["status"] == "ok"
