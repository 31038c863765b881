"""Schema of the API config file (``/etc/kuberag/config.yaml``).

The operator renders it from a RagService; the API loads it at start and re-reads it when it
changes. Field names mirror the RagService spec (camelCase); unknown keys are refused.
Everything is per pod: the operator has already divided whatever needs dividing.

Live (re-read without restart): ``rateLimit``, ``cache``. Static (a change rolls the pods):
``providers``, ``corpus``, ``retrieval``.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import msgspec
import yaml

from kuberag_contract import API_VERSION, CONFIG_KIND

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Threshold = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]

KeySource = Literal["auto", "userId", "apiKey", "ip"]
LimitScope = Literal["perReplica", "shared"]


class _Struct(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True, frozen=True):
    pass


class RateLimit(_Struct):
    """Per-client limit: a token bucket of ``burst`` tokens refilled at ``requestsPerMinute``."""

    requests_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 60
    burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10
    # auto: the body's user_id, else the API key, else the client IP.
    key_source: KeySource = "auto"
    scope: LimitScope = "perReplica"
    # Optional limit over all clients of this pod (the operator divides a service-wide total).
    total_requests_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    enabled: bool = True
    # LLM tokens per client (prompt + completion), reserved before each LLM call and settled with
    # the real usage after; None: no token limit. tokenBurst (default: tokensPerMinute) is the bucket.
    tokens_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None
    token_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None


class L1Cache(_Struct):
    max_entries: NonNegativeInt = 10_000
    ttl_seconds: PositiveInt = 300


class L2Cache(_Struct):
    enabled: bool = True
    ttl_seconds: PositiveInt = 3600


class L3Cache(_Struct):
    enabled: bool = True
    max_entries: NonNegativeInt = 10_000
    ttl_seconds: PositiveInt = 3600
    # Cosine similarity of question embeddings; higher is stricter. Unset: the embedding model's
    # calibrated default (all-MiniLM-L6-v2 0.95, multilingual-e5-small 0.96: measured on antonym
    # and near-duplicate question pairs, see the README).
    threshold: Threshold | None = None


class Cache(_Struct):
    l1: L1Cache = msgspec.field(default_factory=L1Cache)
    l2: L2Cache = msgspec.field(default_factory=L2Cache)
    l3: L3Cache = msgspec.field(default_factory=L3Cache)


class Endpoint(_Struct):
    """An OpenAI-compatible endpoint (or Weaviate URL). The API key comes from the env."""

    url: str
    model: str | None = None


class ModelPrice(_Struct):
    """Price of 1,000 tokens of a model, in whatever currency the operator of the service uses."""

    prompt_per_1k: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)] = msgspec.field(default=0.0, name="promptPer1k")
    completion_per_1k: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)] = msgspec.field(
        default=0.0, name="completionPer1k")


class LLMTimeouts(_Struct):
    connect_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=60.0)] = 5.0
    # Until the first streamed token (and between tokens); a whole answer when not streaming.
    first_token_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=600.0)] = 20.0
    # One answer, retries and backoff included.
    total_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=1800.0)] = 60.0


class LLMEndpoint(_Struct):
    """An OpenAI-compatible chat endpoint and how to survive it. The API key comes from the env."""

    url: str
    model: str | None = None
    # Completion tokens asked for (and reserved against token limits).
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=131_072)] = 512
    # The model's context window: passages that do not fit are dropped, lowest ranked first.
    context_tokens: Annotated[int, msgspec.Meta(ge=256, le=10_000_000)] = 8192
    # Retries of one call on 429, 5xx, timeouts and connection errors (Retry-After honoured).
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    timeouts: LLMTimeouts = msgspec.field(default_factory=LLMTimeouts)
    # Consecutive failed calls that open the circuit breaker, and how long it stays open.
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    breaker_reset_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 30.0
    # Prices by model name (the response's model, else the configured one): the cost counters.
    prices: dict[str, ModelPrice] = msgspec.field(default_factory=dict)


class Providers(_Struct):
    # None: the embedded defaults (extractive answers, local embedding model, in-process store).
    llm: LLMEndpoint | None = None
    embeddings: Endpoint | None = None
    vector_store: Endpoint | None = None


class Corpus(_Struct):
    # Directory every replica indexes at start (read-only). None: nothing preloaded.
    path: str | None = None


EmbeddingModel = Literal["multilingual-e5-small", "all-MiniLM-L6-v2"]


class Retrieval(_Struct):
    top_k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    chunk_size: Annotated[int, msgspec.Meta(ge=100, le=8000)] = 800
    chunk_overlap: Annotated[int, msgspec.Meta(ge=0, le=4000)] = 120
    # The local embedding model (when providers.embeddings is unset); a change re-embeds the index.
    embedding_model: EmbeddingModel = "multilingual-e5-small"


class ApiConfig(_Struct):
    api_version: Literal["kuberag.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["ApiConfig"] = CONFIG_KIND  # type: ignore[assignment]
    rate_limit: RateLimit = msgspec.field(default_factory=RateLimit)
    cache: Cache = msgspec.field(default_factory=Cache)
    providers: Providers = msgspec.field(default_factory=Providers)
    corpus: Corpus = msgspec.field(default_factory=Corpus)
    retrieval: Retrieval = msgspec.field(default_factory=Retrieval)

    def __post_init__(self) -> None:
        if self.retrieval.chunk_overlap >= self.retrieval.chunk_size:
            raise msgspec.ValidationError("retrieval.chunkOverlap must be smaller than retrieval.chunkSize")


STATIC_SECTIONS = ("providers", "corpus", "retrieval")


class ConfigError(ValueError):
    """The config file is not valid; the message names the field."""


def parse_config(text: str | bytes) -> ApiConfig:
    """Parse and validate a config file's text. Raises ConfigError naming what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping at the top level")
    try:
        return msgspec.convert(data, ApiConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def load_config(path: str) -> ApiConfig:
    with open(path, "rb") as f:
        return parse_config(f.read())


def to_dict(config: ApiConfig) -> dict:
    return msgspec.to_builtins(config)


def render_config(config: ApiConfig) -> str:
    """The canonical YAML text of a config (stable key order, so its hash is stable)."""
    return yaml.safe_dump(to_dict(config), sort_keys=True, default_flow_style=False)


def config_hash(text: str | bytes) -> str:
    """sha256 of the file's bytes (status.configHash and the API's metric label)."""
    if isinstance(text, str):
        text = text.encode()
    return hashlib.sha256(text).hexdigest()


def static_config_hash(config: ApiConfig) -> str:
    """sha256 of the static sections only: the pod-template annotation that rolls pods."""
    d = to_dict(config)
    static = {k: d[k] for k in ("providers", "corpus", "retrieval")}
    return config_hash(yaml.safe_dump(static, sort_keys=True))
