"""Request and response bodies of the HTTP API (msgspec Structs; the OpenAPI document comes from them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from kuberag_api.cache.entry import CachedSource
from kuberag_api.rag.types import DocumentInfo

QUESTION_MAX_CHARS = 500


class QueryRequest(msgspec.Struct, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(min_length=1, description="1..500 characters after trimming whitespace")]
    user_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        stripped = self.question.strip()
        if not stripped:
            raise ValueError("question must not be empty or only whitespace")
        if len(stripped) > QUESTION_MAX_CHARS:
            raise ValueError(f"question must be at most {QUESTION_MAX_CHARS} characters (got {len(stripped)})")
        self.question = stripped


# The cached source is the response's source: an L1 hit returns it without converting anything.
Source = CachedSource


class Usage(msgspec.Struct):
    """Tokens the LLM spent on this request (zero for a cache hit) and their estimated cost."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_cost: float | None = None
    """From the configured prices per 1k tokens (their currency); null when none is configured."""


class QueryResponse(msgspec.Struct):
    answer: str
    sources: list[CachedSource]
    latency_ms: float
    cache_hit: bool
    timestamp: str
    cache_level: Literal["l1", "l2", "l3"] | None
    request_id: str
    degraded: bool
    model: str
    similarity: float | None = None
    """Cosine similarity of the cached question for an L3 (semantic) hit."""
    usage: Usage | None = None
    """LLM tokens of this request; null when no LLM is configured."""


class Health(msgspec.Struct):
    status: str
    version: str
    timestamp: str
    endpoints: list[str]


class Liveness(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct, omit_defaults=True):
    status: Literal["ready", "not ready"]
    reasons: list[str]
    """Why not ready: short and free of internals without the admin key."""
    checks: dict[str, Any] | None = None
    """Index, Redis, limiter, config, client keys, caches: only with the admin key (X-API-Key)."""


class MetricsSummary(msgspec.Struct):
    total_requests: int
    cache_hits: int
    cache_misses: int
    avg_latency: float
    errors: int
    cache_hit_rate: float
    hits_by_level: dict[str, int]
    rate_limited: int


class CacheCleared(msgspec.Struct):
    epoch: int
    cleared: dict[str, int | None]
    """Entries removed per level; null for a level that could not be reached (it is skipped by the new epoch anyway)."""


class DocumentList(msgspec.Struct):
    documents: list[DocumentInfo]
    count: int
    chunks: int
    corpus_version: str


class IngestOut(msgspec.Struct):
    doc_id: str
    source: str
    status: Literal["added", "replaced", "unchanged", "refused"]
    chunks: int
    reason: str | None
    corpus_version: str


class Deleted(msgspec.Struct):
    doc_id: str
    deleted: bool
    corpus_version: str
