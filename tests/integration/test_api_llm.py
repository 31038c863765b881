"""The query pipeline with an LLM that fails: the extractive answer, flagged degraded, counted and
never cached under the LLM's key; tokens and estimated cost counted by model. The LLM is a local
stand-in for the OpenAI service (which cannot be reached from here; tests/fixtures/openai_standin.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kuberag_api.app import create_app
from kuberag_api.live_config import LiveConfig
from kuberag_contract.config import parse_config
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest

from tests.fixtures.api_app import ADMIN_KEY, app_settings, open_engine
from tests.fixtures.openai_standin import ANSWER_EN, OpenAIStandIn

pytestmark = pytest.mark.integration

QUESTION = {"question": "Which port does the Redis sidecar listen on?"}


@pytest.fixture
def standin():
    server = OpenAIStandIn()
    yield server
    server.close()


@pytest.fixture
def engine(tmp_path: Path):
    eng = open_engine(tmp_path)
    yield eng
    eng.close()


def make_app(tmp_path: Path, engine, url: str, extra: str = ""):
    config = (
        "providers:\n"
        f"  llm: {{url: '{url}', model: tiny-model, maxRetries: 1, breakerFailures: 2, breakerResetSeconds: 60,\n"
        "         timeouts: {connectSeconds: 2, firstTokenSeconds: 5, totalSeconds: 20},\n"
        "         prices: {tiny-model-2026: {promptPer1k: 2.0, completionPer1k: 4.0}}" + extra + "}\n"
    )
    return create_app(app_settings(tmp_path), engine=engine, live=LiveConfig(parse_config(config)), serve_metrics=False)


def scrape(app) -> str:
    return generate_latest(app.state.metrics.registry).decode()


async def test_a_failing_llm_gives_the_extractive_answer_degraded_counted_and_not_cached(tmp_path, engine, standin):
    app = make_app(tmp_path, engine, standin.url)
    async with AsyncTestClient(app) as client:
        standin.fail(("500", 0), ("500", 0))  # the call and its one retry
        first = (await client.post("/query", json=QUESTION)).json()
        assert first["degraded"] is True and first["model"] == "extractive"
        assert "6379" in first["answer"] and first["cache_hit"] is False
        text = scrape(app)
        assert 'kuberag_llm_fallbacks_total{reason="server_error"} 1.0' in text
        assert 'kuberag_llm_retries_total{reason="server_error"} 1.0' in text
        # Not cached: the next request asks the LLM again and gets its answer, then that one is cached.
        second = (await client.post("/query", json=QUESTION)).json()
        assert second["degraded"] is False and second["answer"] == ANSWER_EN and second["cache_hit"] is False
        third = (await client.post("/query", json=QUESTION)).json()
        assert third["cache_level"] == "l1" and third["answer"] == ANSWER_EN
        assert len(standin.chat_requests()) == 3


async def test_an_open_breaker_answers_extractively_without_calling(tmp_path, engine, standin):
    app = make_app(tmp_path, engine, standin.url)
    async with AsyncTestClient(app) as client:
        standin.fail(*[("500", 0)] * 4)
        for i in range(2):
            r = (await client.post("/query", json={"question": f"Which port does Redis use? ({i})"})).json()
            assert r["degraded"] is True
        calls = len(standin.chat_requests())
        r = (await client.post("/query", json={"question": "How many requests may a client send?"})).json()
        assert r["degraded"] is True and len(standin.chat_requests()) == calls
        text = scrape(app)
        assert 'kuberag_llm_fallbacks_total{reason="circuit_open"} 1.0' in text
        assert "kuberag_llm_circuit_open 1.0" in text
        ready = await client.get("/readyz", headers={"X-API-Key": ADMIN_KEY})  # detail is admin-only
        assert ready.status_code == 200  # still ready: it answers, extractively
        assert ready.json()["checks"]["llm"]["status"].startswith("circuit open")


async def test_a_stream_cut_mid_answer_ends_with_the_extractive_answer_and_is_not_cached(tmp_path, engine, standin):
    app = make_app(tmp_path, engine, standin.url)
    async with AsyncTestClient(app) as client:
        standin.fail(("cut", 2))
        r = await client.post("/query/stream", json=QUESTION)
        events = [line for line in r.text.splitlines() if line.startswith("data:")]
        assert '"degraded":true' in events[-1] and "6379" in events[-1]
        again = (await client.post("/query", json=QUESTION)).json()
        assert again["cache_hit"] is False and again["answer"] == ANSWER_EN


async def test_tokens_and_cost_are_counted_by_model_and_reported(tmp_path, engine, standin):
    app = make_app(tmp_path, engine, standin.url)
    async with AsyncTestClient(app) as client:
        body = (await client.post("/query", json=QUESTION)).json()
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        expected = usage["prompt_tokens"] / 1000 * 2.0 + usage["completion_tokens"] / 1000 * 4.0
        assert usage["estimated_cost"] == pytest.approx(expected)
        text = scrape(app)
        assert (f'kuberag_llm_tokens_total{{kind="prompt",model="tiny-model-2026"}} '
                f'{float(usage["prompt_tokens"])}') in text
        assert 'kuberag_llm_estimated_cost_total{model="tiny-model-2026"}' in text
        hit = (await client.post("/query", json=QUESTION)).json()
        assert hit["cache_level"] == "l1" and hit["usage"]["total_tokens"] == 0


def token_config(url: str, per_minute: int, burst: int) -> str:
    return (
        f"rateLimit: {{requestsPerMinute: 100000, burst: 100000, tokensPerMinute: {per_minute}, tokenBurst: {burst}}}\n"
        "providers:\n"
        f"  llm: {{url: '{url}', model: tiny-model, maxTokens: 400, maxRetries: 0}}\n"
    )


def reservation_of(app, engine, question: str) -> int:
    return app.state.query_service.generator.reservation(question, engine.retrieve(question))


async def test_token_limits_reserve_settle_and_refuse_with_the_token_policy(tmp_path, engine, standin):
    live = LiveConfig(parse_config(token_config(standin.url, 60, 10**6)))
    app = create_app(app_settings(tmp_path), engine=engine, live=live, serve_metrics=False)
    q1, q2, q3 = ("Which port does the Redis sidecar listen on?", "How many requests per minute may a client send?",
                  "What does the operator create for a RagService?")
    needed = max(reservation_of(app, engine, q) for q in (q1, q2, q3))
    burst = int(needed * 1.5)  # one reservation fits, two do not unless the first is settled
    live.apply(parse_config(token_config(standin.url, 60, burst)), "tokens-1")  # live reload
    async with AsyncTestClient(app) as client:
        first = await client.post("/query", json={"question": q1, "user_id": "alice"})
        assert first.status_code == 200, first.text
        assert first.headers["x-ratelimit-limit-tokens"] == str(burst)
        assert int(first.headers["x-ratelimit-remaining-tokens"]) <= burst - reservation_of(app, engine, q1)
        assert first.headers["ratelimit-policy"].startswith('"tokens";q=60;w=60')
        used = first.json()["usage"]["total_tokens"]
        assert 0 < used < reservation_of(app, engine, q1)
        # Settled: the unused part came back, so a second reservation fits.
        second = await client.post("/query", json={"question": q2, "user_id": "alice"})
        assert second.status_code == 200, second.text
        # Now the bucket is short of a third reservation: 429 naming the token policy.
        third = await client.post("/query", json={"question": q3, "user_id": "alice"})
        assert third.status_code == 429, third.text
        problem = third.json()
        assert problem["policy"] == "tokens" and "token limit exceeded" in problem["detail"]
        assert int(third.headers["retry-after"]) >= 1 and "x-ratelimit-remaining-tokens" in third.headers
        # A cache hit spends no tokens and is never refused for them.
        again = await client.post("/query", json={"question": q1, "user_id": "alice"})
        assert again.status_code == 200 and again.json()["cache_level"] == "l1"
        # The streamed routes are refused before their stream starts.
        streamed = await client.post("/query/stream", json={"question": q3, "user_id": "alice"})
        assert streamed.status_code == 429
        front = await client.post("/v1/chat/completions", json={
            "model": "local", "messages": [{"role": "user", "content": q3}], "user": "alice"})
        assert front.status_code == 429 and front.json()["error"]["code"] == "rate_limit_exceeded"
        assert "kuberag_token_limited_requests_total 3.0" in scrape(app)
        # A call larger than the whole bucket is refused for good, without a Retry-After.
        live.apply(parse_config(token_config(standin.url, 60, 10)), "tokens-2")
        too_big = await client.post("/query", json={"question": q3 + " (again)", "user_id": "bob"})
        assert too_big.status_code == 429 and "retry-after" not in too_big.headers
        assert "no wait lets it through" in too_big.json()["detail"]


async def test_a_failed_llm_call_gives_its_reservation_back(tmp_path, engine, standin):
    live = LiveConfig(parse_config(token_config(standin.url, 60, 10**6)))
    app = create_app(app_settings(tmp_path), engine=engine, live=live, serve_metrics=False)
    q1, q2 = "Which port does the Redis sidecar listen on?", "How many requests per minute may a client send?"
    burst = int(max(reservation_of(app, engine, q) for q in (q1, q2)) * 1.2)
    live.apply(parse_config(token_config(standin.url, 60, burst)), "tokens-1")
    async with AsyncTestClient(app) as client:
        standin.fail(("500", 0))
        failed = (await client.post("/query", json={"question": q1, "user_id": "carol"})).json()
        assert failed["degraded"] is True
        ok = await client.post("/query", json={"question": q2, "user_id": "carol"})
        assert ok.status_code == 200 and ok.json()["degraded"] is False
