"""The OpenAI-compatible front door, proven with the official ``openai`` client against a running
``kuberag serve`` whose LLM is the local stand-in for the OpenAI service (which cannot be reached
from here; see tests/fixtures/openai_standin.py)."""

from __future__ import annotations

import os

import httpx
import openai
import pytest

from tests.fixtures.api_app import write_corpus
from tests.fixtures.api_process import start_serve, stop_serve
from tests.fixtures.openai_standin import ANSWER_EN, ANSWER_ES, OpenAIStandIn
from tests.fixtures.redis_server import free_port

pytestmark = pytest.mark.integration

SERVICE = "docs-qa"
CLIENT_KEY = "front-door-client-key-0123456789"


@pytest.fixture(scope="module")
def standin():
    server = OpenAIStandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, standin):
    tmp = tmp_path_factory.mktemp("front-door")
    corpus = write_corpus(tmp / "corpus")
    config = tmp / "config.yaml"
    config.write_text(
        "apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n"
        f"corpus: {{path: {corpus}}}\n"
        "rateLimit: {requestsPerMinute: 100000, burst: 100000}\n"
        "providers:\n"
        f"  llm: {{url: '{standin.url}', model: tiny-model, maxRetries: 0, breakerFailures: 1000,\n"
        "         prices: {tiny-model-2026: {promptPer1k: 0.5, completionPer1k: 1.5}}}\n"
    )
    keys = tmp / "clients.yaml"
    keys.write_text("apiVersion: kuberag.io/v1alpha1\nkind: ClientKeys\n"
                    f"clients:\n  - name: notebook\n    key: {CLIENT_KEY}\n"
                    # A slow refill, so one request's cost shows in RateLimit-Remaining.
                    "    rateLimit: {requestsPerMinute: 6, burst: 500}\n")
    port = free_port()
    env = {"KUBERAG_CLIENT_KEYS": str(keys), **os.environ, "KUBERAG_PORT": str(port), "KUBERAG_METRICS_PORT": str(free_port()),
           "KUBERAG_REDIS_URL": "", "KUBERAG_DATA_DIR": str(tmp / "data"), "KUBERAG_CONFIG": str(config),
           "KUBERAG_HOST": "127.0.0.1", "KUBERAG_SERVICE_NAME": SERVICE, "KUBERAG_LLM_API_KEY": "upstream-key"}
    log_path = tmp / "server.log"
    # Loads the embedding model and indexes the corpus first.
    proc = start_serve(env, port, log_path, ready_within=180)
    base = f"http://127.0.0.1:{port}"
    yield {"base": base, "client": openai.OpenAI(base_url=base + "/v1", api_key=CLIENT_KEY, max_retries=0),
           "log": log_path}
    stop_serve(proc)


def test_the_service_is_a_model(served):
    assert [m.id for m in served["client"].models.list()] == [SERVICE]


def test_plain_completion_with_sources_and_usage(served, standin):
    client = served["client"]
    response = client.chat.completions.create(
        model=SERVICE, messages=[{"role": "user", "content": "Which port does the Redis sidecar listen on?"}])
    assert response.choices[0].message.content == ANSWER_EN
    assert response.model == SERVICE and response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    ext = response.model_extra["kuberag"]
    assert ext["sources"][0]["source"] == "redis.md" and ext["history"] == "none"
    assert ext["degraded"] is False and ext["cache_hit"] is False
    assert ext["estimated_cost"] > 0  # priced by the configured table for the response's model
    # The upstream call carried the service's own LLM key, never the client's.
    assert standin.chat_requests()[-1]["auth"] == "Bearer upstream-key"
    # The same question again is a cache hit through the same caches as /query, with no LLM tokens.
    again = client.chat.completions.create(
        model=SERVICE, messages=[{"role": "user", "content": "Which port does the Redis sidecar listen on?"}])
    assert again.model_extra["kuberag"]["cache_level"] == "l1" and again.usage.total_tokens == 0
    via_query = httpx.post(served["base"] + "/query", json={"question": "Which port does the Redis sidecar listen on?"})
    assert via_query.json()["cache_level"] == "l1"


def test_streamed_completion_ends_with_usage_and_done(served):
    stream = served["client"].chat.completions.create(
        model=SERVICE, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "¿En qué puerto escucha el contenedor de Redis?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER_ES  # the prompt asks for the question's language
    first = chunks[0].model_extra["kuberag"]
    assert first["sources"] and first["question"].startswith("¿En qué puerto")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1 and finals[0].model_extra["kuberag"]["degraded"] is False
    # The raw stream ends with data: [DONE].
    with httpx.stream("POST", served["base"] + "/v1/chat/completions", json={
            "model": SERVICE, "stream": True,
            "messages": [{"role": "user", "content": "¿En qué puerto escucha el contenedor de Redis?"}]}) as raw:
        body = "".join(raw.iter_text())
    assert body.rstrip().endswith("data: [DONE]") and "usage" not in body.split("data: [DONE]")[0].splitlines()[-2]


def test_a_follow_up_is_rewritten_and_cached_under_the_rewrite(served, standin):
    standin.state.rewrite_to = "How long does the L2 cache keep an answer in the Redis sidecar?"
    try:
        response = served["client"].chat.completions.create(model=SERVICE, messages=[
            {"role": "user", "content": "Which port does the Redis sidecar listen on?"},
            {"role": "assistant", "content": "Port 6379 [1]."},
            {"role": "user", "content": "And how long does it keep answers?"},
        ])
    finally:
        standin.state.rewrite_to = None
    ext = response.model_extra["kuberag"]
    assert ext["history"] == "rewritten"
    assert ext["question"] == "How long does the L2 cache keep an answer in the Redis sidecar?"
    # The cache key is the self-contained question: asking it directly is a hit.
    direct = httpx.post(served["base"] + "/query", json={"question": ext["question"]}).json()
    assert direct["cache_level"] == "l1"
    miss = httpx.post(served["base"] + "/query", json={"question": "And how long does it keep answers?"}).json()
    assert miss["cache_hit"] is False


def test_bearer_and_x_api_key_are_the_same_verified_client(served):
    question = {"model": SERVICE, "messages": [{"role": "user", "content": "How are clients identified?"}]}
    bearer = httpx.post(served["base"] + "/v1/chat/completions", json=question,
                        headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    x_api_key = httpx.post(served["base"] + "/v1/chat/completions", json=question, headers={"X-API-Key": CLIENT_KEY})
    assert bearer.status_code == x_api_key.status_code == 200
    # One budget: the second request's remaining count continues the first's.
    assert int(x_api_key.headers["ratelimit-remaining"]) == int(bearer.headers["ratelimit-remaining"]) - 1
    with pytest.raises(openai.AuthenticationError, match="unknown API key"):
        openai.OpenAI(base_url=served["base"] + "/v1", api_key="not-a-key-of-this-service", max_retries=0
                      ).chat.completions.create(**question)


def test_errors_reach_the_client_as_openai_errors(served):
    client = served["client"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="user message"):
        client.chat.completions.create(model=SERVICE, messages=[{"role": "system", "content": "be brief"}])


def test_the_openapi_document_lists_the_front_door(served):
    paths = httpx.get(served["base"] + "/schema/openapi.json").json()["paths"]
    assert "post" in paths["/v1/chat/completions"] and "get" in paths["/v1/models"]
