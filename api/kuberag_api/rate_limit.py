"""Per-client rate limiting: GCRA (a token bucket kept as one timestamp per client).

Litestar's built-in RateLimitConfig does not fit: it is a fixed window, its identifier is a sync
function that cannot read the body's ``user_id``, and its limits are frozen at start while ours
come from the live config (and per client from the client-keys file). So: a small limiter and an
ASGI middleware of our own. Who the caller is comes from ``identity``.

``perReplica``: in-process, exact (the event loop runs each check without an await in between),
no Redis round trip. ``shared``: one atomic Lua script on the shared limiter Redis, exact across
pods. If the shared Redis fails, requests are limited per replica instead (fail-open to the local
limiter, never unlimited) and that fallback is visible: ``kuberag_rate_limiter_degraded`` = 1,
``/readyz`` detail, a counter of fallback decisions, and the response's ``degraded`` flag.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, replace

import msgspec
import redis.asyncio as aioredis
from kuberag_contract.config import RateLimit as RateLimitConfig
from redis.exceptions import RedisError

from kuberag_api.cache.redis_tier import close_quietly
from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.identity import ClientIdentity
from kuberag_api.live_config import LiveConfig

log = logging.getLogger("kuberag.ratelimit")


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket a request must fit in."""

    key: str
    requests_per_minute: int
    burst: int
    subject: str
    """What the bucket limits, for the 429 message ("client 'ci'", "IP 10.1.2.3", ...)."""


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
    requests_per_minute: int = 0
    subject: str = ""
    """The bucket this decision reports: the one that refused, else the one with least room."""

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
        return self.check_many((Bucket(key, requests_per_minute, burst, key),))

    def check_many(self, buckets: tuple[Bucket, ...] | list[Bucket], commit: bool = True) -> Decision:
        """One request against every bucket at once: allowed only if it fits in all of them, and
        then taken from all of them; a refusal takes nothing (a user over its share never spends
        its client's budget). ``commit=False`` only looks."""
        now = self._clock()
        self._calls += 1
        if self._calls & 4095 == 0 or len(self._tat) >= self.max_keys:
            self._sweep(now)
        tats = self._tat
        refused: Decision | None = None
        tightest: Decision | None = None
        new_tats: list[float] = []
        for b in buckets:
            interval = 60.0 / b.requests_per_minute
            capacity = b.burst * interval
            tat = tats.get(b.key, now)
            if tat < now:
                tat = now
            new_tat = tat + interval
            new_tats.append(new_tat)
            if new_tat - now > capacity + 1e-9:
                retry = new_tat - capacity - now
                if refused is None or retry > refused.retry_after:
                    refused = Decision(False, b.burst, 0, tat - now, retry, "perReplica",
                                       requests_per_minute=b.requests_per_minute, subject=b.subject)
            elif refused is None:
                remaining = int((capacity - (new_tat - now)) / interval + 1e-9)
                if tightest is None or remaining < tightest.remaining:
                    tightest = Decision(True, b.burst, remaining, new_tat - now, 0.0, "perReplica",
                                        requests_per_minute=b.requests_per_minute, subject=b.subject)
        if refused is not None:
            return refused
        if commit:
            for b, new_tat in zip(buckets, new_tats, strict=True):
                tats[b.key] = new_tat
        assert tightest is not None
        return tightest

    def _sweep(self, now: float) -> None:
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        # Still full: forget the oldest clients (their buckets restart full: lenient, bounded).
        overflow = len(self._tat) - self.max_keys // 2 if len(self._tat) >= self.max_keys else 0
        for key in list(self._tat)[:overflow]:
            del self._tat[key]

    def clear(self) -> None:
        self._tat.clear()


# KEYS[i] bucket i; ARGV[2i-1] its emission interval, ARGV[2i] its capacity (microseconds).
# All buckets or none: a refusal takes nothing. Returns {allowed, index of the bucket reported
# (the refusing one, else the one with least room), remaining, reset, retry} (microseconds).
# Redis's own clock, so every pod agrees on "now"; a key expires when its bucket is full again.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new_tats = {}
local refused, refused_retry, refused_reset = 0, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  new_tats[i] = new_tat
  if new_tat - now > capacity then
    local retry = new_tat - capacity - now
    if retry > refused_retry then refused, refused_retry, refused_reset = i, retry, tat - now end
  end
end
if refused > 0 then
  return {0, refused, 0, refused_reset, refused_retry}
end
local best, best_remaining, best_reset = 1, -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  local new_tat = new_tats[i]
  redis.call('SET', KEYS[i], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
  local remaining = math.floor((capacity - (new_tat - now)) / interval)
  if best_remaining < 0 or remaining < best_remaining then
    best, best_remaining, best_reset = i, remaining, new_tat - now
  end
end
return {1, best, best_remaining, best_reset, 0}
"""


class SharedRateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout: float, breaker: CircuitBreaker) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout
        self.breaker = breaker
        self._script = client.register_script(GCRA_LUA)
        self.last_error: str | None = None

    async def check(self, buckets: list[Bucket]) -> Decision | None:
        """The shared decision over ``buckets`` (one caller's: the first is the caller's own), or
        None when the shared Redis cannot be used right now."""
        if not self.breaker.allow():
            return None
        # One hash tag (the caller's bucket) for all keys: the script's keys share a Redis Cluster slot.
        tag = "{" + buckets[0].key + "}"
        keys = [self.prefix + tag + b.key[len(buckets[0].key):] for b in buckets]
        args: list[int] = []
        for b in buckets:
            interval = int(60_000_000 / b.requests_per_minute)
            args += (interval, interval * b.burst)
        try:
            async with asyncio.timeout(self.timeout * 2):
                allowed, index, remaining, reset_us, retry_us = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None
        self.breaker.success()
        self.last_error = None
        b = buckets[int(index) - 1]
        return Decision(bool(allowed), b.burst, int(remaining), reset_us / 1e6, retry_us / 1e6, "shared",
                        requests_per_minute=b.requests_per_minute, subject=b.subject)

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


class _UserId(msgspec.Struct):
    user_id: str | None = None
    user: str | None = None  # OpenAI's field (POST /v1/chat/completions), treated like user_id


_user_id_decoder = msgspec.json.Decoder(_UserId)


def user_id_of(body: bytes) -> str | None:
    """The body's user_id, if the body is a JSON object carrying one (else the handler will 400)."""
    if not body:
        return None
    try:
        decoded = _user_id_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    uid = decoded.user_id or decoded.user
    return uid[:200] if uid else None


def caller_bucket(identity: ClientIdentity, cfg: RateLimitConfig) -> Bucket:
    """The bucket of the request's caller: its verified client, else its IP."""
    limit = identity.limit
    rpm, burst = (limit.requests_per_minute, limit.burst) if limit is not None else (cfg.requests_per_minute, cfg.burst)
    if identity.client is None:
        key = "ip:" + identity.ip
    elif cfg.key_source == "ip":
        key = f"ip:{identity.ip}/c:{identity.client}"
    else:
        key = ("a:" if identity.admin else "c:") + identity.client
    return Bucket(key, rpm, burst, identity.label)


class RateLimiter:
    """Chooses the scope from the live config and applies the caller's, the user's and the pod's limits."""

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
        detail: dict = {"enabled": cfg.enabled, "scope": cfg.scope, "key_source": cfg.key_source,
                        "clients_tracked": len(self.local)}
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

    async def check(self, identity: ClientIdentity, user_id: str | None = None) -> Decision | None:
        """The decision for one request of ``identity`` (None when limiting is off). ``user_id``
        (the body's) gets its own ``perUser`` bucket inside the caller's, never instead of it."""
        cfg = self.live.config.rate_limit
        if not cfg.enabled:
            return None
        caller = caller_bucket(identity, cfg)
        buckets = [caller]
        if user_id and cfg.per_user is not None:
            buckets.append(Bucket(f"{caller.key}/u:{user_id}", cfg.per_user.requests_per_minute,
                                  cfg.per_user.burst, f"user_id {user_id!r} of {caller.subject}"))
        total = None
        if cfg.total_requests_per_minute is not None:
            total = Bucket(self.TOTAL_KEY, cfg.total_requests_per_minute, max(cfg.burst, 1),
                           "this pod (all callers together)")
        if cfg.scope == "shared":
            if total is not None:  # per pod: look first, take only once the shared buckets agreed
                looked = self.local.check_many((total,), commit=False)
                if not looked.allowed:
                    return looked
            decision = await self.shared.check(buckets) if self.shared else None
            if decision is not None:
                if self.degraded:
                    log.info("shared rate limiter is back")
                self.degraded = False
                if decision.allowed and total is not None:
                    taken = self.local.check_many((total,))
                    if not taken.allowed:
                        return taken
                return decision
            if not self.degraded:
                log.error("shared rate limiter unavailable: limiting per replica until it is back")
            self.degraded = True
            self.fallbacks += 1
            if total is not None:
                buckets.append(total)
            return replace(self.local.check_many(buckets), degraded=True)
        self.degraded = False
        if total is not None:
            buckets.append(total)
        return self.local.check_many(buckets)
