"""Graceful shutdown, bounded: what happens between SIGTERM and exit.

1. At the signal (``begin``, called from the server's signal handler): every *new* request is
   answered 503 ``shutting down`` with ``Retry-After`` and ``Connection: close`` (``/readyz``
   included, so readiness turns off; ``/healthz`` stays 200 so the kubelet does not restart a pod
   that is draining). uvicorn stops accepting connections and closes idle keep-alive ones.
2. Requests in flight go on for up to ``seconds`` (``KUBERAG_SHUTDOWN_SECONDS``, 20 by default).
3. At the bound (``_expire``) the parser process is killed (an upload being parsed ends as a 503
   ``send it again``) and every request still running is cancelled and answered 503 by the
   request context, unless its response already started (a stream is then cut). Nothing ends as a
   500: uvicorn's own timeout, which would cancel into 500s, is set 5 s later than this bound.
4. Then the app's shutdown runs (caches flushed, Redis closed) and the process exits without
   waiting for an ingestion thread still embedding (its upload was already answered 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("kuberag.shutdown")


class GracefulShutdown:
    def __init__(self, seconds: float, on_expire: Callable[[], None] | None = None) -> None:
        self.seconds = seconds
        self._on_expire = on_expire
        self.started_at: float | None = None
        self.expired = False
        self._inflight: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the requests run on (set at app start)."""
        self._loop = loop

    def track(self, task: asyncio.Task) -> None:
        self._inflight.add(task)

    def untrack(self, task: asyncio.Task) -> None:
        self._inflight.discard(task)

    def begin(self) -> None:
        """Start draining (idempotent; safe to call from a signal handler)."""
        if self.started_at is not None:
            return
        self.started_at = time.monotonic()
        log.info("shutting down: new requests get 503, %d in flight get up to %g s",
                 len(self._inflight), self.seconds)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.call_later, self.seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._inflight:
            log.warning("shutdown bound of %g s reached: stopping %d request(s)", self.seconds, len(self._inflight))
        if self._on_expire is not None:
            self._on_expire()
        for task in list(self._inflight):
            task.cancel()
