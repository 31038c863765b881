"""Per-client rate limiting: GCRA (a token bucket kept as one timestamp per client).

Litestar's built-in RateLimitConfig does not fit: it is a fixed window, its identifier is a sync
function that cannot read the body's ``user_id``, and its limits are frozen at start while ours
come from the live config. So: a small limiter and an ASGI middleware of our own.

``perReplica``: in-process, exact (the event loop runs each check without an await in between),
no Redis round trip. ``shared``: one atomic Lua script on the shared limiter Redis, exact across
pods. If the shared Redis fails, requests are limited per replica instead (fail-open to the local
limiter, never unlimited) and that fallback is visible: ``kuberag_rate_limiter_degraded`` = 1,
``/readyz`` detail, a counter of fallback decisions, and the response's ``degraded`` flag.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kuberag_api.cache.redis_tier import close_quietly
from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.live_config import LiveConfig

log = logging.getLogger("kuberag.ratelimit")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    """Seconds until the bucket is full again."""
    retry_after: float
    """Seconds until the next request would be allowed (0 when allowed)."""
    scope: str
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(max(0, math.ceil(self.reset_after))),
        }
        if not self.allowed:
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return h


class LocalRateLimiter:
    """In-process GCRA. Memory is bounded: a client whose bucket is full again is forgotten."""

    def __init__(self, max_keys: int = 200_000, clock=time.monotonic) -> None:
        self._tat: dict[str, float] = {}
        self.max_keys = max_keys
        self._clock = clock
        self._calls = 0

    def __len__(self) -> int:
        return len(self._tat)

    def check(self, key: str, requests_per_minute: int, burst: int) -> Decision:
        now = self._clock()
        interval = 60.0 / requests_per_minute
        capacity = burst * interval
        tat = self._tat.get(key, now)
        if tat < now:
            tat = now
        new_tat = tat + interval
        self._calls += 1
        if self._calls & 4095 == 0 or len(self._tat) >= self.max_keys:
            self._sweep(now)
        if new_tat - now > capacity + 1e-9:
            return Decision(False, burst, 0, tat - now, new_tat - capacity - now, "perReplica")
        self._tat[key] = new_tat
        remaining = int((capacity - (new_tat - now)) / interval + 1e-9)
        return Decision(True, burst, remaining, new_tat - now, 0.0, "perReplica")

    def _sweep(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        # Still full: forget the oldest clients (their buckets restart full: lenient, bounded).
        overflow = len(self._tat) - self.max_keys // 2 if len(self._tat) >= self.max_keys else 0
        for key in list(self._tat)[:overflow]:
            del self._tat[key]

    def clear(self) -> None:
        self._tat.clear()


# KEYS[1] bucket; ARGV[1] emission interval (microseconds); ARGV[2] capacity (microseconds).
# Redis's own clock, so every pod agrees on "now"; the key expires when the bucket is full again.
GCRA_LUA = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, 0, tat - now, new_tat - capacity - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((capacity - (new_tat - now)) / interval), new_tat - now, 0}
"""


class SharedRateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout: float, breaker: CircuitBreaker) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self.breaker = breaker
        self._script = client.register_script(GCRA_LUA)
        self.last_error: str | None = None

    async def check(self, key: str, requests_per_minute: int, burst: int) -> Decision | None:
        """The shared decision, or None when the shared Redis cannot be used right now."""
        if not self.breaker.allow():
            return None
        interval = int(60_000_000 / requests_per_minute)
        try:
            async with asyncio.timeout(self.timeout * 2):
                allowed, remaining, reset_us, retry_us = await self._script(
                    keys=[self.prefix + key], args=[interval, interval * burst]
                )
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None
        self.breaker.success()
        self.last_error = None
        return Decision(bool(allowed), burst, int(remaining), reset_us / 1e6, retry_us / 1e6, "shared")

    async def ping(self) -> bool:
        if not self.breaker.allow():
            return False
        try:
            async with asyncio.timeout(self.timeout * 2):
                await self.client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return False
        self.breaker.success()
        return True

    async def close(self) -> None:
        await close_quietly(self.client)


class _Identity(msgspec.Struct):
    user_id: str | None = None
    user: str | None = None  # OpenAI's field (POST /v1/chat/completions), treated like user_id


_identity_decoder = msgspec.json.Decoder(_Identity)


def user_id_of(body: bytes) -> str | None:
    """The body's user_id, if the body is a JSON object carrying one (else the handler will 400)."""
    if not body:
        return None
    try:
        decoded = _identity_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    uid = decoded.user_id or decoded.user
    return uid or None


def client_key(key_source: str, user_id: str | None, api_key: str | None, ip: str | None) -> str:
    if key_source in ("auto", "userId") and user_id:
        return "u:" + user_id[:200]
    if key_source in ("auto", "apiKey") and api_key:
        # never keep a secret as a dict key or in Redis: a short hash identifies the client
        return "k:" + hashlib.blake2b(api_key.encode(), digest_size=12).hexdigest()
    return "ip:" + (ip or "unknown")


class RateLimiter:
    """Chooses the scope from the live config and applies the per-client and per-pod limits."""

    TOTAL_KEY = "\x00total"

    def __init__(self, live: LiveConfig, shared: SharedRateLimiter | None = None) -> None:
        self.live = live
        self.local = LocalRateLimiter()
        self.shared = shared
        self.degraded = False
        self.fallbacks = 0

    @property
    def state(self) -> dict:
        cfg = self.live.config.rate_limit
        detail: dict = {"enabled": cfg.enabled, "scope": cfg.scope, "clients_tracked": len(self.local)}
        if cfg.scope == "shared":
            if self.shared is None:
                detail["status"] = "degraded: scope is shared but KUBERAG_LIMITER_REDIS_URL is not set; limiting per replica"
            elif self.degraded:
                detail["status"] = f"degraded: shared Redis unavailable ({self.shared.last_error}); limiting per replica"
            else:
                detail["status"] = "ok"
        else:
            detail["status"] = "ok"
        return detail

    async def check(self, key: str) -> Decision | None:
        cfg = self.live.config.rate_limit
        if not cfg.enabled:
            return None
        if cfg.total_requests_per_minute is not None:
            total = self.local.check(self.TOTAL_KEY, cfg.total_requests_per_minute, max(cfg.burst, 1))
            if not total.allowed:
                return total
        if cfg.scope == "shared":
            decision = await self.shared.check(key, cfg.requests_per_minute, cfg.burst) if self.shared else None
            if decision is not None:
                if self.degraded:
                    log.info("shared rate limiter is back")
                self.degraded = False
                return decision
            if not self.degraded:
                log.error("shared rate limiter unavailable: limiting per replica until it is back")
            self.degraded = True
            self.fallbacks += 1
            local = self.local.check(key, cfg.requests_per_minute, cfg.burst)
            return Decision(local.allowed, local.limit, local.remaining, local.reset_after, local.retry_after,
                            "perReplica", degraded=True)
        self.degraded = False
        return self.local.check(key, cfg.requests_per_minute, cfg.burst)
