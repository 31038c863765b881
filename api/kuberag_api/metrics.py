"""Metrics: Prometheus exposition (its own registry, served on the metrics port) and the JSON
summary of ``GET /metrics`` kept by the same calls."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PROBE_ROUTES = frozenset({"/healthz", "/readyz"})


@dataclass
class Summary:
    total_requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    latency_ms_sum: float = 0.0
    errors: int = 0
    rate_limited: int = 0
    hits_l1: int = 0
    hits_l2: int = 0
    hits_l3: int = 0


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.summary = Summary()
        self.http_requests = Counter(
            "kuberag_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "kuberag_http_request_duration_seconds", "HTTP request latency by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cache_hits = Counter("kuberag_cache_hits", "Answer cache hits by level", ["level"], registry=r)
        self.cache_misses = Counter("kuberag_cache_misses", "Answer cache misses (computed answers)", registry=r)
        self.cache_errors = Counter("kuberag_cache_errors", "Cache backend errors by tier and operation",
                                    ["tier", "op"], registry=r)
        self.cache_entries = Gauge("kuberag_cache_entries", "Entries in the in-process caches", ["level"], registry=r)
        self.single_flight_shared = Counter(
            "kuberag_singleflight_shared", "Requests answered by a computation another request started", registry=r
        )
        self.rate_limited = Counter("kuberag_rate_limited_requests", "Requests refused by the rate limiter",
                                    ["scope"], registry=r)
        self.limiter_degraded = Gauge(
            "kuberag_rate_limiter_degraded", "1 while the shared limiter is unavailable and limits apply per replica",
            registry=r,
        )
        self.limiter_fallbacks = Counter(
            "kuberag_rate_limiter_fallbacks", "Decisions taken per replica because the shared limiter failed",
            registry=r,
        )
        self.stage_duration = Histogram(
            "kuberag_stage_duration_seconds", "Time per pipeline stage", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.corpus_chunks = Gauge("kuberag_corpus_chunks", "Chunks in the index", registry=r)
        self.corpus_documents = Gauge("kuberag_corpus_documents", "Documents in the index", registry=r)
        self.dependency_up = Gauge("kuberag_dependency_up", "1 when a dependency is usable", ["dependency"], registry=r)
        self.redis_up = Gauge("kuberag_redis_up", "1 when the L2 Redis sidecar is usable (circuit closed)", registry=r)
        self.config_info = Gauge("kuberag_config_info", "The config file the API runs with (label: its sha256)",
                                 ["hash"], registry=r)
        self.config_reload_errors = Counter(
            "kuberag_config_reload_errors", "Config files refused (the last good config stays)", registry=r
        )
        self.config_reloads = Counter("kuberag_config_reloads", "Config files applied after start", registry=r)
        self.client_keys = Gauge("kuberag_client_keys", "Client keys the API knows (from the client-keys file)",
                                 registry=r)
        self.client_keys_reload_errors = Counter(
            "kuberag_client_keys_reload_errors", "Client-keys files refused (the last good keys stay)", registry=r
        )
        self.config_last_reload_successful = Gauge(
            "kuberag_config_last_reload_successful", "0 while the newest config file is refused (the last good one runs)",
            registry=r,
        )
        self.config_last_reload_successful.set(1)
        self.degraded_answers = Counter(
            "kuberag_degraded_answers", "Answers given with a part of the pipeline skipped, by cause "
            "(l2: Redis sidecar down, limiter: shared limiter fell back to per replica, llm: extractive fallback)",
            ["cause"], registry=r,
        )
        self.errors = Counter("kuberag_errors", "Errors by kind", ["kind"], registry=r)
        self.llm_tokens = Counter("kuberag_llm_tokens", "LLM tokens by model and kind (prompt, completion)",
                                  ["model", "kind"], registry=r)
        self.llm_cost = Counter("kuberag_llm_estimated_cost", "Estimated LLM cost by model, from the configured "
                                "prices per 1k tokens (in their currency)", ["model"], registry=r)
        self.token_limited = Counter("kuberag_token_limited_requests", "Requests refused by the per-client LLM "
                                     "token limit", registry=r)
        self.llm_retries = Counter("kuberag_llm_retries", "LLM call attempts retried, by reason", ["reason"],
                                   registry=r)
        self.llm_fallbacks = Counter("kuberag_llm_fallbacks", "Answers given extractively because the LLM failed "
                                     "or its circuit breaker was open, by reason", ["reason"], registry=r)
        self.llm_breaker_open = Gauge("kuberag_llm_circuit_open", "1 while the LLM circuit breaker is open",
                                      registry=r)
        self.documents_ingested = Counter("kuberag_documents_ingested", "Ingested documents by status", ["status"],
                                          registry=r)
        self._config_hash: str | None = None
        self._lock = threading.Lock()
        self._server = None
        self.port: int | None = None
        # children bound once: label lookups are off the hot path
        self._hit = {lvl: self.cache_hits.labels(lvl) for lvl in ("l1", "l2", "l3")}
        self._stage = {s: self.stage_duration.labels(s) for s in ("embed", "l3_lookup", "retrieve", "generate")}
        self._degraded = {c: self.degraded_answers.labels(c) for c in ("l2", "limiter", "llm")}
        for scope in ("perReplica", "shared"):  # from 0, so the first refusals show in rate()
            self.rate_limited.labels(scope)
        self._route_children: dict[tuple[str, str, int], tuple] = {}

    # --- request level ----------------------------------------------------------------------
    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._route_children.get(key)
        if children is None:
            children = (self.http_requests.labels(route, method, str(status)), self.http_duration.labels(route))
            self._route_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        # A probe's 503 (not ready yet) and a 429 are answers, not errors of the service.
        if status >= 400 and status != 429 and route not in _PROBE_ROUTES:
            self.summary.errors += 1
            if status >= 500:
                self.errors.labels("http_5xx").inc()

    def observe_query(self, cache_level: str | None, latency_ms: float, degraded: tuple[str, ...] = ()) -> None:
        for cause in degraded:
            self._degraded[cause].inc()
        s = self.summary
        s.total_requests += 1
        s.latency_ms_sum += latency_ms
        if cache_level is None:
            s.cache_misses += 1
            self.cache_misses.inc()
        else:
            s.cache_hits += 1
            setattr(s, f"hits_{cache_level}", getattr(s, f"hits_{cache_level}") + 1)
            self._hit[cache_level].inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._stage[stage].observe(seconds)

    def observe_rate_limited(self, scope: str) -> None:
        self.summary.rate_limited += 1
        self.rate_limited.labels(scope).inc()

    def set_config_hash(self, config_hash: str) -> None:
        with self._lock:
            if self._config_hash is not None and self._config_hash != config_hash:
                self.config_info.remove(self._config_hash)
            self._config_hash = config_hash
            self.config_info.labels(config_hash).set(1)

    def json_summary(self) -> dict:
        s = self.summary
        looked = s.cache_hits + s.cache_misses
        return {
            "total_requests": s.total_requests,
            "cache_hits": s.cache_hits,
            "cache_misses": s.cache_misses,
            "avg_latency": round(s.latency_ms_sum / s.total_requests, 3) if s.total_requests else 0.0,
            "errors": s.errors,
            "cache_hit_rate": round(s.cache_hits / looked, 4) if looked else 0.0,
            "hits_by_level": {"l1": s.hits_l1, "l2": s.hits_l2, "l3": s.hits_l3},
            "rate_limited": s.rate_limited,
        }

    # --- exposition server ------------------------------------------------------------------
    def serve(self, host: str, port: int) -> int:
        """Start the exposition server on its own port (a daemon thread); returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = server.server_address[1]
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
