"""The L2 cache against a real redis-server: killed or hung during a burst, every query is still
answered quickly; when Redis is back L2 is used again; DELETE /cache leaves foreign keys alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kuberag_api.app import create_app
from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.live_config import LiveConfig
from kuberag_contract.config import parse_config
from litestar.testing import AsyncTestClient

from tests.fixtures.api_app import ADMIN_KEY, app_settings, open_engine

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": ADMIN_KEY}

# L1 and L3 off: every repeated question must come from L2, so the test sees what L2 does.
L2_ONLY = """
rateLimit: {requestsPerMinute: 100000, burst: 100000}
cache: {l1: {maxEntries: 0}, l3: {enabled: false}}
"""
QUESTIONS = [
    "Which port does the Redis sidecar listen on?",
    "How many requests per minute may a client send?",
    "What does the operator create for a RagService?",
    "At what temperature is green tea brewed?",
    "How long does black tea take?",
    "How are clients identified?",
]


@pytest.fixture
def engine(tmp_path: Path):
    eng = open_engine(tmp_path)
    yield eng
    eng.close()


# The Redis timeout of the tests that are not about timeouts: the product's 50 ms expires on a
# machine at load 15+, and a background L2 write that timed out is never stored (wait_stored fails).
GENEROUS_TIMEOUT = 1.0


def make_app(tmp_path: Path, engine, redis_url: str, config: str = L2_ONLY, timeout: float = GENEROUS_TIMEOUT):
    settings = app_settings(tmp_path, redis_url=redis_url, breaker_reset_seconds=0.3, socket_timeout=timeout)
    return create_app(settings, engine=engine, live=LiveConfig(parse_config(config)), serve_metrics=False,
                      background_interval=0.1)


async def ask(client: AsyncTestClient, question: str) -> tuple[dict, float]:
    started = time.perf_counter()
    r = await client.post("/query", json={"question": question})
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text
    return r.json(), elapsed


async def wait_for(predicate, within: float = 60.0) -> None:
    """Poll until ``predicate``: generous, as a loaded machine may be slow (a fast one returns at once)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def answer_keys(redis_server) -> int:
    reply = redis_server.command("KEYS", "kuberag:default:local:a:*")
    return int(reply.split(b"\r\n", 1)[0][1:])


async def wait_stored(redis_server, n: int) -> None:
    """L2 writes run in the background (the answer never waits for them): wait until they landed."""
    async def stored() -> bool:
        return answer_keys(redis_server) >= n

    await wait_for(stored)


async def burst(client: AsyncTestClient, n: int) -> list[tuple[dict, float]]:
    return await asyncio.gather(*(ask(client, QUESTIONS[i % len(QUESTIONS)] + " " * (i % 3)) for i in range(n)))


async def in_l2(client: AsyncTestClient, clock, question: str) -> dict:
    """Ask ``question`` until it is answered from L2 (L1 and L3 are off): the first ask computes
    it and writes it to L2 in the background, a later one reads it back. An ask again covers a
    write that timed out; the breaker's clock moves, should those timeouts have opened it."""
    found: dict = {}

    async def from_l2() -> bool:
        body, _ = await ask(client, question)
        if body["cache_level"] == "l2":
            found.update(body)
            return True
        clock.now += client.app.state.cache.l2.breaker.reset_seconds
        await asyncio.sleep(0.1)  # the background write
        return False

    await wait_for(from_l2)
    return found


class ManualClock:
    """The L2 breaker's clock, moved by the test: the breaker stays open until the test lets it
    probe, however long a loaded machine takes between two requests."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("failure", ["killed", "hung"])
async def test_redis_failure_during_a_burst_then_recovery(tmp_path, engine, redis_server, failure):
    # The product's timeout: the test shows what a dead or hung Redis costs a query.
    app = make_app(tmp_path, engine, redis_server.url, timeout=0.05)
    l2 = app.state.cache.l2
    clock = ManualClock()
    breaker = l2.breaker = CircuitBreaker(l2.breaker.failure_threshold, l2.breaker.reset_seconds, clock=clock)
    async with AsyncTestClient(app) as client:
        # On a loaded machine a 50 ms call can time out while Redis is up: a background write is
        # then lost (the answer is computed again next time) and counts as a breaker failure.
        for q in QUESTIONS:
            await in_l2(client, clock, q)
        assert answer_keys(redis_server) == len(QUESTIONS)

        if failure == "killed":
            redis_server.kill()
        else:
            redis_server.hang()
        failed_before = l2.errors
        # A failure left over from a timed-out call since the last success counts towards opening.
        needed = breaker.failure_threshold - breaker.consecutive_failures
        results = await burst(client, 60)
        # Every query answered. A failed Redis call costs at most its timeout, and the breaker
        # opens after failure_threshold of them: only the calls under way by then failed (a
        # query's get, an answer's background set, the probe's ping); every later query made none.
        assert len(results) == 60
        failed = l2.errors - failed_before
        print(f"redis {failure}: 60 queries, {failed} Redis calls failed, slowest "
              f"{max(e for _, e in results) * 1000:.0f} ms")
        assert needed <= failed <= breaker.failure_threshold + 3
        assert breaker.state == "open"
        # Without the timeouts a query would wait on a hung Redis forever (or the pytest timeout).
        assert max(elapsed for _, elapsed in results) < 60
        assert all(b["cache_level"] != "l2" for b, _ in results)
        ready = (await client.get("/readyz", headers=ADMIN)).json()
        assert ready["status"] == "ready"  # a pod without its cache still serves
        assert ready["checks"]["redis"]["status"].startswith("down")
        assert any(b["degraded"] for b, _ in results)
        # With the breaker open, a query makes no Redis call at all (so it pays no timeout).
        failed_before = l2.errors
        body, _ = await ask(client, "Is there a cache for answers?")
        assert l2.errors == failed_before and breaker.state == "open" and body["degraded"] is True

        if failure == "killed":
            redis_server.start()
        else:
            redis_server.resume()

        async def redis_back() -> bool:
            clock.now += breaker.reset_seconds  # the breaker may probe (again)
            return (await client.get("/readyz", headers=ADMIN)).json()["checks"]["redis"]["status"] == "up"

        await wait_for(redis_back)
        fresh = "Which port does the Redis sidecar use?"
        body = await in_l2(client, clock, fresh)
        assert body["degraded"] is False
        # A killed Redis restarted empty; a hung one kept what it had.
        assert answer_keys(redis_server) == (1 if failure == "killed" else len(QUESTIONS) + 1)


async def test_l2_is_shared_by_a_restarted_api_container(tmp_path, engine, redis_server):
    async with AsyncTestClient(make_app(tmp_path, engine, redis_server.url, "{}")) as first:
        body, _ = await ask(first, QUESTIONS[1])
        assert body["cache_hit"] is False
        await wait_stored(redis_server, 1)
    async with AsyncTestClient(make_app(tmp_path, engine, redis_server.url, "{}")) as second:
        body, _ = await ask(second, QUESTIONS[1])
        assert body["cache_level"] == "l2"


async def test_delete_cache_removes_only_kuberag_keys(tmp_path, engine, redis_server):
    redis_server.command("SET", "someone-else:key", "keep me")
    redis_server.command("SET", "kuberag:other-namespace:x:a:1", "another service's entry")
    async with AsyncTestClient(make_app(tmp_path, engine, redis_server.url, "{}")) as client:
        for q in QUESTIONS:
            await ask(client, q)
        await wait_stored(redis_server, 6)
        r = await client.delete("/cache", headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 200
        assert r.json()["cleared"]["l2"] == 6 and r.json()["epoch"] == 1
        assert answer_keys(redis_server) == 0
        assert b"keep me" in redis_server.command("GET", "someone-else:key")
        assert b"another service" in redis_server.command("GET", "kuberag:other-namespace:x:a:1")
        assert b"1" in redis_server.command("GET", "kuberag:default:local:epoch")
        body, _ = await ask(client, QUESTIONS[0])
        assert body["cache_hit"] is False
    # A restarted API container continues at the stored epoch (read at start, or by the readiness
    # loop when that first read timed out on a loaded machine).
    async with AsyncTestClient(make_app(tmp_path, engine, redis_server.url, "{}")) as again:
        async def epoch_read() -> bool:
            return again.app.state.cache.epoch_known

        await wait_for(epoch_read)
        assert again.app.state.cache.epoch == 1


async def test_l2_is_unused_until_its_epoch_is_read(tmp_path, engine, redis_server):
    """The defect: when the epoch read at start failed (the sidecar not up yet, or a read timing
    out under load) the replica went on at epoch 0 and served the entries a DELETE /cache had
    meant to drop (here its UNLINK failed: the entries are still in Redis under epoch 0)."""
    async with AsyncTestClient(make_app(tmp_path, engine, redis_server.url)) as client:
        await ask(client, QUESTIONS[0])
        await wait_stored(redis_server, 1)
    redis_server.command("SET", "kuberag:default:local:epoch", "1")  # cleared, entries left behind
    redis_server.hang()
    try:
        app = make_app(tmp_path, engine, redis_server.url)
        async with AsyncTestClient(app) as client:
            redis_server.resume()
            body, _ = await ask(client, QUESTIONS[0])
            assert body["cache_level"] != "l2", "an entry of the dropped epoch 0 was served"

            async def epoch_read() -> bool:
                return app.state.cache.epoch_known

            await wait_for(epoch_read)
            assert app.state.cache.epoch == 1
            await ask(client, QUESTIONS[0])
            await wait_stored(redis_server, 2)  # now written under epoch 1
            again, _ = await ask(client, QUESTIONS[0])
            assert again["cache_level"] == "l2" and again["degraded"] is False
    finally:
        if redis_server.stopped:
            redis_server.resume()


async def test_l3_hits_refill_an_l2_that_restarted_empty(tmp_path, engine, redis_server):
    """The defect: after the sidecar restarted empty, answers L3 still held were never written back
    to L2 (or L1) until L3 expired, so L2 stayed cold for those questions for an hour."""
    config = "rateLimit: {enabled: false}\ncache: {l3: {threshold: 0.9}}"
    async with AsyncTestClient(make_app(tmp_path, engine, redis_server.url, config)) as client:
        first, _ = await ask(client, QUESTIONS[0])
        assert first["cache_hit"] is False
        await wait_stored(redis_server, 1)
        redis_server.command("FLUSHALL")  # the sidecar restarted empty
        client.app.state.cache.l1.clear()  # and this replica's L1 was evicted
        again, _ = await ask(client, QUESTIONS[0])
        assert again["cache_level"] == "l3"
        await wait_stored(redis_server, 1)  # written back to L2
        assert (await ask(client, QUESTIONS[0]))[0]["cache_level"] == "l1"  # and to L1
        client.app.state.cache.l1.clear()
        assert (await ask(client, QUESTIONS[0]))[0]["cache_level"] == "l2"
        # a semantic (paraphrase) hit is stored under the paraphrase's key in L1 and L2 as well
        para, _ = await ask(client, "On which port does the Redis sidecar listen?")
        assert para["cache_level"] == "l3" and para["similarity"] >= 0.9
        await wait_stored(redis_server, 2)
        client.app.state.cache.l1.clear()
        assert (await ask(client, "On which port does the Redis sidecar listen?"))[0]["cache_level"] == "l2"
        # no-store: a hit is not copied anywhere
        redis_server.command("FLUSHALL")
        client.app.state.cache.l1.clear()
        r = await client.post("/query", json={"question": QUESTIONS[0]}, headers={"Cache-Control": "no-store"})
        assert r.json()["cache_level"] == "l3"
        await asyncio.sleep(0.3)
        assert answer_keys(redis_server) == 0 and len(client.app.state.cache.l1) == 0


async def test_the_redis_gauges_say_what_readyz_says_at_once(tmp_path, engine, redis_server):
    """The Redis gauges are read at scrape time: between an outage and the dashboard there is no
    refresh interval (the refresh here runs once at start, then not for an hour)."""
    settings = app_settings(tmp_path, redis_url=redis_server.url, breaker_reset_seconds=60,
                            socket_timeout=GENEROUS_TIMEOUT)
    app = create_app(settings, engine=engine, live=LiveConfig(parse_config(L2_ONLY)), serve_metrics=False,
                     background_interval=3600)
    registry = app.state.metrics.registry

    def gauges() -> tuple[float | None, float | None]:
        return (registry.get_sample_value("kuberag_redis_up"),
                registry.get_sample_value("kuberag_dependency_up", {"dependency": "redis"}))

    async def redis_status() -> str:
        return (await client.get("/readyz", headers=ADMIN)).json()["checks"]["redis"]["status"]

    async with AsyncTestClient(app) as client:
        async def up() -> bool:
            return await redis_status() == "up"

        await wait_for(up)
        assert gauges() == (1.0, 1.0)
        redis_server.kill()
        for i in range(100):  # each query's failed L2 call counts towards opening the breaker
            await client.post("/query", json={"question": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"})
            if (await redis_status()).startswith("down"):
                break
        assert (await redis_status()).startswith("down")
        assert gauges() == (0.0, 0.0)
