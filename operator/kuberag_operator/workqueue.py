"""The reconcile workers' queue of RagService keys, with client-go's workqueue semantics.

kopf's per-object change handlers run in arrival order and keep their state in the object (a
finalizer, progress and diff-base annotations: more writes, and a RagService that cannot be
deleted once the operator is uninstalled); it has no queue a new spec can overtake routine work
in. So kopf only reports events (``@kopf.on.event``) and this queue decides what runs when:

- a key is processed by one worker at a time; added again meanwhile, it runs once more after;
- a key already waiting is not queued twice (triggers arriving together coalesce into one pass);
- two lanes: ``URGENT`` (a new RagService, a new spec generation) is served before ``ROUTINE``
  (children's events, status refreshes, the resync, resuming every RagService after a restart
  or a leader change), so a user's new RagService never waits behind hundreds of resumes;
- ``add(key, after=s)``: not before ``s`` seconds (retry backoff, debounced status churn); a
  pass that runs earlier for another reason makes the delayed entry moot.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable

URGENT, ROUTINE = 0, 1


class WorkQueue:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: tuple[deque, deque] = (deque(), deque())
        self._queued: dict[Hashable, int] = {}  # key -> the lane it waits in
        self._processing: set[Hashable] = set()
        self._dirty: dict[Hashable, int] = {}  # added while being processed -> lane to requeue in
        self._due: dict[Hashable, tuple[float, int]] = {}  # the earliest delayed add per key
        self._delayed: list[tuple[float, int, Hashable]] = []  # heap of (when, seq, key)
        self._seq = itertools.count()
        self._shutdown = False

    def add(self, key: Hashable, lane: int = ROUTINE, *, after: float = 0.0) -> None:
        with self._cond:
            if self._shutdown:
                return
            if after <= 0:
                self._add_now(key, lane)
                return
            if key in self._queued:
                return  # runs soon anyway
            when = self._clock() + after
            due = self._due.get(key)
            if due is not None and due[0] <= when:
                self._due[key] = (due[0], min(due[1], lane))
                return
            self._due[key] = (when, lane)
            heapq.heappush(self._delayed, (when, next(self._seq), key))
            self._cond.notify()

    def _add_now(self, key: Hashable, lane: int) -> None:
        if key in self._processing:
            self._dirty[key] = min(self._dirty.get(key, lane), lane)
            return
        queued = self._queued.get(key)
        if queued is not None and queued <= lane:
            return
        # New, or moving up to the urgent lane (its routine entry is skipped when reached).
        self._queued[key] = lane
        self._ready[lane].append(key)
        self._cond.notify()

    def _promote_due(self) -> float | None:
        """Move delayed keys whose time has come to their lane; the seconds until the next one."""
        now = self._clock()
        while self._delayed:
            when, _, key = self._delayed[0]
            due = self._due.get(key)
            if due is None or due[0] != when:
                heapq.heappop(self._delayed)  # superseded or already run
                continue
            if when > now:
                return when - now
            heapq.heappop(self._delayed)
            del self._due[key]
            self._add_now(key, due[1])
        return None

    def get(self, timeout: float | None = None) -> tuple[Hashable, int] | None:
        """The next key and its lane (the key is then being processed until ``done``); None once
        shut down (or after ``timeout`` seconds with nothing ready)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._shutdown:
                wait = self._promote_due()
                for lane, ready in enumerate(self._ready):
                    while ready:
                        key = ready.popleft()
                        if self._queued.get(key) != lane:
                            continue  # moved to the urgent lane meanwhile
                        del self._queued[key]
                        self._due.pop(key, None)  # this pass covers what a delayed add wanted
                        self._processing.add(key)
                        return key, lane
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            lane = self._dirty.pop(key, None)
            if lane is not None and not self._shutdown:
                self._add_now(key, lane)

    def __len__(self) -> int:
        """Keys waiting (ready or delayed), not counting those being processed."""
        with self._cond:
            return len(self._queued) + len(self._due.keys() - self._queued.keys())

    def urgent_waiting(self) -> int:
        """Keys waiting in the ``URGENT`` lane (new RagServices, new specs), not yet processed."""
        with self._cond:
            return sum(1 for lane in self._queued.values() if lane == URGENT)

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
