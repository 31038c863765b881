"""The OpenAI-compatible front door: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client talks to a RagService as to a model named after it. The last user message is the
question; earlier turns make a follow-up self-contained through the configured LLM (the cache key
is then the rewritten question), and are ignored when no LLM is configured. Answers go through the
same limiter, caches and metrics as ``POST /query``. kuberag's own fields (the sources, the
question actually answered, cache and degraded flags) travel in one extension field, ``kuberag``,
of the completion object and of the first and last chunks of a stream. Errors are RFC 9457
problems that also carry OpenAI's ``error`` object, so OpenAI clients show their message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from kuberag_contract.config import build_decoding_info
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Schema
from litestar.params import JSONBody
from litestar.response import Stream

from kuberag_api.cache.entry import CachedSource
from kuberag_api.log_format import request_id_var
from kuberag_api.middleware import client_key_of, degraded_causes
from kuberag_api.openapi import problems
from kuberag_api.rag import GenerationError
from kuberag_api.rag.generation import REWRITE_PROMPT
from kuberag_api.schemas import QUESTION_MAX_CHARS, OpenAIErrorBody
from kuberag_api.services import QueryOutcome, QueryService

EXTENSION = "kuberag"
MAX_MESSAGES = 64
MAX_HISTORY_CHARS = 8000
REWRITE_MAX_TOKENS = 128


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """OpenAI's request body. Fields kuberag does not use (temperature, top_p, seed, ...) are
    accepted and ignored, as OpenAI-compatible servers do; ``n`` must be 1."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] = 1


class ModelCard(msgspec.Struct):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: str
    data: list[ModelCard]


class AssistantMessage(msgspec.Struct):
    role: str
    content: str


class Choice(msgspec.Struct):
    index: int
    message: AssistantMessage
    finish_reason: str


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class KuberagExtension(msgspec.Struct):
    """kuberag's fields beside OpenAI's: named ``kuberag`` in completions and chunks."""

    sources: list[CachedSource] | None = None
    question: str | None = None
    """The question answered: the last user message, or its self-contained rewrite."""
    history: Literal["none", "rewritten", "ignored"] | None = None
    """What became of earlier turns: none sent, used to rewrite the question, or ignored (no LLM
    is configured to rewrite with)."""
    cache_hit: bool | None = None
    cache_level: Literal["l1", "l2", "l3"] | None = None
    degraded: bool | None = None
    estimated_cost: float | None = None
    request_id: str | None = None


class ChatCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    kuberag: KuberagExtension


def _text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise ValidationException(f"messages: only text content parts are supported, got {part.type!r}",
                                      extra=[{"key": "messages", "message": "only text content parts"}])
        parts.append(part.text)
    return "\n".join(parts)


def _question_and_history(data: ChatCompletionRequest) -> tuple[str, list[tuple[str, str]]]:
    last = max((i for i, m in enumerate(data.messages) if m.role == "user"), default=None)
    if last is None:
        raise ValidationException("messages must contain a user message (its last one is the question)",
                                  extra=[{"key": "messages", "message": "no user message"}])
    question = _text(data.messages[last]).strip()
    if not question:
        raise ValidationException("the last user message is empty", extra=[{"key": "messages", "message": "empty"}])
    if len(question) > QUESTION_MAX_CHARS:
        raise ValidationException(
            f"the last user message must be at most {QUESTION_MAX_CHARS} characters (got {len(question)})",
            extra=[{"key": "messages", "message": f"at most {QUESTION_MAX_CHARS} characters"}])
    history = [(m.role, _text(m)) for m in data.messages[:last] if m.role in ("user", "assistant")]
    return question, history


async def _self_contained(service: QueryService, question: str, history: list[tuple[str, str]]
                          ) -> tuple[str, str]:
    """(question to answer, what became of the history)."""
    if not history:
        return question, "none"
    complete = getattr(service.generator, "complete", None)
    if complete is None:
        return question, "ignored"
    transcript = "\n".join(f"{role}: {text}" for role, text in history)[-MAX_HISTORY_CHARS:]
    messages = [{"role": "system", "content": REWRITE_PROMPT},
                {"role": "user", "content": f"Conversation:\n{transcript}\n\nLast message: {question}"}]
    try:
        rewritten = await complete(messages, max_tokens=REWRITE_MAX_TOKENS)
    except GenerationError as exc:
        service.record_llm_failure(exc)
        return question, "ignored"
    service.account(rewritten.model, rewritten.prompt_tokens or 0, rewritten.completion_tokens or 0)
    text = rewritten.text.strip().strip('"').strip()
    if not text or len(text) > QUESTION_MAX_CHARS:
        return question, "ignored"
    return text, "rewritten"


def _extension(outcome: QueryOutcome, question: str, history: str, *, sources: bool,
               degraded: tuple[str, ...]) -> KuberagExtension:
    return KuberagExtension(
        sources=list(outcome.entry.sources) if sources else None, question=question, history=history,
        cache_hit=outcome.cache_level is not None, cache_level=outcome.cache_level,  # type: ignore[arg-type]
        degraded=bool(degraded), estimated_cost=outcome.usage.estimated_cost if outcome.usage else None,
        request_id=request_id_var.get() or "",
    )


def _usage(outcome: QueryOutcome) -> CompletionUsage:
    u = outcome.usage
    return CompletionUsage(u.prompt_tokens, u.completion_tokens, u.total_tokens) if u else CompletionUsage(0, 0, 0)


_encode = msgspec.json.encode


def _chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None, **extra: Any) -> bytes:
    body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
    return b"data: " + _encode(body) + b"\n\n"


class OpenAIController(Controller):
    path = "/v1"
    tags = ["openai"]
    request_max_body_size = 256 * 1024

    @get("/models", operation_id="ListModels", summary="OpenAI-compatible: the RagService as a model",
         responses=problems())
    async def models(self, request: Request) -> ModelList:
        name = request.app.state.settings.service.name
        return ModelList(object="list", data=[ModelCard(id=name, object="model",
                                                        created=int(request.app.state.started_at),
                                                        owned_by="kuberag")])

    @post("/chat/completions", operation_id="CreateChatCompletion", status_code=200,
          summary="OpenAI-compatible chat completion over the corpus (stream: true answers in SSE chunks)",
          opt={"route": "/v1/chat/completions"},
          responses=problems(400, 404, 413, 415, 503))
    async def chat_completions(self, request: Request, data: JSONBody[ChatCompletionRequest],
                               query_service: NamedDependency[QueryService]) -> Response[ChatCompletion]:
        started = time.perf_counter()
        name = request.app.state.settings.service.name
        if data.model != name:
            raise NotFoundException(f"model {data.model!r} does not exist: this service answers as {name!r} "
                                    "(GET /v1/models)", extra={"param": "model", "code": "model_not_found"})
        question, history = _question_and_history(data)
        query_service.slot.require()  # 503 now, not after a stream started
        lookup = store = True
        cc = request.headers.get("cache-control")
        if cc:
            directives = {d.strip().split("=", 1)[0].lower() for d in cc.split(",")}
            lookup = "no-cache" not in directives
            store = "no-store" not in directives
        question, history_use = await _self_contained(query_service, question, history)
        rid = request_id_var.get() or ""
        cid = f"chatcmpl-{rid}"
        created = int(time.time())
        client = client_key_of(request)
        if not data.stream:
            outcome = await query_service.answer(question, lookup=lookup, store=store, client=client)
            causes = degraded_causes(request, outcome.degraded)
            query_service.metrics.observe_query(outcome.cache_level, (time.perf_counter() - started) * 1000, causes)
            body = ChatCompletion(
                id=cid, object="chat.completion", created=created, model=name,
                choices=[Choice(0, AssistantMessage("assistant", outcome.entry.answer), "stop")],
                usage=_usage(outcome), kuberag=_extension(outcome, question, history_use, sources=True, degraded=causes),
            )
            return Response(body, headers=outcome.tokens.headers() if outcome.tokens else None)
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        metrics = query_service.metrics
        # The first event comes before the response starts: a refused token reservation is a 429.
        events = query_service.stream(question, lookup=lookup, store=store, client=client)
        first = await anext(events)

        async def replay():
            yield first
            async for event in events:
                yield event

        async def chunks() -> AsyncIterator[bytes]:
            token = request_id_var.set(rid)
            try:
                async for kind, payload in replay():
                    if kind == "sources":
                        yield _chunk(cid, created, name, {"role": "assistant", "content": ""},
                                     kuberag={"sources": msgspec.to_builtins(list(payload)), "question": question,
                                              "history": history_use})
                    elif kind == "delta":
                        yield _chunk(cid, created, name, {"content": payload})
                    else:
                        outcome: QueryOutcome = payload
                        causes = degraded_causes(request, outcome.degraded)
                        metrics.observe_query(outcome.cache_level, (time.perf_counter() - started) * 1000, causes)
                        ext = msgspec.to_builtins(_extension(outcome, question, history_use, sources=False,
                                                             degraded=causes))
                        yield _chunk(cid, created, name, {}, "stop", kuberag={k: v for k, v in ext.items()
                                                                             if k != "sources"})
                        if include_usage:
                            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                                    "choices": [], "usage": msgspec.to_builtins(_usage(outcome))}
                            yield b"data: " + _encode(body) + b"\n\n"
                yield b"data: [DONE]\n\n"
            finally:
                request_id_var.reset(token)

        return Stream(chunks(), media_type="text/event-stream",  # type: ignore[return-value]
                      headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def document_streaming(spec) -> None:
    """The OpenAPI 200 of the chat completion is JSON, or with ``stream: true`` Server-Sent Events of
    ``chat.completion.chunk`` objects ending with ``data: [DONE]`` (one route, two media types, which
    a Litestar response annotation cannot say)."""
    operation = spec.paths["/v1/chat/completions"].post
    ok = operation.responses["200"]
    ok.content["text/event-stream"] = OpenAPIMediaType(schema=Schema(
        type=OpenAPIType.STRING, description="with stream: true, `data: <chat.completion.chunk JSON>` events, "
                                             "then `data: [DONE]`"))


def openai_error(status: int, message: str, extra: Any) -> OpenAIErrorBody:
    """OpenAI's ``error`` object for a problem on a /v1 route (``param``/``code`` from the exception's extra)."""
    extra = extra if isinstance(extra, dict) else {}
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
    return OpenAIErrorBody(message, kind, extra.get("param"), extra.get("code"))


build_decoding_info(globals())  # before any thread decodes one (see the function's docstring)
