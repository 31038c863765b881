"""Request and response bodies of the HTTP API (msgspec Structs; the OpenAPI document comes from them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from kuberag_contract.config import build_decoding_info

from kuberag_api.cache.entry import CachedSource
from kuberag_api.rag.types import DocumentInfo

QUESTION_MAX_CHARS = 500
# What a question is trimmed of: ASCII whitespace (the same set in the OpenAPI pattern below, so
# the document and the server agree on every string; str.strip() alone would also drop \x1c-\x1f).
QUESTION_SPACE = " \t\n\r\f\v"
_WS = "[ \\t\\n\\r\\f\\v]"
_NON_WS = "[^ \\t\\n\\r\\f\\v]"
QUESTION_PATTERN = f"^{_WS}*{_NON_WS}(?:[\\s\\S]{{0,{QUESTION_MAX_CHARS - 2}}}{_NON_WS})?{_WS}*$"
QUESTION_MAX_RAW_CHARS = 2000


class QueryRequest(msgspec.Struct, forbid_unknown_fields=True):
    question: Annotated[str, msgspec.Meta(
        min_length=1, max_length=QUESTION_MAX_RAW_CHARS,
        description=f"1..{QUESTION_MAX_CHARS} characters after trimming whitespace",
        extra_json_schema={"pattern": QUESTION_PATTERN})]
    user_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        stripped = self.question.strip(QUESTION_SPACE)
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


class FieldError(msgspec.Struct):
    field: str
    message: str


class OpenAIErrorBody(msgspec.Struct):
    """OpenAI's error object, added to the problems of the /v1 routes so OpenAI clients show it."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class Problem(msgspec.Struct, omit_defaults=True):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    """What is wrong, in words a client can act on."""
    request_id: str | None = None
    """The request's id (also the X-Request-ID response header): quote it when reporting a problem."""
    errors: list[FieldError] | None = None
    """The fields that are wrong (400, 415, 422)."""
    limit: int | None = None
    """429: the burst of the bucket that refused."""
    retry_after_seconds: int | None = None
    """429: seconds until the next request can be allowed (also Retry-After)."""
    policy: str | None = None
    """429: the limit that refused when it is not the request limit (``tokens``)."""
    tokens_needed: int | None = None
    """429 of the token policy: the tokens this answer would reserve."""
    error: OpenAIErrorBody | None = None
    """On the OpenAI-compatible /v1 routes: the same message as OpenAI's error object."""


_problem_encoder = msgspec.json.Encoder()


def problem(status: int, title: str, detail: str, request_id: str | None, **extra: Any) -> Problem:
    errors = extra.pop("errors", None)
    return Problem(type="about:blank", title=title, status=status, detail=detail, request_id=request_id or None,
                   errors=[FieldError(e["field"], e["message"]) for e in errors] if errors else None, **extra)


def encode_problem(p: Problem) -> bytes:
    return _problem_encoder.encode(p)


build_decoding_info(globals())  # before any thread decodes one (see the function's docstring)
