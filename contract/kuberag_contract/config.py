"""Schema of the API config file (``/etc/kuberag/config.yaml``).

The operator renders it from a RagService; the API loads it at start and re-reads it when it
changes. Field names mirror the RagService spec (camelCase); unknown keys are refused.
Everything is per pod: the operator has already divided whatever needs dividing.

Live (re-read without restart): ``rateLimit``, ``cache``. Static (a change rolls the pods):
``providers``, ``corpus``, ``retrieval``.

The client-keys file (``ClientKeys``, from a Secret the operator mounts) names the verified
callers: each API key names a client and optionally its own limits. It is live as well.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Annotated, Literal

import msgspec
import yaml

from kuberag_contract import API_VERSION, CLIENT_KEYS_KIND, CONFIG_KIND

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
Threshold = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]

# clientKey: a verified client (its API key is in the client-keys file) is limited as that client;
# every other caller by its IP. ip: every caller by its IP (a key must still be valid).
KeySource = Literal["clientKey", "ip"]
LimitScope = Literal["perReplica", "shared"]


class _Struct(msgspec.Struct, forbid_unknown_fields=True, rename="camel", kw_only=True, frozen=True):
    pass


RequestsPerMinute = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Burst = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class Limit(_Struct):
    """A token bucket of ``burst`` tokens refilled at ``requestsPerMinute``."""

    requests_per_minute: RequestsPerMinute
    burst: Burst


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR (``10.1.2.3``, ``10.0.0.0/8``, ``fd00::/8``); ValueError naming it."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR network") from None


class RateLimit(_Struct):
    """Per-caller limit: a token bucket of ``burst`` tokens refilled at ``requestsPerMinute``.

    The caller is a verified client (its key is in the client-keys file, which may give it its own
    limit) or, for everyone else, the client IP. A body ``user_id`` never lifts a limit: with
    ``perUser`` it gets its own bucket inside its caller's.
    """

    requests_per_minute: RequestsPerMinute = 60
    burst: Burst = 10
    key_source: KeySource = "clientKey"
    scope: LimitScope = "perReplica"
    # Optional limit over all clients of this pod (the operator divides a service-wide total).
    total_requests_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    enabled: bool = True
    # LLM tokens per client (prompt + completion), reserved before each LLM call and settled with
    # the real usage after; None: no token limit. tokenBurst (default: tokensPerMinute) is the bucket.
    tokens_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None
    token_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None
    # Optional bucket of each body user_id, checked inside (never instead of) its caller's bucket.
    per_user: Limit | None = None
    # Direct peers whose X-Forwarded-For is believed (an ingress, a mesh proxy); empty: nobody's.
    trusted_proxies: Annotated[tuple[str, ...], msgspec.Meta(max_length=64)] = ()

    def __post_init__(self) -> None:
        for entry in self.trusted_proxies:
            try:
                parse_network(entry)
            except ValueError as exc:
                raise msgspec.ValidationError(f"rateLimit.trustedProxies: {exc}") from None


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
class VectorStoreTimeouts(_Struct):
    init_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    """Connecting and the start-up checks."""
    query_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    """One search or read; a query that takes longer is answered 503."""
    insert_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 120.0
    """One batch write (ingestion)."""


class VectorStore(_Struct):
    """A shared Weaviate (weaviate-client v4: REST for the schema, gRPC for searches and batches).
    The API key, if the server needs one, comes from the env (``KUBERAG_VECTOR_STORE_API_KEY``)."""

    url: Annotated[str, msgspec.Meta(pattern="^https?://[^/?#]+/?$")]
    """http(s)://host:port of Weaviate's REST API."""
    grpc_host: str | None = None
    """gRPC host; default: the url's host."""
    grpc_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 50051
    grpc_secure: bool | None = None
    """TLS on gRPC; default: true when the url is https."""
    timeouts: VectorStoreTimeouts = msgspec.field(default_factory=VectorStoreTimeouts)
    poll_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=1.0)] = 0.5
    """How often each pod reads the shared corpus version and cache epoch (at least once a second)."""


class Providers(_Struct):
    # None: the embedded defaults (extractive answers, local embedding model, in-process store).
    llm: LLMEndpoint | None = None
    embeddings: Endpoint | None = None
    vector_store: VectorStore | None = None


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


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping: PyYAML keeps the
    last one silently, so a second ``clients:`` appended to a file would drop every client above
    it (and a second ``key:`` would replace a client's key) without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: construct_mapping below names it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice in one mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(what: str, exc: yaml.YAMLError, text: str | bytes, quote: bool) -> str:
    """PyYAML's multi-line message as one line: where (line, column), what is wrong and, when
    ``quote``, the line itself (never for a Secret: the line may hold a key)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem is None:
        return f"{what} is not valid YAML: {' '.join(str(exc).split())}"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    message = f"{what} is not valid YAML{where}: {problem}" + (f" ({context})" if context else "")
    if quote and mark is not None:
        lines = (text.decode("utf-8", "replace") if isinstance(text, bytes) else text).splitlines()
        if mark.line < len(lines) and lines[mark.line].strip():
            message += f": {lines[mark.line].strip()[:120]!r}"
    return message


def _load_yaml(text: str | bytes, what: str, quote: bool = True) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(what, exc, text, quote)) from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply (hundreds of levels; a {what} has a few)") from None


def parse_config(text: str | bytes) -> ApiConfig:
    """Parse and validate config text (absent fields take their defaults). Raises ConfigError
    naming what is wrong. Files go through ``parse_config_file``, which is stricter."""
    data = _load_yaml(text, "config")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config must be a YAML mapping at the top level")
    try:
        return msgspec.convert(data, ApiConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid config: {exc}") from None


def _require_header(data: object, kind: str, what: str) -> dict:
    """A file must be a mapping that starts with its apiVersion and kind: an empty or truncated
    file (a careless write, an editor's partial save) is refused, never read as "all defaults"."""
    if data is None:
        raise ConfigError(f"{what} is empty (expected apiVersion: {API_VERSION}, kind: {kind}, ...)")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a YAML mapping at the top level")
    missing = [k for k in ("apiVersion", "kind") if k not in data]
    if missing:
        raise ConfigError(f"{what} is incomplete: it has no {' and no '.join(missing)} "
                          f"(expected apiVersion: {API_VERSION}, kind: {kind})")
    return data


def parse_config_file(raw: str | bytes, previous: str | bytes | None = None) -> ApiConfig:
    """A config file's content: like ``parse_config``, but an empty file or one without its
    ``apiVersion``/``kind`` header is refused (the operator always writes both), and so is a
    file that leaves out a setting the ``previous`` file had: a truncated write or a partial
    edit never resets settings to their defaults silently (an explicit value, even ``{}`` or
    ``null``, is a deliberate change)."""
    data = _require_header(_load_yaml(raw, "config"), CONFIG_KIND, "config file")
    config = parse_config(raw)
    if previous is not None:
        old = _load_yaml(previous, "previous config")
        dropped = dropped_settings(old, data) if isinstance(old, dict) else []
        if dropped:
            raise ConfigError(
                f"config file is partial: it leaves out {', '.join(dropped[:5])}"
                f"{' and more' if len(dropped) > 5 else ''}, which the current file sets; write "
                "every setting (the operator does), or set it explicitly to change it")
    return config


def dropped_settings(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the keys ``old`` has and ``new`` does not (mappings are walked; a key whose
    new value is not a mapping was replaced, not dropped)."""
    dropped: list[str] = []
    for key, value in old.items():
        name = f"{prefix}{key}"
        if key not in new:
            dropped.append(name)
        elif isinstance(value, dict) and isinstance(new[key], dict):
            dropped += dropped_settings(value, new[key], name + ".")
    return dropped


def load_config(path: str) -> ApiConfig:
    with open(path, "rb") as f:
        return parse_config_file(f.read())


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


# --- the client-keys file ----------------------------------------------------------------------
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MIN_CLIENT_KEY_LENGTH = 16


class ClientKey(_Struct):
    """One verified client: its name (in metrics, logs, the 429 message) and its API key, given
    as the key itself or as the hex sha256 of the key (so the Secret need not hold the key)."""

    name: str
    key: str | None = None
    key_sha256: str | None = None
    # The client's own limit; absent: rateLimit.requestsPerMinute/burst of the config file.
    rate_limit: Limit | None = None

    def __post_init__(self) -> None:
        if not _CLIENT_NAME.match(self.name):
            raise msgspec.ValidationError(
                f"client name {self.name!r} must be 1-63 letters, digits, '.', '_' or '-' (starting and "
                "ending with a letter or digit)")
        if (self.key is None) == (self.key_sha256 is None):
            raise msgspec.ValidationError(f"client {self.name!r}: set exactly one of key and keySha256")
        if self.key is not None and (len(self.key) < MIN_CLIENT_KEY_LENGTH or self.key != self.key.strip()
                                     or not self.key.isprintable() or not self.key.isascii()):
            raise msgspec.ValidationError(
                f"client {self.name!r}: key must be at least {MIN_CLIENT_KEY_LENGTH} printable ASCII characters "
                "without surrounding spaces")
        if self.key_sha256 is not None and not _SHA256.match(self.key_sha256):
            raise msgspec.ValidationError(f"client {self.name!r}: keySha256 must be 64 lowercase hex digits")

    @property
    def digest(self) -> bytes:
        """sha256 of the key: what a presented key is compared with."""
        if self.key_sha256 is not None:
            return bytes.fromhex(self.key_sha256)
        return hashlib.sha256(self.key.encode()).digest()  # type: ignore[union-attr]


class ClientKeys(_Struct):
    api_version: Literal["kuberag.io/v1alpha1"]
    kind: Literal["ClientKeys"]
    clients: Annotated[list[ClientKey], msgspec.Meta(max_length=10_000)] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        names: set[str] = set()
        digests: set[bytes] = set()
        for client in self.clients:
            if client.name in names:
                raise msgspec.ValidationError(f"client name {client.name!r} appears twice")
            if client.digest in digests:
                raise msgspec.ValidationError(f"client {client.name!r} has the same key as another client")
            names.add(client.name)
            digests.add(client.digest)


def parse_client_keys(raw: str | bytes) -> ClientKeys:
    """The client-keys file (``kind: ClientKeys``). Raises ConfigError naming what is wrong."""
    data = _require_header(_load_yaml(raw, "client-keys file", quote=False), CLIENT_KEYS_KIND, "client-keys file")
    try:
        return msgspec.convert(data, ClientKeys)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid client-keys file: {exc}") from None


def build_decoding_info(namespace: dict[str, object]) -> None:
    """Build, now and in this thread, msgspec's decoding info of every Struct in ``namespace``.

    msgspec builds a Struct type's info lazily, at its first decode or convert, and that first
    build is not thread-safe: two threads converting a not-yet-used type at once can crash the
    process (SIGSEGV in msgspec's _core; 16 threads crashed 14-22 runs in 30 on msgspec 0.18.6
    to 0.22.0). It killed the operator, whose reconciles run in kopf's worker threads, at
    random. Called at import (one thread), it leaves threads only the cached info to read.
    """
    for value in list(namespace.values()):
        if isinstance(value, type) and issubclass(value, msgspec.Struct) and value.__module__ == namespace["__name__"]:
            msgspec.json.Decoder(value)


build_decoding_info(globals())
