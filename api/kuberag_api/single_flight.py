"""Single-flight: identical concurrent calls share one computation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Task[T]] = {}
        self.shared = 0
        """How many callers got a result computed for another caller."""

    async def run(self, key: str, compute: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Run ``compute`` once per key at a time. Returns (result, shared).

        The computation runs in its own task and every caller awaits it shielded, so a caller that
        goes away (client disconnect) cancels neither the others' wait nor the result's caching.
        """
        task = self._inflight.get(key)
        if task is not None:
            self.shared += 1
            return await asyncio.shield(task), True
        task = asyncio.ensure_future(compute())
        self._inflight[key] = task
        task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task), False

    def __len__(self) -> int:
        return len(self._inflight)
