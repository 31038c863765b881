"""The answer cache as one object: L1 -> L2 -> L3 lookups, stores, the epoch, live resizing."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import numpy as np
from kuberag_contract.config import ApiConfig

from kuberag_api.cache.entry import CachedAnswer
from kuberag_api.cache.memory import MemoryCache
from kuberag_api.cache.redis_tier import RedisCache
from kuberag_api.cache.semantic import SemanticCache
from kuberag_api.live_config import LiveConfig

log = logging.getLogger("kuberag.cache")


class SharedEpoch(Protocol):
    """A cache epoch every replica shares (kept in the shared vector store)."""

    @property
    def cache_epoch(self) -> int: ...

    def bump_epoch(self) -> int:
        """Write a new epoch for every replica (blocking I/O); raises when it cannot."""


class AnswerCache:
    def __init__(self, live: LiveConfig, l2: RedisCache | None = None) -> None:
        self.live = live
        c = live.config.cache
        self.l1: MemoryCache[CachedAnswer] = MemoryCache(c.l1.max_entries, c.l1.ttl_seconds)
        self.l2 = l2
        self.l3 = SemanticCache(c.l3.max_entries, c.l3.ttl_seconds, c.l3.threshold)
        self._epoch = 0
        # L2 is neither read nor written until the epoch kept in Redis is known (see load_epoch).
        self.epoch_known = l2 is None
        # Set when the store is shared: the epoch then comes from it (read from memory: a cache
        # hit never waits on the network), so DELETE /cache on any replica reaches all of them.
        self.shared: SharedEpoch | None = None
        self._background: set[asyncio.Task] = set()
        live.subscribe(self._on_config)

    def _on_config(self, _old: ApiConfig, new: ApiConfig) -> None:
        c = new.cache
        self.l1.resize(c.l1.max_entries, c.l1.ttl_seconds)
        self.l3.resize(c.l3.max_entries if c.l3.enabled else 0, c.l3.ttl_seconds, c.l3.threshold)

    @property
    def epoch(self) -> int:
        shared = self.shared
        return shared.cache_epoch if shared is not None else self._epoch

    @property
    def l2_enabled(self) -> bool:
        return self.l2 is not None and self.live.config.cache.l2.enabled

    @property
    def l3_enabled(self) -> bool:
        return self.live.config.cache.l3.enabled

    @property
    def l2_usable(self) -> bool:
        """L2 is on and its epoch is known: a replica that guessed epoch 0 would read the entries
        a DELETE /cache meant to drop (its UNLINK may have failed) and write unreachable ones."""
        return self.epoch_known and self.l2_enabled

    async def start(self) -> None:
        await self.load_epoch()

    async def load_epoch(self) -> bool:
        """Continue the epoch kept in Redis, so a restarted API container never reads entries a
        DELETE /cache meant to drop. When Redis cannot answer (the sidecar starts after this
        container, or a read timed out under load) L2 stays unused and the readiness loop calls
        this again until it can; True once the epoch is known."""
        if self.epoch_known or self.l2 is None:
            return True
        epoch = await self.l2.read_epoch()
        if epoch is None:
            return False
        self._epoch = max(self._epoch, epoch)
        self.epoch_known = True
        log.info("cache epoch read from L2", extra={"epoch": self._epoch})
        return True

    async def get(self, key: str, scope: str, promote: bool = True) -> tuple[CachedAnswer, str] | None:
        """Exact-key lookups, cheapest first: L1, L2, L3's exact entries. A hit is copied into
        every faster level (``promote``; not for ``Cache-Control: no-store``), so an L2 that
        restarted empty refills from L3 instead of staying cold until L3 expires."""
        entry = self.l1.get(key)
        if entry is not None:
            return entry, "l1"
        if self.l2_usable:
            entry = await self.l2.get(key)
            if entry is not None:
                if promote:
                    self.l1.set(key, entry)
                return entry, "l2"
        if self.l3_enabled:
            entry = self.l3.get_exact(scope, key)
            if entry is not None:
                if promote:
                    self.promote(key, entry)
                return entry, "l3"
        return None

    def get_similar(self, scope: str, vector: np.ndarray, question: str) -> tuple[CachedAnswer, float] | None:
        if not self.l3_enabled:
            return None
        return self.l3.get_similar(scope, vector, question)

    def promote(self, key: str, entry: CachedAnswer) -> None:
        """Copy an L3 hit into L1 and L2 (under this question's key): the next ask is an L1 hit here
        and an L2 hit on the other replicas' restarts."""
        self.l1.set(key, entry)
        self._store_l2(key, entry)

    def _store_l2(self, key: str, entry: CachedAnswer) -> None:
        if self.l2_usable:
            task = asyncio.ensure_future(self.l2.set(key, entry, self.live.config.cache.l2.ttl_seconds))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def put(self, key: str, scope: str, entry: CachedAnswer, vector: np.ndarray | None, question: str) -> None:
        """Store in every level; the L2 write runs in the background (a slow Redis never delays the answer)."""
        self.l1.set(key, entry)
        if self.l3_enabled:
            self.l3.put(scope, key, entry, vector, question)
        self._store_l2(key, entry)

    async def flush_background(self) -> None:
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def clear(self) -> tuple[int, dict[str, int | None]]:
        """Bump the epoch (every key changes) and drop what each level holds. With a shared epoch
        the new one is written first: if that fails nothing is cleared and the error is raised."""
        shared = self.shared
        if shared is not None:
            self._epoch = await asyncio.get_running_loop().run_in_executor(None, shared.bump_epoch)
        new_epoch = self._epoch + 1 if shared is None else self._epoch
        cleared: dict[str, int | None] = {"l1": self.l1.clear(), "l2": None, "l3": self.l3.clear()}
        if self.l2 is not None:
            await self.flush_background()
            if shared is None:
                stored = await self.l2.bump_epoch(at_least=new_epoch)
                if stored is not None:
                    new_epoch = max(new_epoch, stored)
                    self.epoch_known = True  # INCR continued the stored epoch
            cleared["l2"] = await self.l2.clear()
        self._epoch = new_epoch
        log.info("cache cleared", extra={"epoch": new_epoch, "cleared": cleared})
        return new_epoch, cleared
