"""Per-client LLM token limits, enforced by reservation.

Before an answer calls the LLM, the client's bucket is charged the call's worst case (the prompt
estimate plus ``max_tokens``); when the call is over it is settled with the real usage (the unused
part is given back; a failed call gives it all back). A bucket holds ``tokenBurst`` tokens and
refills at ``tokensPerMinute`` (GCRA with a cost, the request limiter's algorithm). Cache hits
spend no tokens and reserve none. The scope follows ``rateLimit.scope``: in-process per replica,
or one atomic script on the shared limiter Redis (per replica, and visible, when it fails).

Litestar's rate limiting counts requests only, so this is a small limiter of our own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from kuberag_api.live_config import LiveConfig
from kuberag_api.rate_limit import SharedRateLimiter

log = logging.getLogger("kuberag.tokenlimit")

POLICY = "tokens"


@dataclass(frozen=True, slots=True)
class TokenDecision:
    allowed: bool
    limit: int
    """The bucket size (tokenBurst)."""
    remaining: int
    reset_after: float
    retry_after: float
    per_minute: int

    def headers(self) -> dict[str, str]:
        """The token policy's RateLimit-style headers (OpenAI's ``x-ratelimit-*-tokens`` names)."""
        h = {
            "X-RateLimit-Limit-Tokens": str(self.limit),
            "X-RateLimit-Remaining-Tokens": str(max(0, self.remaining)),
            "X-RateLimit-Reset-Tokens": f"{max(0, math.ceil(self.reset_after))}s",
            "RateLimit-Policy": f'"{POLICY}";q={self.per_minute};w=60;burst={self.limit}',
        }
        if not self.allowed and math.isfinite(self.retry_after):
            h["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return h


class LocalTokenBuckets:
    """In-process GCRA with a cost. Memory is bounded: a full bucket is forgotten."""

    def __init__(self, max_keys: int = 200_000, clock=time.monotonic) -> None:
        self._tat: dict[str, float] = {}
        self._clock = clock
        self.max_keys = max_keys

    def take(self, key: str, cost: int, per_minute: int, burst: int) -> TokenDecision:
        now = self._clock()
        interval = 60.0 / per_minute
        capacity = burst * interval
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + cost * interval
        if new_tat - now > capacity + 1e-9:
            remaining = int((capacity - (tat - now)) / interval)
            return TokenDecision(False, burst, remaining, tat - now, new_tat - capacity - now, per_minute)
        if len(self._tat) >= self.max_keys:
            for k in [k for k, t in self._tat.items() if t <= now]:
                del self._tat[k]
        self._tat[key] = new_tat
        return TokenDecision(True, burst, int((capacity - (new_tat - now)) / interval), new_tat - now, 0.0,
                             per_minute)

    def give_back(self, key: str, tokens: int, per_minute: int) -> None:
        if tokens <= 0 or key not in self._tat:
            return
        now = self._clock()
        self._tat[key] = max(now, self._tat[key] - tokens * 60.0 / per_minute)

    def clear(self) -> None:
        self._tat.clear()


# KEYS[1] bucket; ARGV[1] interval per token (µs), ARGV[2] capacity (µs), ARGV[3] cost (tokens,
# negative to give back). Redis's own clock, so every pod agrees on "now".
TOKEN_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
if cost > 0 and new_tat - now > capacity then
  return {0, math.floor((capacity - (tat - now)) / interval), tat - now, new_tat - capacity - now}
end
if new_tat < now then new_tat = now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((capacity - (new_tat - now)) / interval), new_tat - now, 0}
"""


@dataclass(slots=True)
class Reservation:
    key: str
    tokens: int
    per_minute: int
    shared: bool


class TokenLimiter:
    """Reads ``rateLimit.tokensPerMinute`` / ``tokenBurst`` / ``scope`` from the live config."""

    def __init__(self, live: LiveConfig, shared: SharedRateLimiter | None = None) -> None:
        self.live = live
        self.local = LocalTokenBuckets()
        self.shared = shared
        self._script = shared.client.register_script(TOKEN_GCRA_LUA) if shared is not None else None
        self.degraded = False

    @property
    def enabled(self) -> bool:
        cfg = self.live.config.rate_limit
        return cfg.enabled and cfg.tokens_per_minute is not None

    def _limits(self) -> tuple[int, int]:
        cfg = self.live.config.rate_limit
        per_minute = cfg.tokens_per_minute or 1
        return per_minute, cfg.token_burst or per_minute

    async def _shared(self, key: str, cost: int, per_minute: int, burst: int) -> TokenDecision | None:
        shared = self.shared
        if shared is None or self._script is None or not shared.breaker.allow():
            return None
        interval = 60_000_000 / per_minute
        try:
            async with asyncio.timeout(shared.timeout * 2):
                allowed, remaining, reset_us, retry_us = await self._script(
                    keys=[shared.prefix + "tok:" + key], args=[interval, interval * burst, cost])
        except (RedisError, OSError, TimeoutError) as exc:
            shared.breaker.failure()
            shared.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return None
        shared.breaker.success()
        return TokenDecision(bool(allowed), burst, int(remaining), reset_us / 1e6, retry_us / 1e6, per_minute)

    async def reserve(self, key: str, tokens: int) -> tuple[TokenDecision, Reservation | None]:
        """Charge ``tokens`` now. A call that alone exceeds the bucket is refused for good
        (``retry_after`` is then infinite): no wait would let it through."""
        per_minute, burst = self._limits()
        if tokens > burst:
            return TokenDecision(False, burst, 0, 0.0, math.inf, per_minute), None
        use_shared = self.live.config.rate_limit.scope == "shared"
        decision = await self._shared(key, tokens, per_minute, burst) if use_shared else None
        if use_shared and decision is None and not self.degraded:
            log.error("shared token limiter unavailable: limiting tokens per replica until it is back")
        self.degraded = use_shared and decision is None
        shared = decision is not None
        if decision is None:
            decision = self.local.take(key, tokens, per_minute, burst)
        return decision, (Reservation(key, tokens, per_minute, shared) if decision.allowed else None)

    async def settle(self, reservation: Reservation | None, used: int | None) -> None:
        """Give back what the call did not use (all of it when ``used`` is 0: a failed call).
        ``used`` None (the provider reported no usage) keeps the whole reservation."""
        if reservation is None or used is None:
            return
        unused = reservation.tokens - used
        if unused == 0:
            return
        if unused < 0:  # the estimate was short: charge the difference (never refused after the fact)
            if reservation.shared:
                per_minute, burst = self._limits()
                await self._shared(reservation.key, -unused, per_minute, 10**12)
            else:
                per_minute = reservation.per_minute
                self.local.take(reservation.key, -unused, per_minute, 10**12)
            return
        if reservation.shared:
            per_minute, burst = self._limits()
            await self._shared(reservation.key, -unused, per_minute, burst)
        else:
            self.local.give_back(reservation.key, unused, reservation.per_minute)
