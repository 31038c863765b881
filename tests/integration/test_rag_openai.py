"""The OpenAI-compatible adapters (chat generation, embeddings) against a local HTTP server.

The OpenAI service itself cannot be reached from here, so this test starts a small
OpenAI-compatible server on a free loopback port (chat completions, streamed and not, and
embeddings) and drives the real ``openai`` client against it.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
from kuberag_contract.config import Retrieval

pytestmark = pytest.mark.integration

DIM = 16


def fake_embedding(text: str) -> list[float]:
    # Letter counts: texts sharing words share directions, which is all a retrieval test needs.
    v = np.zeros(DIM)
    for ch in text.lower():
        if ch.isalpha():
            v[(ord(ch) * 7) % DIM] += 1.0
    return (v + 0.01).tolist()


class OpenAICompatibleHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []
    fail = False

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
        if type(self).fail:
            return self._json(500, {"error": {"message": "model overloaded", "type": "server_error"}})
        if self.path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": fake_embedding(t)} for i, t in enumerate(inputs)]
            # Out of order on purpose: the adapter must sort by index.
            return self._json(200, {"object": "list", "data": data[::-1], "model": body["model"],
                                    "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        if self.path == "/v1/chat/completions":
            answer = "Redis runs as a sidecar [1]."
            if body.get("stream"):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for piece in ["Redis runs ", "as a sidecar ", "[1]."]:
                    event = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                return None
            return self._json(200, {
                "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
            })
        return self._json(404, {"error": {"message": f"no route {self.path}"}})


@pytest.fixture
def openai_server():
    OpenAICompatibleHandler.requests = []
    OpenAICompatibleHandler.fail = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), OpenAICompatibleHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


PASSAGES = [
    Passage("d1", "d1:0", "caching.md", "The L2 cache is a Redis sidecar on localhost.", 0.6, {"dense_score": 0.6}),
    Passage("d2", "d2:0", "limits.md", "Clients are limited per pod.", 0.3, {"dense_score": 0.3}),
]


async def test_generate_sends_numbered_passages_and_reports_usage(openai_server):
    generator = OpenAIChatGenerator(openai_server, "tiny-model", "secret-key")
    answer = await generator.generate("Where does the L2 cache run?", PASSAGES)
    assert answer.text == "Redis runs as a sidecar [1]."
    assert (answer.model, answer.prompt_tokens, answer.completion_tokens) == ("tiny-model", 42, 7)
    sent = OpenAICompatibleHandler.requests[-1]
    assert sent["auth"] == "Bearer secret-key"
    user = sent["body"]["messages"][-1]["content"]
    assert "[1] (caching.md) The L2 cache is a Redis sidecar" in user and "[2] (limits.md)" in user
    assert "Where does the L2 cache run?" in user


async def test_stream_yields_the_model_text(openai_server):
    generator = OpenAIChatGenerator(openai_server, "tiny-model", None)
    pieces = [p async for p in generator.stream("Where does the L2 cache run?", PASSAGES)]
    assert pieces == ["Redis runs ", "as a sidecar ", "[1]."]
    assert OpenAICompatibleHandler.requests[-1]["body"]["stream"] is True


async def test_no_relevant_passage_answers_without_calling_the_model(openai_server):
    irrelevant = [Passage("d", "d:0", "x.md", "Bananas.", 0.01, {"dense_score": 0.01})]
    answer = await OpenAIChatGenerator(openai_server, "tiny-model").generate("capital of France?", irrelevant)
    assert answer.text == NOT_FOUND_ANSWER
    assert OpenAICompatibleHandler.requests == []


async def test_a_failing_endpoint_raises_generation_error(openai_server):
    OpenAICompatibleHandler.fail = True
    with pytest.raises(GenerationError, match="LLM endpoint failed"):
        await OpenAIChatGenerator(openai_server, "tiny-model").generate("q", PASSAGES)


def test_embeddings_endpoint_behind_the_embedder_protocol(openai_server, tmp_path):
    embedder = OpenAIEmbedder(openai_server, "tiny-embed")
    assert embedder.dim == DIM and embedder.name == "openai:tiny-embed"
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
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedder = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "tiny-embed", timeout=2.0)  # does not connect yet
    with pytest.raises(EmbeddingError, match="embeddings endpoint failed"):
        _ = embedder.dim
