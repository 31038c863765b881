"""The OpenAI-compatible adapters (chat generation, embeddings) against a local stand-in server.

The OpenAI service itself cannot be reached from here: ``tests/fixtures/openai_standin.py`` stands
in for it on a loopback port, speaking the real wire format (JSON and SSE) and injecting 429 with
Retry-After, 500, a slow first token, a stream cut mid-answer and malformed JSON. The real
``openai`` client is driven against it.
"""

import asyncio
import socket
import time

import numpy as np
import pytest
from kuberag_api.rag import (
    NOT_FOUND_ANSWER,
    EmbeddingError,
    GenerationError,
    OpenAIChatGenerator,
    OpenAIEmbedder,
    Passage,
    RagEngine,
)
from kuberag_contract.config import LLMEndpoint, LLMTimeouts, Retrieval

from tests.fixtures.openai_standin import ANSWER_EN, ANSWER_ES, EMBEDDING_DIM, OpenAIStandIn, fake_embedding

pytestmark = pytest.mark.integration


@pytest.fixture
def standin():
    server = OpenAIStandIn()
    yield server
    server.close()


PASSAGES = [
    Passage("d1", "d1:0", "caching.md", "The L2 cache is a Redis sidecar on localhost.", 0.6, {"dense_score": 0.6}),
    Passage("d2", "d2:0", "limits.md", "Clients are limited per pod.", 0.3, {"dense_score": 0.3}),
]


def generator(url: str, retries: list | None = None, **endpoint) -> OpenAIChatGenerator:
    endpoint.setdefault("timeouts", LLMTimeouts(connect_seconds=2, first_token_seconds=2, total_seconds=20))
    config = LLMEndpoint(url=url, model="tiny-model", **endpoint)
    g = OpenAIChatGenerator(url, "tiny-model", "secret-key", endpoint=config,
                            on_retry=(retries.append if retries is not None else None))
    g.BACKOFF_BASE_SECONDS = 0.05  # the backoff itself is not what these tests time
    return g


async def test_generate_sends_numbered_passages_and_reports_usage(standin):
    answer = await generator(standin.url).generate("Where does the L2 cache run?", PASSAGES)
    assert answer.text == ANSWER_EN
    assert answer.model == "tiny-model-2026" and answer.prompt_tokens > 0 and answer.completion_tokens > 0
    sent = standin.chat_requests()[-1]
    assert sent["auth"] == "Bearer secret-key"
    user = sent["body"]["messages"][-1]["content"]
    assert "[1] (caching.md) The L2 cache is a Redis sidecar" in user and "[2] (limits.md)" in user
    assert "Where does the L2 cache run?" in user


async def test_stream_yields_the_model_text_and_its_usage(standin):
    usage: dict = {}
    pieces = [p async for p in generator(standin.url).stream("Where does the L2 cache run?", PASSAGES, usage)]
    assert "".join(pieces) == ANSWER_EN and len(pieces) > 1
    body = standin.chat_requests()[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert usage["model"] == "tiny-model-2026" and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


async def test_no_relevant_passage_answers_without_calling_the_model(standin):
    irrelevant = [Passage("d", "d:0", "x.md", "Bananas.", 0.01, {"dense_score": 0.01})]
    answer = await generator(standin.url).generate("capital of France?", irrelevant)
    assert answer.text == NOT_FOUND_ANSWER
    assert standin.requests == []


async def test_429_is_retried_after_its_retry_after(standin):
    retries: list = []
    standin.fail(("429", 1))
    started = time.monotonic()
    answer = await generator(standin.url, retries).generate("Where does the L2 cache run?", PASSAGES)
    assert answer.text == ANSWER_EN
    first, second = standin.chat_requests()
    assert second["at"] - first["at"] >= 0.95  # Retry-After: 1 honoured
    assert retries == ["rate_limited"] and time.monotonic() - started < 15


async def test_500s_are_retried_with_backoff_then_succeed(standin):
    retries: list = []
    standin.fail(("500", 0), ("500", 0))
    answer = await generator(standin.url, retries, max_retries=2).generate("q about redis", PASSAGES)
    assert answer.text == ANSWER_EN and len(standin.chat_requests()) == 3
    assert retries == ["server_error", "server_error"]


async def test_retries_are_bounded(standin):
    standin.fail(*[("500", 0)] * 5)
    with pytest.raises(GenerationError, match="server_error") as failed:
        await generator(standin.url, max_retries=1).generate("q", PASSAGES)
    assert failed.value.reason == "server_error" and len(standin.chat_requests()) == 2


async def test_a_slow_first_token_times_out_and_is_retried(standin):
    standin.fail(("slow", 3))
    retries: list = []
    g = generator(standin.url, retries, timeouts=LLMTimeouts(connect_seconds=2, first_token_seconds=0.5,
                                                             total_seconds=30))
    pieces = [p async for p in g.stream("Where does the L2 cache run?", PASSAGES)]
    assert "".join(pieces) == ANSWER_EN and retries == ["timeout"]


async def test_the_total_deadline_bounds_every_attempt(standin):
    standin.fail(*[("slow", 3)] * 5)
    g = generator(standin.url, max_retries=5,
                  timeouts=LLMTimeouts(connect_seconds=2, first_token_seconds=1, total_seconds=1.5))
    started = time.monotonic()
    with pytest.raises(GenerationError, match="timeout"):
        await g.generate("q", PASSAGES)
    assert time.monotonic() - started < 5


async def test_a_stream_cut_mid_answer_raises_after_the_sent_part(standin):
    standin.fail(("cut", 2))
    received = []
    with pytest.raises(GenerationError, match="mid-answer"):
        async for piece in generator(standin.url).stream("Where does the L2 cache run?", PASSAGES):
            received.append(piece)
    assert "".join(received) == "Redis runs "  # two pieces arrived, then the connection closed


async def test_malformed_json_fails_without_retrying(standin):
    standin.fail(("malformed", 0))
    with pytest.raises(GenerationError) as failed:
        await generator(standin.url, max_retries=3).generate("q", PASSAGES)
    assert failed.value.reason == "malformed" and len(standin.chat_requests()) == 1


async def test_the_breaker_opens_after_repeated_failures_and_probes_later(standin):
    g = generator(standin.url, max_retries=0, breaker_failures=2, breaker_reset_seconds=1)
    standin.fail(("500", 0), ("500", 0))
    for _ in range(2):
        with pytest.raises(GenerationError):
            await g.generate("q", PASSAGES)
    with pytest.raises(GenerationError, match="circuit breaker is open") as failed:
        await g.generate("q", PASSAGES)
    assert failed.value.reason == "circuit_open" and len(standin.chat_requests()) == 2  # no call made
    await asyncio.sleep(1.1)
    assert (await g.generate("q", PASSAGES)).text == ANSWER_EN  # the half-open probe succeeds


async def test_the_prompt_is_trimmed_to_the_context_budget_by_whole_passages(standin):
    long = [Passage(f"d{i}", f"d{i}:0", f"doc{i}.md", f"Passage {i} about Redis. " + "filler words " * 60, 0.9 - i / 10,
                    {"dense_score": 0.9 - i / 10}) for i in range(6)]
    g = generator(standin.url, context_tokens=1400, max_tokens=256)
    await g.generate("Where does Redis run?", long)
    user = standin.chat_requests()[-1]["body"]["messages"][-1]["content"]
    kept = [i for i in range(6) if f"[{i + 1}] (doc{i}.md)" in user]
    assert kept == list(range(len(kept))) and 0 < len(kept) < 6  # the best ones, in rank order
    for i in kept:  # each kept passage is whole
        assert long[i].text in user
    assert g.reservation("Where does Redis run?", long) >= 256


async def test_the_answer_is_in_the_question_language(standin):
    g = generator(standin.url)
    spanish = await g.generate("¿Dónde se ejecuta la caché L2?", PASSAGES)
    system = standin.chat_requests()[-1]["body"]["messages"][0]["content"]
    assert "Answer in the language of the question" in system
    assert spanish.text == ANSWER_ES
    assert (await g.generate("Where does the L2 cache run?", PASSAGES)).text == ANSWER_EN


def test_embeddings_endpoint_behind_the_embedder_protocol(standin, tmp_path):
    embedder = OpenAIEmbedder(standin.url, "tiny-embed")
    assert embedder.dim == EMBEDDING_DIM and embedder.name == "openai:tiny-embed"
    vectors = embedder.embed(["alpha", "beta gamma"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected = np.asarray(fake_embedding("beta gamma"))
    np.testing.assert_allclose(vectors[1], expected / np.linalg.norm(expected), atol=1e-6)
    # The engine runs on it unchanged.
    engine = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=embedder)
    engine.ingest("zebra.txt", b"Zebras have black and white stripes.")
    engine.ingest("kube.txt", b"Kubernetes schedules pods onto nodes.")
    assert engine.retrieve("where are pods scheduled", top_k=1)[0].source == "kube.txt"
    engine.close()


def test_an_unreachable_embeddings_endpoint_fails_on_use_with_the_reason():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedder = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "tiny-embed", timeout=2.0)  # does not connect yet
    with pytest.raises(EmbeddingError, match="embeddings endpoint failed"):
        _ = embedder.dim
