"""HTTP controllers: thin, the services do the work."""

from __future__ import annotations

import hmac
import time
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import (
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, MultipartBody
from litestar.response import ServerSentEvent, ServerSentEventMessage

from kuberag_api import __version__
from kuberag_api.cache.entry import CachedAnswer
from kuberag_api.identity import identity_of
from kuberag_api.log_format import request_id_var
from kuberag_api.metrics import Metrics
from kuberag_api.middleware import client_key_of, degraded_causes
from kuberag_api.openapi import problems
from kuberag_api.rag.store import normalise_upload_name
from kuberag_api.request_bodies import parse_multipart_upload
from kuberag_api.schemas import (
    CacheCleared,
    Deleted,
    DocumentList,
    Health,
    IngestOut,
    Liveness,
    MetricsSummary,
    QueryRequest,
    QueryResponse,
    Readiness,
    Usage,
)
from kuberag_api.services import DocumentService, QueryOutcome, QueryService
from kuberag_api.status import ReadinessProbe

# 2,000 characters of question and 200 of user_id, even when every one is a \uXXXX\uXXXX escape.
QUERY_MAX_BODY = 64 * 1024
UPLOAD_MAX_BODY = 50 * 1024 * 1024
QUERY_ERRORS = (400, 401, 413, 415, 429, 503)
ENDPOINTS = ["/", "/healthz", "/readyz", "/query", "/query/stream", "/v1/chat/completions", "/v1/models", "/metrics",
             "/cache", "/documents", "/schema"]


_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """UTC now, ISO 8601 with milliseconds (``2026-11-28T01:02:03.456Z``); the formatted second is
    reused within the second (``datetime.isoformat`` per answer cost 8% of an L1 hit)."""
    global _second
    now = time.time()
    second = int(now)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1000):03d}Z"


def is_admin(connection: ASGIConnection) -> bool:
    """The request carries the admin key (constant-time compare); False when none is configured."""
    expected: str | None = connection.app.state.settings.admin.api_key
    given = connection.headers.get("x-api-key")
    return bool(expected and given and hmac.compare_digest(given.encode(), expected.encode()))


def require_admin(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard of admin routes: X-API-Key must equal KUBERAG_ADMIN_API_KEY (constant-time compare)."""
    expected: str | None = connection.app.state.settings.admin.api_key
    if not expected:
        raise PermissionDeniedException(
            "admin routes are disabled: the server has no admin key (set KUBERAG_ADMIN_API_KEY)"
        )
    given = connection.headers.get("x-api-key")
    if not given:
        raise NotAuthorizedException("missing X-API-Key header: this route needs the admin API key")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        identity = identity_of(connection)
        if identity is not None and identity.verified:
            raise PermissionDeniedException(
                f"{identity.label} is not an administrator: this route needs the admin API key")
        raise NotAuthorizedException("invalid X-API-Key: it does not match the admin API key")


def cache_flags_of(cache_control: str) -> set[str]:
    return {d.strip().split("=", 1)[0].lower() for d in cache_control.split(",")}


def _cache_flags(request: Request, data: QueryRequest) -> tuple[bool, bool]:
    lookup = store = data.use_cache
    cc = request.headers.get("cache-control")
    if cc:
        directives = cache_flags_of(cc)
        if "no-cache" in directives:
            lookup = False
        if "no-store" in directives:
            store = False
    return lookup, store


def query_response(outcome: QueryOutcome, started: float, request_id: str, degraded: tuple[str, ...]) -> QueryResponse:
    """The body of a query's answer (``degraded``: the causes, the limiter's included)."""
    entry: CachedAnswer = outcome.entry
    return QueryResponse(
        answer=entry.answer,
        sources=list(entry.sources),
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        cache_hit=outcome.cache_level is not None,
        timestamp=_now(),
        cache_level=outcome.cache_level,  # type: ignore[arg-type]
        request_id=request_id,
        degraded=bool(degraded),
        model=entry.model,
        similarity=round(outcome.similarity, 4) if outcome.similarity is not None else None,
        usage=_usage(outcome),
    )


def _response(outcome: QueryOutcome, started: float, request: Request) -> QueryResponse:
    return query_response(outcome, started, request_id_var.get() or "", degraded_causes(request, outcome.degraded))


def _usage(outcome: QueryOutcome) -> Usage | None:
    u = outcome.usage
    if u is None:
        return None
    return Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens, u.estimated_cost)


class HealthController(Controller):
    tags = ["health"]

    @get("/", operation_id="GetHealth", summary="Service health (the prototype's contract)", responses=problems())
    async def root(self) -> Health:
        return Health(status="healthy", version=__version__, timestamp=_now(), endpoints=ENDPOINTS)

    @get("/healthz", operation_id="GetLiveness", summary="Liveness and startup probe", responses=problems())
    async def healthz(self) -> Liveness:
        return Liveness(status="ok")

    @get("/readyz", operation_id="GetReadiness",
         summary="Readiness: 200 when the index is loaded, else 503; every check with the admin key",
         responses={**problems(), 503: ResponseSpec(data_container=Readiness, description="not ready, with the reasons",
                                                    generate_examples=False)})
    async def readyz(self, request: Request, readiness: NamedDependency[ReadinessProbe]) -> Response[Readiness]:
        result = readiness.check(detail=is_admin(request))
        return Response(result, status_code=200 if result.status == "ready" else 503)

    @get("/metrics", operation_id="GetMetricsSummary", summary="JSON summary (Prometheus is on the metrics port)",
         responses=problems())
    async def metrics(self, metrics: NamedDependency[Metrics]) -> MetricsSummary:
        return msgspec.convert(metrics.json_summary(), MetricsSummary)


class QueryController(Controller):
    tags = ["query"]
    request_max_body_size = QUERY_MAX_BODY
    # A client key is optional: without one the caller is limited by its IP address.
    security = [{}, {"clientApiKey": []}, {"clientBearer": []}]

    @post("/query", operation_id="Query", status_code=200, summary="Answer a question over the corpus",
          opt={"route": "/query"}, responses=problems(*QUERY_ERRORS))
    async def query(self, request: Request, data: JSONBody[QueryRequest],
                    query_service: NamedDependency[QueryService]) -> QueryResponse:
        # One dependency only: Litestar resolves two or more in an anyio task group, which costs
        # more than the whole L1 hit (measured); the service carries the metrics.
        started = time.perf_counter()
        lookup, store = _cache_flags(request, data)
        outcome = await query_service.answer(data.question, lookup=lookup, store=store, client=client_key_of(request))
        response = _response(outcome, started, request)
        query_service.metrics.observe_query(outcome.cache_level, response.latency_ms,
                                            degraded_causes(request, outcome.degraded))
        if outcome.tokens is not None:
            return Response(response, headers=outcome.tokens.headers())  # type: ignore[return-value]
        return response

    @post("/query/stream", operation_id="QueryStream", status_code=200, media_type="text/event-stream",
          summary="Answer as Server-Sent Events: sources, delta..., done", opt={"route": "/query/stream"},
          responses=problems(*QUERY_ERRORS))
    async def query_stream(self, request: Request, data: JSONBody[QueryRequest],
                           query_service: NamedDependency[QueryService]) -> ServerSentEvent:
        metrics = query_service.metrics
        started = time.perf_counter()
        lookup, store = _cache_flags(request, data)
        query_service.slot.require()  # 503 now, not after the stream started
        rid = request_id_var.get()
        # The first event comes before the response starts: a refused token reservation is a 429.
        stream = query_service.stream(data.question, lookup=lookup, store=store, client=client_key_of(request))
        first = await anext(stream)

        async def replay():
            yield first
            async for event in stream:
                yield event

        async def events():
            token = request_id_var.set(rid)
            try:
                async for kind, payload in replay():
                    if kind == "sources":
                        body = list(payload)
                        yield ServerSentEventMessage(event="sources", data=msgspec.json.encode(body).decode())
                    elif kind == "delta":
                        yield ServerSentEventMessage(event="delta",
                                                     data=msgspec.json.encode({"text": payload}).decode())
                    else:
                        response = _response(payload, started, request)
                        metrics.observe_query(payload.cache_level, response.latency_ms,
                                              degraded_causes(request, payload.degraded))
                        yield ServerSentEventMessage(event="done", data=msgspec.json.encode(response).decode())
            finally:
                request_id_var.reset(token)

        return ServerSentEvent(events())


class AdminController(Controller):
    tags = ["admin"]
    guards = [require_admin]
    opt = {"admin": True}
    security = [{"adminApiKey": []}]

    @delete("/cache", operation_id="ClearCache", status_code=200,
            summary="Clear every cache level (bumps the cache epoch, shared by every replica with a shared store)",
            responses=problems(401, 403, 429, 503))
    async def clear_cache(self, query_service: NamedDependency[QueryService]) -> CacheCleared:
        epoch, cleared = await query_service.cache.clear()
        return CacheCleared(epoch=epoch, cleared=cleared)

    @post("/documents", operation_id="IngestDocument", status_code=201, request_max_body_size=UPLOAD_MAX_BODY,
          summary="Upload one document (txt, md, html or pdf) as multipart field 'file'",
          before_request=parse_multipart_upload,
          responses={**problems(400, 401, 403, 413, 415, 422, 429, 502, 503),
                     200: ResponseSpec(IngestOut, description="Already indexed with these bytes (unchanged)",
                                       generate_examples=False)})
    async def ingest(
        self,
        data: MultipartBody[dict[str, Any]],
        document_service: NamedDependency[DocumentService],
    ) -> Response[IngestOut]:
        upload = data.get("file")
        if not isinstance(upload, UploadFile):
            raise ValidationException(
                "multipart field 'file' is required and must be a file with a name: upload it as file=@path",
                extra=[{"key": "file", "message": "required: a multipart file part named file, with a file name",
                        "source": "body"}],
            )
        # The stored source is the file's base name: a path in the name (../../etc/passwd.txt) is dropped.
        source = normalise_upload_name(upload.filename or "")
        if not source or source in (".", ".."):
            message = f"the file name {upload.filename!r} has no name part: send a file name such as notes.md"
            raise ValidationException(message, extra=[{"key": "file", "message": message, "source": "body"}])
        content = await upload.read()
        result = await document_service.ingest(source, content, upload.content_type or None)
        engine = document_service.slot.require()
        out = IngestOut(result.doc_id, result.source, result.status, result.chunks, result.reason,
                        engine.corpus_version)
        return Response(out, status_code=201 if result.status in ("added", "replaced") else 200)

    @get("/documents", operation_id="ListDocuments", summary="Documents in the index",
         responses=problems(401, 403, 429, 503))
    async def list_documents(self, document_service: NamedDependency[DocumentService]) -> DocumentList:
        engine = document_service.slot.require()
        docs = engine.documents()
        return DocumentList(documents=docs, count=len(docs), chunks=engine.chunk_count,
                            corpus_version=engine.corpus_version)

    @delete("/documents/{doc_id:str}", operation_id="DeleteDocument", status_code=200,
            summary="Remove a document and its chunks", responses=problems(401, 403, 404, 429, 503))
    async def delete_document(self, doc_id: FromPath[str], document_service: NamedDependency[DocumentService]) -> Deleted:
        deleted = await document_service.delete(doc_id)
        if not deleted:
            raise NotFoundException(f"no document with id {doc_id!r} (GET /documents lists them)")
        return Deleted(doc_id=doc_id, deleted=True, corpus_version=document_service.slot.require().corpus_version)
