"""A small circuit breaker for Redis calls: closed -> open after N failures -> one half-open probe.

(redis-py's own retry/backoff retries a failing call, which is the opposite of what a cache on
the hot path needs: a dead or hung Redis must cost nothing until it may be back.)
"""

from __future__ import annotations

import time
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 3, reset_seconds: float = 2.0, clock=time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self.opened_count = 0

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success (the breaker opens at ``failure_threshold``)."""
        return self._failures

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_seconds:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go to the backend now? In half-open state only one probe at a time."""
        if self._opened_at is None:
            return True
        if self._clock() - self._opened_at < self.reset_seconds:
            return False
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        if self._probe_in_flight or self._failures >= self.failure_threshold:
            if self._opened_at is None or self._probe_in_flight:
                self.opened_count += 1
            self._opened_at = self._clock()
        self._probe_in_flight = False
