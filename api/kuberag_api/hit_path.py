"""``POST /query`` answered from L1 in front of Litestar's router.

An L1 hit is a dictionary lookup; in Litestar it also paid for routing, two exception layers, the
middleware stack, a ``Request``, header parsing and the handler machinery: about half the time
of a hit (profiled). Litestar has no hook before routing, so the outermost layer
(``RequestContext``) asks this front door first. It answers only the plain case: a JSON body of
declared length that decodes cleanly, a question L1 holds, a caller that identity and the rate
limit admit (the same ``IdentityMiddleware`` steps, so a 401 or 429 is the same problem). Anything
else (no or too large Content-Length, another media type, ``Cache-Control: no-cache``,
``use_cache: false``, a body Litestar would refuse, a miss) goes on to Litestar with the body
replayed, and gets every rule of the full path.
"""

from __future__ import annotations

import time

import msgspec
from litestar.types import Message, Receive, Scope, Send

from kuberag_api.controllers import QUERY_MAX_BODY, cache_flags_of, query_response
from kuberag_api.log_format import request_id_var
from kuberag_api.middleware import IdentityMiddleware
from kuberag_api.rate_limit import user_id_of
from kuberag_api.request_bodies import is_json_media_type
from kuberag_api.schemas import QueryRequest
from kuberag_api.services import QueryOutcome, QueryService

_decoder = msgspec.json.Decoder(QueryRequest)
_encoder = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")


def _replay(body: bytes, last: Message, receive: Receive) -> Receive:
    """``receive`` that gives the body read here first (one message), then ``last`` if it was not
    part of the body (a disconnect), then whatever else ``receive`` brings."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": last["type"] != "http.request"}]
    if last["type"] != "http.request":
        pending.append(last)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


class L1FrontDoor:
    def __init__(self, service: QueryService, gate: IdentityMiddleware) -> None:
        self.service = service
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """None when this request was answered here (an L1 hit, or the caller's 401/429); else the
        ``receive`` to hand to Litestar (the body read here is replayed)."""
        started = time.perf_counter()
        length = content_type = cache_control = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"cache-control":
                cache_control = value
            elif name == b"transfer-encoding":
                return receive
        if length is None or not length.isdigit() or not 0 < int(length) <= QUERY_MAX_BODY:
            return receive
        if content_type is not None and not is_json_media_type(content_type.decode("latin-1")):
            return receive
        if cache_control is not None and "no-cache" in cache_flags_of(cache_control.decode("latin-1")):
            return receive
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body", False):
            messages.append(await receive())
        last = messages[-1]
        body = messages[0].get("body", b"") if len(messages) == 1 else b"".join(
            m.get("body", b"") for m in messages if m["type"] == "http.request")
        replay = _replay(body, last, receive)
        if last["type"] != "http.request":
            return replay  # the client went away: Litestar sees the disconnect
        if len(body) != int(length):
            return replay
        try:
            data: QueryRequest = _decoder.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
            return replay  # Litestar's path names what is wrong (400)
        if not data.use_cache:
            return replay
        service = self.service
        gate = self.gate
        try:
            identity = gate.resolver.resolve(scope)
        except Exception:  # an unknown key (or anything odd): the full path answers it
            return replay
        entry = service.l1_entry(data.question)
        if entry is None:
            return replay
        scope.setdefault("state", {})
        extra: list[tuple[bytes, bytes]] | None = []
        if gate.limiter.live.config.rate_limit.enabled:
            user_id = user_id_of(body) if gate.wants_user_id(scope) else None
            extra = await gate.limit(scope, send, identity, user_id)
            if extra is None:
                return None  # refused: the 429 was sent
        degraded = service.degraded()
        if scope["state"].get("limiter_degraded"):
            degraded += ("limiter",)
        response = query_response(QueryOutcome(entry, "l1", None, degraded, service.no_usage()), started,
                                  request_id_var.get() or "", degraded)
        service.metrics.observe_query("l1", response.latency_ms, degraded)
        payload = _encoder.encode(response)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON, (b"content-length", b"%d" % len(payload)), *extra]})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        return None
