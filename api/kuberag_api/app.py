"""The application factory: wires settings, live config, caches, limiter, metrics and services."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from kuberag_api import __version__
from kuberag_api.cache.redis_tier import RedisCache, connect
from kuberag_api.cache.tiers import AnswerCache
from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.controllers import AdminController, HealthController, QueryController
from kuberag_api.hit_path import L1FrontDoor
from kuberag_api.identity import ClientKeyStore, IdentityResolver
from kuberag_api.live_config import LiveConfig, watch_files
from kuberag_api.log_format import request_id_var
from kuberag_api.metrics import Metrics
from kuberag_api.middleware import LIMITED_PATHS, IdentityMiddleware, RequestContext
from kuberag_api.openai_compat import OpenAIController, document_streaming, openai_error
from kuberag_api.openapi import complete_openapi, fix_options_allow
from kuberag_api.rag import DocumentError, Generator, RagStore, UnsupportedDocument, build_generator
from kuberag_api.rag.parse_worker import ParserProcess, ParserStopped
from kuberag_api.rag.weaviate_store import IndexMissing, StoreWriteError, VectorStoreUnavailable
from kuberag_api.rate_limit import RateLimiter, SharedRateLimiter
from kuberag_api.request_bodies import BodyError, KuberagRequest
from kuberag_api.schemas import QUESTION_PATTERN, OpenAIErrorBody, problem
from kuberag_api.services import DocumentService, EngineSlot, IndexNotReady, QueryService, TokenLimitExceeded
from kuberag_api.settings import Settings
from kuberag_api.shutdown import GracefulShutdown, bounded, stop_tasks
from kuberag_api.status import ReadinessProbe
from kuberag_api.token_limit import TokenLimiter

log = logging.getLogger("kuberag.app")
# Routes without their own limit (the query routes take 16 KiB, uploads 50 MiB).
DEFAULT_MAX_BODY = 1024 * 1024


# --- errors as RFC 9457 problem details ------------------------------------------------------
def _problem(status: int, title: str, detail: str, *, headers: dict[str, str] | None = None,
             **extra: Any) -> Response:
    return Response(problem(status, title, detail, request_id_var.get(), **extra), status_code=status,
                    headers=headers, media_type="application/problem+json")


def _http_problem(request: Request, exc: HTTPException) -> Response:
    title = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
    detail = str(exc.detail)
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        errors = [_field_error(str(e.get("key") or "body"), str(e.get("message", "")))
                  for e in exc.extra if isinstance(e, dict)]
        if errors and errors[0]["message"] == "'data'":  # Litestar's KeyError text for a missing body
            errors = [{"field": "body", "message": "the request body is empty: send a JSON object with a question"}]
        if errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            extra["errors"] = errors
    elif "multipart" in detail.lower():
        detail = f"{detail}: upload the document as multipart/form-data with a field named 'file'"
    elif (exc.status_code == 400 and not isinstance(exc, BodyError) and request.content_type[0] == "application/json"
          and "json" not in detail.lower()):
        detail = f"the request body is not valid JSON: {detail}"
    elif isinstance(exc.extra, dict):
        # param and code belong to OpenAI's error object (below), not to the problem itself.
        extra.update({k: v for k, v in exc.extra.items() if k not in ("param", "code")})
    if request.url.path.startswith("/v1/"):
        # OpenAI clients read the message from an "error" object.
        extra["error"] = openai_error(exc.status_code, detail, exc.extra)
    return _problem(exc.status_code, title, detail, headers=exc.headers, **extra)


_UNKNOWN_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")
_LEADING_FIELD = re.compile(r"^([a-z_]+) (must|is) ")


def _field_error(key: str, message: str) -> dict[str, str]:
    """Name the field: msgspec reports whole-body checks (``__post_init__``, unknown fields) as the
    body ("data"); the field is then in the message."""
    if key in ("data", "body"):
        m = _UNKNOWN_FIELD.search(message) or _LEADING_FIELD.match(message)
        if m:
            key = m.group(1)
        else:
            key = "body"
    return {"field": key, "message": message}


def _too_large(request: Request, exc: RequestEntityTooLarge) -> Response:
    limit = request.route_handler.resolve_request_max_body_size()
    return _problem(413, "Content Too Large",
                    f"the request body is larger than this route accepts ({limit} bytes)" if limit else str(exc.detail))


def _index_not_ready(_: Request, exc: IndexNotReady) -> Response:
    return _problem(503, "Service Unavailable", str(exc), headers={"Retry-After": "5"})


def _token_limited(request: Request, exc: TokenLimitExceeded) -> Response:
    d = exc.decision
    headers = d.headers()
    if d.retry_after == float("inf"):
        detail = (f"{exc}, more than the burst of {d.limit}: no wait lets it through (ask for a larger "
                  "tokenBurst, or a smaller max_tokens/context)")
    else:
        detail = f"{exc}; retry after {headers['Retry-After']} s"
    extra: dict[str, Any] = {"limit": d.limit, "policy": "tokens", "tokens_needed": exc.needed}
    if "Retry-After" in headers:
        extra["retry_after_seconds"] = int(headers["Retry-After"])
    if request.url.path.startswith("/v1/"):
        extra["error"] = OpenAIErrorBody(detail, "tokens", code="rate_limit_exceeded")
    return _problem(429, "Too Many Requests", detail, headers=headers, **extra)
def _store_unavailable(request: Request, exc: VectorStoreUnavailable) -> Response:
    request.app.state.metrics.errors.labels("vector_store").inc()
    return _problem(503, "Service Unavailable", f"the vector store is unavailable: {exc}",
                    headers={"Retry-After": "2"})


def _index_missing(_: Request, exc: IndexMissing) -> Response:
    return _problem(503, "Service Unavailable", str(exc), headers={"Retry-After": "10"})


def _store_refused(request: Request, exc: StoreWriteError) -> Response:
    request.app.state.metrics.errors.labels("vector_store").inc()
    return _problem(502, "Bad Gateway", str(exc))


def _unsupported(_: Request, exc: UnsupportedDocument) -> Response:
    return _problem(415, "Unsupported Media Type", str(exc), errors=[{"field": "file", "message": str(exc)}])


def _bad_document(_: Request, exc: DocumentError) -> Response:
    return _problem(422, "Unprocessable Content", str(exc), errors=[{"field": "file", "message": str(exc)}])


def _parser_stopped(_: Request, exc: ParserStopped) -> Response:
    return _problem(503, "Service Unavailable", f"the document was not indexed: {exc}; send it again",
                    headers={"Retry-After": "5"})


def _internal_error(request: Request, exc: Exception) -> Response:
    # Logged with its trace; the client gets a problem without internals.
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    request.app.state.metrics.errors.labels("unhandled").inc()
    return _problem(HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error",
                    "the server failed to handle this request; it has been logged under this request_id")


# --- the application ---------------------------------------------------------------------------
def create_app(
    settings: Settings | None = None,
    *,
    engine: RagStore | None = None,
    generator: Generator | None = None,
    embedder=None,
    live: LiveConfig | None = None,
    client_keys: ClientKeyStore | None = None,
    serve_metrics: bool = True,
    background_interval: float = 2.0,
) -> Litestar:
    """Build the app. ``engine``/``generator``/``embedder`` override the configured ones (tests,
    the bench); without ``engine`` the index is opened in the background at start."""
    settings = settings or Settings.from_env()
    live = live or LiveConfig.from_file(settings.storage.config_path)
    keys = client_keys or ClientKeyStore.from_file(settings.storage.client_keys_path, settings.admin.api_key)
    metrics = Metrics()
    metrics.set_config_hash(live.hash)
    live.subscribe(lambda _o, _n: (metrics.config_reloads.inc(), metrics.set_config_hash(live.hash)))

    rs = settings.redis
    prefix = f"kuberag:{settings.service.namespace}:{settings.service.name}:"
    l2 = None
    if rs.url:
        l2 = RedisCache(
            connect(rs.url, rs.socket_timeout), prefix=prefix, timeout=rs.socket_timeout,
            breaker=CircuitBreaker(rs.breaker_failures, rs.breaker_reset_seconds),
            on_error=lambda op, kind: metrics.cache_errors.labels("l2", op).inc(),
        )
    shared = None
    if rs.limiter_url:
        shared = SharedRateLimiter(
            connect(rs.limiter_url, rs.socket_timeout), prefix=f"kuberag:rl:{settings.service.namespace}:"
            f"{settings.service.name}:", timeout=rs.socket_timeout,
            breaker=CircuitBreaker(rs.breaker_failures, rs.breaker_reset_seconds),
        )
    cache = AnswerCache(live, l2)
    limiter = RateLimiter(live, shared)
    resolver = IdentityResolver(keys, live)
    metrics.client_keys.set(len(keys))
    # CPU work (embedding, search, ingestion) runs here, off the event loop: cache hits never wait
    # behind a cold query. Two threads = the two cores; numpy/onnxruntime release the GIL.
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="kuberag-cpu")
    # Ingestion (chunking, embedding uploads) has its own thread: it never takes a query's thread.
    ingest_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kuberag-ingest")
    parser = ParserProcess()
    shutdown = GracefulShutdown(settings.server.shutdown_seconds, on_expire=parser.stop)
    slot = EngineSlot(engine)
    cfg = live.config
    if generator is None:
        generator = build_generator(cfg.providers, settings.providers.llm_api_key,
                                    on_retry=lambda reason: metrics.llm_retries.labels(reason).inc())
    query_service = QueryService(slot, generator, cache, metrics, executor, TokenLimiter(live, shared))
    document_service = DocumentService(slot, metrics, ingest_executor, parser)
    readiness = ReadinessProbe(slot, cache, limiter, live, metrics, keys, generator)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        shutdown.bind(asyncio.get_running_loop())
        tasks: list[asyncio.Task] = []
        if serve_metrics and settings.server.metrics_port is not None:
            port = metrics.serve(settings.server.host, settings.server.metrics_port)
            log.info("prometheus metrics served", extra={"port": port})
        if slot.engine is None and cfg.providers.vector_store is not None:
            if cfg.corpus.path:
                log.info("corpus.path is indexed into the shared store by the indexing Job "
                         "(kuberag ingest --sync), not by this replica")

            def open_shared() -> RagStore:
                from kuberag_api.rag.weaviate_store import ServiceRef, WeaviateStore

                store = WeaviateStore.from_config(
                    cfg, ServiceRef(settings.service.namespace, settings.service.name),
                    api_key=settings.providers.vector_store_api_key,
                    embeddings_api_key=settings.providers.embeddings_api_key, embedder=embedder)
                cache.shared = store
                return store

            tasks.append(asyncio.create_task(slot.open_shared(executor, open_shared)))
        elif slot.engine is None:
            embedder_ = embedder
            if embedder_ is None:
                from kuberag_api.rag import build_embedder

                # Loaded in the executor with the index (the local model takes seconds to build).
                def embedder_():
                    return build_embedder(cfg.providers, settings.providers.embeddings_api_key,
                                          cfg.retrieval.embedding_model)
            tasks.append(asyncio.create_task(slot.open(
                executor, settings.storage.data_dir, cfg.retrieval, cfg.corpus.path, embedder_)))
        await cache.start()
        watched = [(live, metrics.config_reload_errors.inc)] if live.path is not None else []
        if keys.path is not None:
            watched.append((keys, metrics.client_keys_reload_errors.inc))
        if watched:
            tasks.append(asyncio.create_task(watch_files(settings.storage.config_poll_seconds, watched)))
        tasks.append(asyncio.create_task(readiness.run(background_interval)))
        try:
            yield
        finally:
            # Every step is bounded: a shutdown that waits forever keeps a terminating pod (or a
            # test's lifespan) hanging until it is killed.
            await stop_tasks(tasks)
            await bounded("flushing the L2 writes", cache.flush_background)
            if l2 is not None:
                await bounded("closing the L2 Redis client", l2.close)
            if shared is not None:
                await bounded("closing the shared limiter's Redis client", shared.close)
            metrics.stop()
            parser.stop()
            if slot.engine is not None and cfg.providers.vector_store is not None:
                slot.engine.close()
            executor.shutdown(wait=False, cancel_futures=True)
            ingest_executor.shutdown(wait=False, cancel_futures=True)

    state = State({
        "settings": settings, "live": live, "metrics": metrics, "cache": cache, "limiter": limiter,
        "slot": slot, "query_service": query_service, "document_service": document_service,
        "readiness": readiness, "executor": executor, "client_keys": keys, "started_at": time.time(),
        "shutdown": shutdown, "ingest_executor": ingest_executor,
    })

    def _from_state(name: str) -> Provide:
        def provider(state: State) -> Any:
            return state[name]

        return Provide(provider, use_cache=True, sync_to_thread=False)

    gate = IdentityMiddleware(resolver, limiter, metrics)
    app = Litestar(
        route_handlers=[HealthController, QueryController, OpenAIController, AdminController],
        state=state,
        dependencies={
            "query_service": _from_state("query_service"),
            "document_service": _from_state("document_service"),
            "metrics": _from_state("metrics"),
            "readiness": _from_state("readiness"),
        },
        middleware=[gate],
        # The plugin renders ProblemDetailsException; other HTTP errors get our handler, which
        # can see the request (to name the field, the limit, and add the request id).
        plugins=[ProblemDetailsPlugin()],
        exception_handlers={
            HTTPException: _http_problem,
            IndexNotReady: _index_not_ready,
            TokenLimitExceeded: _token_limited,
            VectorStoreUnavailable: _store_unavailable,
            IndexMissing: _index_missing,
            StoreWriteError: _store_refused,
            RequestEntityTooLarge: _too_large,
            UnsupportedDocument: _unsupported,
            DocumentError: _bad_document,
            ParserStopped: _parser_stopped,
            Exception: _internal_error,
        },
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="kuberag", version=__version__,
            description="Questions over your documents: cached, rate limited, monitored.",
            components=Components(security_schemes={
                "adminApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header",
                                              description="KUBERAG_ADMIN_API_KEY"),
                "clientApiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header",
                                               description="A client key from the client-keys file (optional: "
                                                           "without one the caller is limited by IP address)"),
                "clientBearer": SecurityScheme(type="http", scheme="bearer",
                                               description="The same client key as Authorization: Bearer <key>"),
            }),
        ),
        request_max_body_size=DEFAULT_MAX_BODY,
        request_class=KuberagRequest,
        debug=False,
        logging_config=None,  # JSON logs are configured by the CLI (log_format.configure_logging)
    )
    complete_openapi(app, limited_paths=LIMITED_PATHS, closed_schemas=("QueryRequest",),
                     patterns={("QueryRequest", "question"): QUESTION_PATTERN})
    document_streaming(app.openapi_schema)
    fix_options_allow(app)
    # Around routing, so 404/405 answers get the request id and are counted (see RequestContext).
    app.asgi_handler = RequestContext(app.asgi_handler, metrics, settings.server.access_log, shutdown,
                                      L1FrontDoor(query_service, gate))
    return app

