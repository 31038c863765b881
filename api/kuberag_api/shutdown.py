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
4. Then the app's shutdown runs (background tasks stopped, caches flushed, Redis closed), each
   step bounded (``stop_tasks``, ``bounded``), and the process exits without waiting for an
   ingestion thread still embedding (its upload was already answered 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

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


# Bounds of the app's own shutdown steps (after the drain): the process must exit even when a
# dependency hangs or a task ignores its cancellation.
TASK_STOP_SECONDS = 2.0
STEP_SECONDS = 1.0


async def stop_tasks(tasks: Iterable[asyncio.Task], seconds: float = TASK_STOP_SECONDS) -> list[asyncio.Task]:
    """Cancel ``tasks`` and wait for them, at most ``seconds``; returns the ones still running.

    A task is cancelled again until it ends: one cancellation is not enough on Python 3.11, whose
    ``asyncio.wait_for`` (redis-py sends every command through it) swallows a cancellation that
    arrives as the awaited operation completes (CPython gh-86296, fixed in 3.12); a probe loop then
    went on forever and the lifespan's ``await task`` never returned."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pending = {t for t in tasks if not t.done()}
    while pending:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(remaining, 0.05))
    for task in pending:
        log.warning("shutdown: task %s did not stop within %g s; leaving it", task.get_name(), seconds)
    return list(pending)


async def bounded(what: str, step: Callable[[], Awaitable[object]], seconds: float = STEP_SECONDS) -> bool:
    """Run one shutdown step for at most ``seconds``; False (logged) when it failed or took longer."""
    try:
        async with asyncio.timeout(seconds):
            await step()
    except TimeoutError:
        log.warning("shutdown: %s took longer than %g s; going on without it", what, seconds)
        return False
    except Exception:
        log.exception("shutdown: %s failed", what)
        return False
    return True
