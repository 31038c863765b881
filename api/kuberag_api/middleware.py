"""ASGI middlewares: request context (id, metrics, access log), the caller's identity and its rate limit."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from kuberag_api.identity import STATE_KEY as IDENTITY_STATE_KEY
from kuberag_api.identity import ClientIdentity, IdentityResolver, UnknownClientKey, identity_of
from kuberag_api.log_format import request_id_var
from kuberag_api.metrics import Metrics
from kuberag_api.rate_limit import RateLimiter, caller_bucket, user_id_of
from kuberag_api.schemas import OpenAIErrorBody, encode_problem, problem
from kuberag_api.shutdown import GracefulShutdown

access_log = logging.getLogger("kuberag.access")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
QUERY_PATHS = frozenset({"/query", "/query/stream", "/v1/chat/completions"})


def degraded_causes(request: Request, causes: tuple[str, ...]) -> tuple[str, ...]:
    """An answer's degraded causes, plus "limiter" when the shared limiter failed and this request was limited per replica."""
    return causes + ("limiter",) * bool(request.scope.get("state", {}).get("limiter_degraded"))


def client_key_of(request: Request) -> str:
    """The limiter key of the request's verified caller (its token budget is charged there too)."""
    identity = identity_of(request) or ClientIdentity(ip=request.client.host if request.client else "unknown")
    return caller_bucket(identity, request.app.state.live.config.rate_limit).key
# Probes, metrics and the OpenAPI document are never limited.
UNLIMITED_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics"})
# Routes behind identity and limits (for the OpenAPI document; /documents/{id} included).
LIMITED_PATHS = frozenset({"/query", "/query/stream", "/v1/chat/completions", "/v1/models", "/cache", "/documents"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def send_problem(send: Send, status: int, title: str, detail: str, headers: dict[str, str] | None = None,
                       *, scope: Scope | None = None, **extra: Any) -> None:
    """An RFC 9457 problem sent straight from a middleware. (Raising would unwind through the
    request-context middleware before Litestar renders it, losing the status and request id.)"""
    if scope is not None and scope["path"].startswith("/v1/"):
        # OpenAI clients read the message from an "error" object.
        extra["error"] = OpenAIErrorBody(detail, {401: "authentication_error", 429: "rate_limit_error"}.get(
            status, "invalid_request_error"), code="rate_limit_exceeded" if status == 429 else None)
    payload = encode_problem(problem(status, title, detail, request_id_var.get(), **extra))
    raw_headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _route_label(scope: Scope) -> str:
    handler = scope.get("route_handler")
    if handler is None:
        return "unmatched"
    return getattr(handler, "opt", {}).get("route") or next(iter(handler.paths), "unmatched")


class RequestContext:
    """The outermost ASGI layer: the request id (``X-Request-ID``, kept when it is safe, else new),
    the request metrics and the access log, for every HTTP request, including the ones no route
    matches (404, 405). (Litestar's middleware runs only after routing, for matched routes, so
    this wraps the app's own ASGI handler instead: ``app.asgi_handler``.)"""

    SLOW_SECONDS = 0.25

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log_mode: str, shutdown: GracefulShutdown,
                 front_door: Any = None) -> None:
        """``front_door``: answers ``POST /query`` from L1 before routing (``hit_path.L1FrontDoor``)."""
        self.app = app
        self.metrics = metrics
        self.access_log_mode = access_log_mode
        self.shutdown = shutdown
        self.front_door = front_door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given if given is not None and _REQUEST_ID_OK.match(given) else os.urandom(8).hex()
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        rid_header = (b"x-request-id", rid.encode())
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        shutdown = self.shutdown
        task = asyncio.current_task()
        route = None
        try:
            if shutdown.draining and scope["path"] != "/healthz":
                await send_problem(send_with_id, 503, "Service Unavailable",
                                   "the server is shutting down: send the request again (another replica answers)",
                                   {"Retry-After": "1", "Connection": "close"}, scope=scope)
                return
            shutdown.track(task)
            try:
                if self.front_door is not None and scope["path"] == "/query" and scope["method"] == "POST":
                    passed_on = await self.front_door(scope, receive, send_with_id)
                    if passed_on is None:
                        route = "/query"
                        return
                    receive = passed_on
                await self.app(scope, receive, send_with_id)
            except asyncio.CancelledError:
                if not shutdown.expired:
                    raise
                # Cancelled at the shutdown bound: a clean 503, not uvicorn's 500.
                task.uncancel()
                if not started_response:
                    await send_problem(send_with_id, 503, "Service Unavailable",
                                       f"the server shut down before this request finished (bound "
                                       f"{shutdown.seconds:g} s): send it again",
                                       {"Retry-After": "1", "Connection": "close"}, scope=scope)
            finally:
                shutdown.untrack(task)
        finally:
            elapsed = time.perf_counter() - started
            route = route or _route_label(scope)
            self.metrics.observe_request(route, scope["method"], status, elapsed)
            mode = self.access_log_mode
            if mode == "all" or (mode == "notable" and (status >= 400 or elapsed >= self.SLOW_SECONDS)):
                access_log.info(
                    "request",
                    extra={"method": scope["method"], "path": scope["path"], "status": status,
                           "duration_ms": round(elapsed * 1000, 3)},
                )
            request_id_var.reset(token)


class IdentityMiddleware(ASGIMiddleware):
    """Resolves the caller's ``ClientIdentity`` (401 for a key the server does not know), leaves it
    for the handlers (``identity_of``), then applies the caller's rate limit."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, resolver: IdentityResolver, limiter: RateLimiter, metrics: Metrics) -> None:
        self.resolver = resolver
        self.limiter = limiter
        self.metrics = metrics

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:  # type: ignore[override]
        path = scope["path"]
        return path in UNLIMITED_PATHS or path.startswith("/schema")

    async def identify(self, scope: Scope, send: Send) -> ClientIdentity | None:
        """The caller's identity, left in the scope state for the handlers; None when it was refused
        (a 401 was sent)."""
        try:
            identity = self.resolver.resolve(scope)
        except UnknownClientKey:
            handler = scope.get("route_handler")
            if handler is not None and handler.opt.get("admin"):
                # The admin guard judges admin keys (and says whether admin routes are enabled);
                # meanwhile the caller is limited by its IP, so guessing costs its budget.
                identity = ClientIdentity(ip=self.resolver.client_ip_of(scope))
            else:
                self.metrics.errors.labels("unknown_client_key").inc()
                await send_problem(send, 401, "Unauthorized",
                                   "unknown API key: the key in X-API-Key (or Authorization: Bearer) is not one of "
                                   "this service's client keys; send a valid key, or none to be limited by IP address",
                                   {"WWW-Authenticate": 'Bearer realm="kuberag"'}, scope=scope)
                return None
        scope.setdefault("state", {})[IDENTITY_STATE_KEY] = identity
        return identity

    async def limit(self, scope: Scope, send: Send, identity: ClientIdentity,
                    user_id: str | None) -> list[tuple[bytes, bytes]] | None:
        """The caller's rate limit: the headers the response carries (none when limiting is off),
        or None when the request was refused (a 429 was sent)."""
        decision = await self.limiter.check(identity, user_id)
        if decision is None:
            return []
        if decision.degraded:
            self.metrics.limiter_fallbacks.inc()
            scope["state"]["limiter_degraded"] = True
        if not decision.allowed:
            self.metrics.observe_rate_limited(decision.scope)
            headers = decision.headers()
            await send_problem(
                send, 429, "Too Many Requests",
                f"rate limit exceeded for {decision.subject}: {decision.requests_per_minute} requests per minute "
                f"with a burst of {decision.limit}; retry after {headers['Retry-After']} s",
                headers, scope=scope, limit=decision.limit, retry_after_seconds=int(headers["Retry-After"]),
            )
            return None
        return [(k.lower().encode(), v.encode()) for k, v in decision.headers().items()]

    def wants_user_id(self, scope: Scope) -> bool:
        """Whether this request's limit needs the body's user_id (a ``perUser`` bucket)."""
        cfg = self.limiter.live.config.rate_limit
        return cfg.enabled and cfg.per_user is not None and scope["method"] == "POST" and scope["path"] in QUERY_PATHS

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        identity = await self.identify(scope, send)
        if identity is None:
            return
        if not self.limiter.live.config.rate_limit.enabled:
            await next_app(scope, receive, send)
            return
        user_id = None
        if self.wants_user_id(scope):
            # Litestar keeps the body in the connection state: the handler reads it again from there.
            request: Request = Request(scope, receive)
            try:
                body = await request.body()
            except RequestEntityTooLarge:
                limit = request.route_handler.resolve_request_max_body_size()
                await send_problem(send, 413, "Content Too Large",
                                   f"the request body is larger than this route accepts ({limit} bytes)")
                return
            user_id = user_id_of(body)
        extra = await self.limit(scope, send, identity, user_id)
        if extra is None:
            return
        if not extra:
            await next_app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await next_app(scope, receive, send_with_limits)
