"""L2: the Redis sidecar, behind short timeouts and a circuit breaker.

A Redis that is down or hung (SIGSTOP) costs a request at most one timeout (~50 ms) until the
breaker opens; then it costs nothing, and a half-open probe brings L2 back when Redis returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from kuberag_api.cache.entry import CachedAnswer, decode_answer, encode_answer
from kuberag_api.circuit_breaker import CircuitBreaker

log = logging.getLogger("kuberag.cache.l2")


def connect(url: str, timeout: float) -> aioredis.Redis:
    """A client that fails fast: one attempt, short connect/read timeouts, no retry loop."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        max_connections=64,
    )


async def close_quietly(client: aioredis.Redis) -> None:
    try:
        await client.aclose()
    except Exception:  # closing a client of a dead server may raise; nothing to do then
        pass


class RedisCache:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        timeout: float,
        breaker: CircuitBreaker,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.answer_prefix = f"{prefix}a:"
        self.epoch_key = f"{prefix}epoch"
        self.timeout = timeout
        self.breaker = breaker
        self._on_error = on_error
        self.errors = 0
        self.last_error: str | None = None

    @property
    def up(self) -> bool:
        return self.breaker.state == "closed"

    async def _call(self, op: str, coro_factory):
        if not self.breaker.allow():
            return None, False
        try:
            # hard bound on top of the socket timeouts (connect + read + pool wait)
            async with asyncio.timeout(self.timeout * 2):
                result = await coro_factory()
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            was_closed = self.breaker.state == "closed"
            self.breaker.failure()
            self.last_error = f"{op}: {type(exc).__name__}: {exc}"[:300]
            if was_closed and self.breaker.state != "closed":
                log.warning("L2 Redis unavailable, circuit open", extra={"op": op, "error": self.last_error})
            if self._on_error is not None:
                self._on_error(op, type(exc).__name__)
            return None, False
        if self.breaker.state != "closed":
            log.info("L2 Redis is back, circuit closed")
        self.breaker.success()
        return result, True

    async def get(self, key: str) -> CachedAnswer | None:
        raw, ok = await self._call("get", lambda: self.client.get(self.answer_prefix + key))
        if not ok or raw is None:
            return None
        try:
            return decode_answer(raw)
        except Exception:  # an entry of another version or a corrupt value is a miss, not an error page
            return None

    async def set(self, key: str, entry: CachedAnswer, ttl_seconds: int) -> bool:
        _, ok = await self._call(
            "set", lambda: self.client.set(self.answer_prefix + key, encode_answer(entry), ex=ttl_seconds)
        )
        return ok

    async def read_epoch(self) -> int | None:
        raw, ok = await self._call("get_epoch", lambda: self.client.get(self.epoch_key))
        if not ok:
            return None
        try:
            return int(raw) if raw is not None else 0
        except ValueError:
            return 0

    async def bump_epoch(self, at_least: int) -> int | None:
        async def bump() -> int:
            value = int(await self.client.incr(self.epoch_key))
            if value < at_least:
                await self.client.set(self.epoch_key, at_least)
                value = at_least
            return value

        value, ok = await self._call("bump_epoch", bump)
        return value if ok else None

    async def clear(self) -> int | None:
        """Delete kuberag's own answer keys (SCAN + UNLINK on the prefix); never FLUSHDB."""
        if not self.breaker.allow():
            return None
        deleted = 0
        try:
            batch: list[bytes] = []
            async for key in self.client.scan_iter(match=self.answer_prefix + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(await self.client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(await self.client.unlink(*batch))
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            self.breaker.failure()
            self.last_error = f"clear: {type(exc).__name__}: {exc}"[:300]
            if self._on_error is not None:
                self._on_error("clear", type(exc).__name__)
            return None
        self.breaker.success()
        return deleted

    async def ping(self) -> bool:
        _, ok = await self._call("ping", lambda: self.client.ping())
        return ok

    async def close(self) -> None:
        await close_quietly(self.client)
