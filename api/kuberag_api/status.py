"""Readiness and dependency state: what /readyz reports and the dependency gauges show."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kuberag_api.cache.tiers import AnswerCache
from kuberag_api.identity import ClientKeyStore
from kuberag_api.live_config import LiveConfig
from kuberag_api.metrics import Metrics
from kuberag_api.rate_limit import RateLimiter
from kuberag_api.schemas import Readiness
from kuberag_api.services import EngineSlot

log = logging.getLogger("kuberag.status")


class ReadinessProbe:
    """Ready = the index is loaded. Redis, the limiter and the config are reported, not required:
    a pod without its cache still answers (slower), so taking it out of the Service would only
    move its load onto the others."""

    def __init__(self, slot: EngineSlot, cache: AnswerCache, limiter: RateLimiter, live: LiveConfig,
                 metrics: Metrics, client_keys: ClientKeyStore | None = None, generator=None) -> None:
        self.client_keys = client_keys or ClientKeyStore()
        self.generator = generator
        self.slot = slot
        self.cache = cache
        self.limiter = limiter
        self.live = live
        self.metrics = metrics
        # Read at scrape time (prometheus-client's set_function): the gauge says what /readyz says
        # at that moment, not what the last refresh saw up to an interval (2 s) earlier.
        metrics.redis_up.set_function(self._l2_up)

    def _l2_up(self) -> int:
        return 1 if self.cache.l2_enabled and self.cache.l2.up else 0

    def check(self, detail: bool = True) -> Readiness:
        """Readiness; ``detail`` (the admin key was given) adds every check and the error texts. A
        probe needs only the status: without the key nobody learns file paths, Redis errors or
        YAML messages quoting the config."""
        reasons: list[str] = []
        engine = self.slot.engine
        # A shared store (Weaviate) reports its own state: reachable, which index version, how fresh.
        store_status = getattr(engine, "status", None)
        store = store_status() if store_status is not None else None
        if self.slot.ready and engine is not None:
            index = {"status": "ready", "documents": engine.document_count, "chunks": engine.chunk_count,
                     "corpus_version": engine.corpus_version, "embedder": engine.embedder.name}
        else:
            if self.slot.error:
                status = f"failed: {self.slot.error}"
            else:
                status = store["status"] if store is not None else "loading"
            index = {"status": status}
            reasons.append(f"index {status}" if detail else f"index {status.split(':', 1)[0]}")
        if not detail:
            return Readiness(status="not ready" if reasons else "ready", reasons=reasons)
        l2 = self.cache.l2
        if l2 is None:
            redis = {"status": "disabled (no KUBERAG_REDIS_URL): L1 and L3 only"}
        elif not self.cache.l2_enabled:
            redis = {"status": "disabled by config (cache.l2.enabled: false)"}
        else:
            state = l2.breaker.state
            redis = {"status": "up" if state == "closed" else f"down (circuit {state}): answers skip L2",
                     "errors": l2.errors}
            if state == "closed" and not self.cache.epoch_known:
                redis["status"] = "epoch not read yet: answers skip L2"
            if state != "closed" and l2.last_error:
                redis["last_error"] = l2.last_error
        config = {"hash": self.live.hash, "source": str(self.live.path) if self.live.path else None,
                  "reloads": self.live.reloads}
        if self.live.last_error:
            config["error"] = self.live.last_error
        if self.live.restart_needed:
            config["restart_needed"] = "static sections changed; they apply after a restart"
        checks = {
            "index": index,
            **({"store": store} if store is not None else {}),
            "redis": redis,
            "limiter": self.limiter.state,
            "config": config,
            "client_keys": self.client_keys.state,
            "llm": self._llm(),
            "cache": {"epoch": self.cache.epoch, "l1_entries": len(self.cache.l1), "l3_entries": len(self.cache.l3)},
        }
        return Readiness(status="not ready" if reasons else "ready", reasons=reasons, checks=checks)

    def _llm(self) -> dict:
        """The LLM's breaker (not a readiness reason: with it open, answers are extractive, degraded)."""
        breaker = getattr(self.generator, "breaker", None)
        if breaker is None:
            return {"status": "none configured: extractive answers"}
        state = breaker.state
        return {"model": getattr(self.generator, "model", None),
                "status": "up" if state == "closed" else f"circuit {state}: answers are extractive (degraded)"}

    def update_gauges(self) -> None:
        m = self.metrics
        if self.cache.l2_enabled:
            m.dependency_up.labels("redis").set_function(self._l2_up)
        else:  # L2 off by design is not a Redis outage: no series for the KuberagRedisSidecarDown alert
            with contextlib.suppress(KeyError):
                m.dependency_up.remove("redis")
        m.config_last_reload_successful.set(0 if self.live.last_error else 1)
        m.dependency_up.labels("index").set(1 if self.slot.ready else 0)
        available = getattr(self.slot.engine, "available", None)
        if available is not None:
            m.dependency_up.labels("vector_store").set(1 if available else 0)
        shared = self.limiter.live.config.rate_limit.scope == "shared"
        degraded = shared and (self.limiter.shared is None or self.limiter.degraded)
        m.limiter_degraded.set(1 if degraded else 0)
        if self.limiter.shared is not None:
            m.dependency_up.labels("limiter_redis").set(0 if self.limiter.shared.breaker.state != "closed" else 1)
        m.client_keys.set(len(self.client_keys))
        m.cache_entries.labels("l1").set(len(self.cache.l1))
        m.cache_entries.labels("l3").set(len(self.cache.l3))
        engine = self.slot.engine
        if engine is not None:
            m.corpus_chunks.set(engine.chunk_count)
            m.corpus_documents.set(engine.document_count)

    async def run(self, interval: float) -> None:
        """Probe Redis (so a dead sidecar shows even without traffic, and L2 recovers through
        the breaker's half-open probe) and refresh the gauges, until cancelled."""
        while True:
            try:
                if self.cache.l2_enabled:
                    await self.cache.l2.ping()
                    if not self.cache.epoch_known:
                        await self.cache.load_epoch()
                if self.limiter.shared is not None and self.limiter.live.config.rate_limit.scope == "shared":
                    await self.limiter.shared.ping()
                self.update_gauges()
            except Exception:
                log.exception("dependency probe failed")
            await asyncio.sleep(interval)
