"""The one source of the RagService CustomResourceDefinition.

``make manifests`` writes ``manifests/crd/bases/kuberag.io_ragservices.yaml`` from
``custom_resource_definition()``; a unit test fails when the file drifts. Defaults that overlap
the API config file come from ``kuberag_contract.config`` so the two never disagree, and
``with_defaults()`` applies the schema's defaults the way the API server does, so the operator
and its unit tests see the same fully-defaulted spec a real cluster stores.
"""

from __future__ import annotations

import copy
import functools
import sys
from typing import Any, get_args

import yaml
from kuberag_contract import CLIENT_KEYS_FILENAME, GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from kuberag_contract.config import (
    EmbeddingModel,
    L1Cache,
    L2Cache,
    L3Cache,
    LLMEndpoint,
    RateLimit,
    Retrieval,
    VectorStoreTimeouts,
)

from kuberag_operator.names import name_rules

DEFAULT_IMAGE = "ghcr.io/kuberag/kuberag:0.1.0"
DEFAULT_REDIS_IMAGE = "redis:7.4-alpine"
DEFAULT_REDIS_MAXMEMORY = "64mb"
DEFAULT_SECRET_KEY = "apiKey"
# Earlier names of keySource clientKey: accepted, written to the config as clientKey.
DEPRECATED_KEY_SOURCES = ("auto", "apiKey")

_RATE = RateLimit()
_L1, _L2, _L3 = L1Cache(), L2Cache(), L3Cache()
_RETRIEVAL = Retrieval()
_LLM = LLMEndpoint(url="")
_STORE_TIMEOUTS = VectorStoreTimeouts()


def _int(minimum: int | None = None, maximum: int | None = None, default: int | None = None, fmt: str = "int32",
         description: str | None = None) -> dict:
    s: dict[str, Any] = {"type": "integer", "format": fmt}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    if default is not None:
        s["default"] = default
    if description:
        s["description"] = description
    return s


def _str(description: str | None = None, default: str | None = None, max_length: int = 253, **extra: Any) -> dict:
    s: dict[str, Any] = {"type": "string", "maxLength": max_length, **extra}
    if default is not None:
        s["default"] = default
    if description:
        s["description"] = description
    return s


def _obj(properties: dict, description: str | None = None, required: list[str] | None = None,
         default: dict | None = None, rules: list[dict] | None = None) -> dict:
    s: dict[str, Any] = {"type": "object", "properties": properties}
    if description:
        s["description"] = description
    if required:
        s["required"] = required
    if default is not None:
        s["default"] = default
    if rules:
        s["x-kubernetes-validations"] = rules
    return s


def _bool(default: bool, description: str | None = None) -> dict:
    s: dict[str, Any] = {"type": "boolean", "default": default}
    if description:
        s["description"] = description
    return s


# Every string that ends up in a child is checked here, so a bad spec is refused at admission
# with the RagService's field in the message (never as an apply error about a Deployment's field).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
NO_SPACE = r"^\S+$"
# resource.Quantity's own grammar (as controller-gen writes it), without the sign: no negative resources.
QUANTITY = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")


def _name_ref(description: str) -> dict:
    return _str(description, max_length=253, minLength=1, pattern=DNS_SUBDOMAIN)


def _secret_key_ref(description: str, default_key: str = DEFAULT_SECRET_KEY) -> dict:
    return _obj(
        {
            "name": _name_ref("Name of the Secret (same namespace)."),
            "key": _str("Key inside the Secret.", default=default_key, max_length=253, minLength=1,
                        pattern=SECRET_KEY),
        },
        description=description,
        required=["name"],
    )


_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
             "minimum": 0, "maxLength": 32, "pattern": QUANTITY}


def _resources(field: str, description: str, default: dict) -> dict:
    names = ", ".join(RESOURCE_NAMES)

    def quantities(which: str) -> dict:
        return {"type": "object", "additionalProperties": _QUANTITY, "maxProperties": 8,
                "x-kubernetes-validations": [{
                    "rule": f"self.all(k, k in {list(RESOURCE_NAMES)} || k.startsWith('hugepages-') || k.contains('/'))",
                    "message": f"{field}.{which}: resource names are {names}, hugepages-<size> "
                               "or a domain-prefixed extended resource"}]}

    schema = _obj({"limits": quantities("limits"), "requests": quantities("requests")},
                  description=description, default=default)
    # What the API server would refuse at apply time, about the Deployment's field instead of ours.
    schema["x-kubernetes-validations"] = [{
        "rule": "!has(self.requests) || !has(self.limits) || ['cpu', 'memory', 'ephemeral-storage'].all(k, "
                "!(k in self.requests) || !(k in self.limits) || "
                "!isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k])) || "
                "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
        "message": f"{field}: each request must be less than or equal to its limit",
    }]
    return schema


def _endpoint(what: str) -> dict:
    return _obj(
        {
            "url": _str(f"Base URL of the {what} (http:// or https://).", max_length=2048,
                        pattern=r"^https?://[^\s/]+\S*$"),
            "model": _str("Model name.", max_length=253, minLength=1),
            "apiKeySecretRef": _secret_key_ref(f"Secret holding the {what}'s API key."),
        },
        description=f"The {what}. Absent: the embedded offline default.",
        required=["url"],
    )


def _number(minimum: float, maximum: float, description: str, *, exclusive_minimum: bool = False) -> dict:
    s: dict[str, Any] = {"type": "number", "minimum": minimum, "maximum": maximum, "description": description}
    if exclusive_minimum:
        s["exclusiveMinimum"] = True
    return s


def _llm_endpoint() -> dict:
    """The chat endpoint and how the API survives it (timeouts, retries, breaker, context budget, prices)."""
    schema = _endpoint("OpenAI-compatible chat endpoint")
    schema["properties"].update({
        "maxTokens": _int(1, 131_072, _LLM.max_tokens, description="Completion tokens asked for (and reserved "
                                                                   "against token limits)."),
        "contextTokens": _int(256, 10_000_000, _LLM.context_tokens, description=(
            "The model's context window: passages that do not fit are dropped, lowest ranked first.")),
        "maxRetries": _int(0, 10, _LLM.max_retries, description="Retries on 429, 5xx, timeouts and connection "
                                                                "errors (Retry-After honoured)."),
        "breakerFailures": _int(1, 1000, _LLM.breaker_failures, description="Consecutive failed calls that open "
                                                                             "the circuit breaker."),
        "breakerResetSeconds": _number(0, 3600, "How long the breaker stays open.", exclusive_minimum=True),
        "timeouts": _obj({
            "connectSeconds": _number(0, 60, "Connect timeout.", exclusive_minimum=True),
            "firstTokenSeconds": _number(0, 600, "Until the first token (between tokens when streaming).",
                                         exclusive_minimum=True),
            "totalSeconds": _number(0, 1800, "One answer, retries and backoff included.", exclusive_minimum=True),
        }),
        "prices": {
            "type": "object", "maxProperties": 64,
            "description": "Price per 1,000 tokens by model name (the response's model, else the configured one), "
                           "for the estimated cost counters.",
            "additionalProperties": _obj({
                "promptPer1k": _number(0, 1000, "Price of 1,000 prompt tokens."),
                "completionPer1k": _number(0, 1000, "Price of 1,000 completion tokens."),
            }),
            "x-kubernetes-validations": [{"rule": "self.all(k, size(k) <= 253)",
                                          "message": "spec.llm.prices: model names are at most 253 characters"}],
        },
    })
    return schema
def _seconds(maximum: float, default: float, description: str) -> dict:
    return {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": maximum, "default": default,
            "description": description}


def _vector_store() -> dict:
    t = _STORE_TIMEOUTS
    return _obj(
        {
            "url": _str("http(s)://host:port of Weaviate's REST API.", max_length=2048,
                        pattern=r"^https?://[^/?#\s]+/?$"),
            "grpcHost": _str("gRPC host (default: the url's host).", max_length=253, minLength=1,
                             pattern=r"^[A-Za-z0-9.:\[\]-]+$"),
            "grpcPort": _int(1, 65535, 50051, description="gRPC port (searches and batch writes)."),
            "grpcSecure": {"type": "boolean", "description": "TLS on gRPC (default: true when the url is https)."},
            "timeouts": _obj({
                "initSeconds": _seconds(300, t.init_seconds, "Connecting and the start-up checks."),
                "querySeconds": _seconds(300, t.query_seconds, "One search; a slower one is answered 503."),
                "insertSeconds": _seconds(3600, t.insert_seconds, "One batch write."),
            }, default={}),
            "pollSeconds": {"type": "number", "minimum": 0.05, "maximum": 1.0, "default": 0.5,
                            "description": "How often each pod reads the shared corpus version and cache epoch."},
            "apiKeySecretRef": _secret_key_ref("Secret holding Weaviate's API key."),
        },
        description="A shared Weaviate: the corpus is indexed once by a Job and every replica queries it. "
                    "Absent: each pod keeps its own embedded index.",
        required=["url"],
    )


def _git_source() -> dict:
    return _obj(
        {
            "url": _str("Repository to index: https://, http://, ssh://, git:// or file://.", max_length=2048,
                        minLength=1, pattern=r"^(https?|ssh|git|file)://[^\s]+$"),
            "ref": _str("Branch, tag or commit id.", default="main", max_length=255, minLength=1,
                        pattern=r"^[A-Za-z0-9][-A-Za-z0-9._/]*$"),
            "path": _str("Directory of the documents inside the repository (default: all of it).", default="",
                         max_length=1024, pattern=r"^[^/\s][^\s]*$|^$"),
            "schedule": _str("When the CronJob checks the ref for a new commit (cron syntax).", default="*/10 * * * *",
                             max_length=64, pattern=r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
                                                    r"|(\S+\s+){4}\S+)$"),
            "secretRef": _obj(
                {
                    "name": _name_ref("Name of the Secret (same namespace)."),
                    "usernameKey": _str("Key holding the username.", default="username", max_length=253,
                                        minLength=1, pattern=SECRET_KEY),
                    "passwordKey": _str("Key holding the password or token.", default="password", max_length=253,
                                        minLength=1, pattern=SECRET_KEY),
                },
                description="Secret with HTTPS credentials (a token as the password).",
                required=["name"],
            ),
        },
        description="A Git repository: indexed by a Job, then re-indexed by a CronJob when the ref's commit "
                    "changes. Needs spec.vectorStore.",
        required=["url"],
        rules=[{"rule": "!self.path.matches('(^|/)[.][.]?(/|$)')",
                "message": "spec.corpus.git.path must stay inside the repository (no '.' or '..' parts)",
                "fieldPath": ".path"}],
    )


def _materialize_defaults(schema: dict) -> dict:
    """Expand each ``default: {}`` into the object its nested defaults make.

    The API server checks a default against the CEL rules as written (without nested defaulting),
    so an empty default would fail rules that read fields the nested defaults provide.
    """
    for prop in schema.get("properties", {}).values():
        _materialize_defaults(prop)
    if schema.get("default") == {} and schema.get("type") == "object":
        schema["default"] = with_defaults({**schema, "default": None}, {})
    return schema


def spec_schema() -> dict:
    """OpenAPI v3 schema of ``spec``: defaults, bounds, and CEL rules whose messages name the field."""
    return _materialize_defaults(_spec_schema())


def _spec_schema() -> dict:
    return _obj(
        {
            "image": _str("Image of the API container (entrypoint `kuberag serve`).", default=DEFAULT_IMAGE, max_length=512,
                          minLength=1, pattern=NO_SPACE),
            "imagePullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"], "default": "IfNotPresent"},
            "replicas": _int(0, 100, 1, description="Pod count when autoscaling is not set (the scale subresource's field)."),
            "autoscaling": _obj(
                {
                    "minReplicas": _int(1, 100, 1),
                    "maxReplicas": _int(1, 100),
                    "targetCPUUtilizationPercentage": _int(1, 100, 80),
                },
                description="Run a HorizontalPodAutoscaler; the operator then never writes the Deployment's replicas.",
                required=["maxReplicas"],
                rules=[{
                    "rule": "self.minReplicas <= self.maxReplicas",
                    "message": "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
                    "fieldPath": ".minReplicas",
                }],
            ),
            "rateLimit": _obj(
                {
                    "enabled": _bool(_RATE.enabled),
                    "requestsPerMinute": _int(1, 1_000_000, _RATE.requests_per_minute, description="Per client."),
                    "burst": _int(1, 1_000_000, _RATE.burst, description="Token-bucket size per client."),
                    "keySource": {"type": "string", "enum": ["clientKey", "ip", *DEPRECATED_KEY_SOURCES, "userId"],
                                  "default": _RATE.key_source,
                                  "description": "clientKey: a verified client (its key is in spec.clientKeysSecretRef) "
                                                 "is limited as that client, every other caller by its IP address. ip: "
                                                 "every caller by its IP address. auto and apiKey are old names of "
                                                 "clientKey; userId was removed (an unverified user_id lifted the limit)."},
                    "perUser": _obj(
                        {"requestsPerMinute": _int(1, 1_000_000), "burst": _int(1, 1_000_000)},
                        description="Optional bucket of each body user_id inside its caller's budget (never instead of it).",
                        required=["requestsPerMinute", "burst"],
                    ),
                    "trustedProxies": {
                        "type": "array", "maxItems": 64,
                        "description": "Addresses or CIDRs of the proxies (an ingress) whose X-Forwarded-For gives the "
                                       "client IP; empty: the TCP peer is the client.",
                        "items": {"type": "string", "maxLength": 64, "x-kubernetes-validations": [{
                            "rule": "isIP(self) || isCIDR(self)",
                            "message": "spec.rateLimit.trustedProxies: each entry must be an IP address or a CIDR network",
                        }]},
                    },
                    "scope": {"type": "string", "enum": ["perReplica", "shared"], "default": _RATE.scope,
                              "description": "perReplica: each pod limits on its own (a client spread over N pods may "
                                             "get up to N times the limit). shared: exact across pods through a shared Redis."},
                    "totalRequestsPerMinute": _int(1, 100_000_000, description=(
                        "Optional service-wide limit over all clients; the operator divides it by the current "
                        "replica count (rounding up, at least 1) into each pod's config.")),
                    "tokensPerMinute": _int(1, 1_000_000_000, description=(
                        "LLM tokens (prompt + completion) per client per minute, reserved before each LLM call "
                        "and settled with the real usage; unset: no token limit.")),
                    "tokenBurst": _int(1, 1_000_000_000, description="Token-bucket size per client (default: "
                                                                     "tokensPerMinute)."),
                    "redis": _obj(
                        {
                            "url": _str("redis:// (or rediss://) URL of the shared limiter Redis.", max_length=2048,
                                        pattern=r"^rediss?://\S+$"),
                            "secretRef": _secret_key_ref("Secret holding the shared limiter Redis URL."),
                        },
                        description="The shared Redis for scope shared.",
                        rules=[{"rule": "!(has(self.url) && has(self.secretRef))",
                                "message": "spec.rateLimit.redis: set either url or secretRef, not both"}],
                    ),
                },
                default={},
                rules=[{
                    "rule": "self.scope != 'shared' || (has(self.redis) && (has(self.redis.url) || has(self.redis.secretRef)))",
                    "message": "spec.rateLimit.scope 'shared' requires spec.rateLimit.redis.url or spec.rateLimit.redis.secretRef",
                    "fieldPath": ".scope",
                }, {
                    "rule": "self.keySource != 'userId'",
                    "message": "spec.rateLimit.keySource 'userId' was removed: an unverified user_id could lift any limit; "
                               "use clientKey (client API keys from spec.clientKeysSecretRef) and spec.rateLimit.perUser "
                               "to divide a caller's budget by user_id",
                    "fieldPath": ".keySource",
                }],
            ),
            "cache": _obj(
                {
                    "l1": _obj({"maxEntries": _int(0, 10_000_000, _L1.max_entries),
                                "ttlSeconds": _int(1, 31_536_000, _L1.ttl_seconds)}, default={}),
                    "l2": _obj({"enabled": _bool(_L2.enabled),
                                "ttlSeconds": _int(1, 31_536_000, _L2.ttl_seconds)}, default={}),
                    "l3": _obj(
                        {
                            "enabled": _bool(_L3.enabled),
                            "maxEntries": _int(0, 10_000_000, _L3.max_entries),
                            "ttlSeconds": _int(1, 31_536_000, _L3.ttl_seconds),
                            "threshold": {"type": "number",
                                          "description": "Cosine similarity of question embeddings, in (0,1]; higher is "
                                                         "stricter. Unset: the embedding model's calibrated default "
                                                         "(all-MiniLM-L6-v2 0.95, multilingual-e5-small 0.96)."},
                        },
                        default={},
                        rules=[{"rule": "!has(self.threshold) || (self.threshold > 0.0 && self.threshold <= 1.0)",
                                "message": "spec.cache.l3.threshold must be in (0,1] (cosine similarity, higher is stricter)",
                                "fieldPath": ".threshold"}],
                    ),
                    "redis": _obj(
                        {
                            "image": _str("Image of the Redis sidecar.", default=DEFAULT_REDIS_IMAGE, max_length=512,
                                          minLength=1, pattern=NO_SPACE),
                            "maxMemory": _str("Redis maxmemory (e.g. 64mb, 1gb).", default=DEFAULT_REDIS_MAXMEMORY,
                                              max_length=16, pattern="^[0-9]+(b|kb|mb|gb|k|m|g)?$"),
                            "resources": _resources("spec.cache.redis.resources", "Resources of the Redis sidecar.",
                                                    {"requests": {"cpu": "10m", "memory": "32Mi"},
                                                     "limits": {"memory": "128Mi"}}),
                        },
                        default={},
                        description="The L2 Redis sidecar.",
                    ),
                },
                default={},
            ),
            "corpus": _obj(
                {
                    "configMap": _obj({"name": _name_ref("ConfigMap holding the documents.")}, required=["name"]),
                    "volume": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                               "description": "A Kubernetes volume source (e.g. persistentVolumeClaim) holding the documents.",
                               # One source, e.g. {persistentVolumeClaim: {claimName: docs}}; the rest is
                               # checked when the Deployment is applied (reported as spec.corpus).
                               "minProperties": 1, "maxProperties": 1},
                    "git": _git_source(),
                },
                description="The read-only source of the documents: every replica indexes it at start, or, with "
                            "spec.vectorStore, the indexing Job indexes it once into the shared store.",
                rules=[{"rule": "[has(self.configMap), has(self.volume), has(self.git)].filter(x, x).size() <= 1",
                        "message": "spec.corpus: set one of configMap, volume or git"}],
            ),
            "indexing": _obj(
                {
                    "shards": _int(1, 100, 1, description=(
                        "Pods of the indexing Job (an Indexed Job: each indexes its share of the documents; the "
                        "new index serves once every shard has finished). Needs spec.vectorStore.")),
                    "backoffLimitPerIndex": _int(0, 10, 2, description="Retries of a failed shard before the Job "
                                                                       "fails (Indexed=False, IndexingFailed)."),
                    "resources": _resources("spec.indexing.resources", "Resources of each indexing pod (it embeds).",
                                            {"requests": {"cpu": "500m", "memory": "768Mi"},
                                             "limits": {"memory": "2Gi"}}),
                },
                default={},
                description="The indexing Job that builds the shared index (with spec.vectorStore).",
            ),
            "retrieval": _obj(
                {
                    "topK": _int(1, 50, _RETRIEVAL.top_k),
                    "chunkSize": _int(100, 8000, _RETRIEVAL.chunk_size),
                    "chunkOverlap": _int(0, 4000, _RETRIEVAL.chunk_overlap),
                    "embeddingModel": {"type": "string", "enum": list(get_args(EmbeddingModel)),
                                       "default": _RETRIEVAL.embedding_model,
                                       "description": "The local embedding model (when spec.embeddings is unset); "
                                                      "a change re-embeds the index."},
                },
                default={},
                rules=[{"rule": "self.chunkOverlap < self.chunkSize",
                        "message": "spec.retrieval.chunkOverlap must be smaller than spec.retrieval.chunkSize",
                        "fieldPath": ".chunkOverlap"}],
            ),
            "llm": _llm_endpoint(),
            "embeddings": _endpoint("OpenAI-compatible embeddings endpoint"),
            "vectorStore": _vector_store(),
            "adminKeySecretRef": _secret_key_ref("Secret holding the admin API key (X-API-Key) of DELETE /cache and ingestion."),
            "clientKeysSecretRef": _secret_key_ref(
                "Secret holding the client-keys file (kind: ClientKeys): each client's name, API key and optional "
                "rate limit. Mounted into the pods; edits apply without a restart.", default_key=CLIENT_KEYS_FILENAME),
            "resources": _resources("spec.resources", "Resources of the API container.",
                                    # Measured: kuberag serve with multilingual-e5-small holds ~560 MiB
                                    # (peak ~600 MiB while it builds the model); the request covers it.
                                    {"requests": {"cpu": "100m", "memory": "640Mi"}, "limits": {"memory": "1Gi"}}),
            "monitoring": _obj(
                {"serviceMonitor": _obj(
                    {"enabled": _bool(False), "interval": _str(default="30s", max_length=16, pattern="^[0-9]+(ms|s|m|h)$")},
                    default={},
                    description="A prometheus-operator ServiceMonitor for the metrics port (when its CRD is installed).",
                )},
                default={},
            ),
            "networkPolicy": _obj({"enabled": _bool(False)}, default={},
                                  description="Admit only same-namespace pods to the http port and anyone to the metrics port."),
            "ingestion": _obj({"enabled": _bool(False, "Allow document ingestion through the API (admin).")}, default={}),
        },
        default={},
        rules=[{
            "rule": "!self.ingestion.enabled || has(self.vectorStore) || (!has(self.autoscaling) && self.replicas <= 1)",
            "message": "spec.ingestion.enabled with more than one replica or autoscaling requires a shared vector store "
                       "(spec.vectorStore): replicas would index different documents",
            "fieldPath": ".ingestion.enabled",
        }, {
            "rule": "!has(self.corpus) || !has(self.corpus.git) || has(self.vectorStore)",
            "message": "spec.corpus.git requires spec.vectorStore: a Git source is indexed by a Job into the shared store",
            "fieldPath": ".corpus.git",
        }, {
            "rule": "self.indexing.shards == 1 || has(self.vectorStore)",
            "message": "spec.indexing.shards applies to the indexing Job of a shared store (spec.vectorStore)",
            "fieldPath": ".indexing.shards",
        }, {
            "rule": "self.indexing.shards == 1 || !has(self.corpus) || !has(self.corpus.git)",
            "message": "spec.indexing.shards must be 1 with a Git source: every document must come from one commit",
            "fieldPath": ".indexing.shards",
        }],
    )


def status_schema() -> dict:
    condition = _obj(
        {
            "type": _str(max_length=316),
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": _str(max_length=1024),
            "message": _str(max_length=32768),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": _int(0, fmt="int64"),
        },
        required=["type", "status", "lastTransitionTime"],
    )
    return _obj(
        {
            "observedGeneration": _int(fmt="int64"),
            "replicas": _int(),
            "readyReplicas": _int(),
            "selector": _str("Label selector of the pods (scale subresource).", max_length=1024),
            "endpoint": _str("In-cluster URL of the API.", max_length=1024),
            "configHash": _str("sha256 of the config file the pods run with.", max_length=64),
            "indexing": _obj(
                {
                    "job": _str("The indexing Job.", max_length=253),
                    "build": _str("The index version it builds.", max_length=64),
                    "indexHash": _str("Hash of what it indexes (corpus source, embeddings, chunking).", max_length=64),
                    "shards": _int(0),
                    "completedShards": _int(0),
                    "state": {"type": "string", "enum": ["Indexing", "Indexed", "Failed"]},
                    "lastIndexedBuild": _str("The last index version completed (the one the pods serve).",
                                             max_length=64),
                    "lastIndexedHash": _str(max_length=64),
                    "lastIndexedTime": {"type": "string", "format": "date-time"},
                    "served": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                               "description": "The embeddings and chunking of the completed index: the pods run "
                                              "with these until a new index is complete."},
                },
                description="The shared index (spec.vectorStore): the indexing Job and the last completed version.",
            ),
            "conditions": {"type": "array", "items": condition, "x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["type"]},
        }
    )


def custom_resource_definition() -> dict:
    """The CustomResourceDefinition of RagService, as a dict ready to apply or dump."""
    schema = _obj(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        description="A retrieval-augmented question-answering API run by the kuberag operator.",
        rules=name_rules() + [
            {"rule": "!has(self.spec.corpus) || !has(self.spec.corpus.git) || size(self.metadata.name) <= 46",
             "message": "metadata.name must be at most 46 characters with spec.corpus.git: its CronJob NAME-index "
                        "must fit the 52 characters Kubernetes allows a CronJob"},
            # An Indexed Job's pods are named after it: NAME-index-<shard> must be a 63-character label.
            {"rule": "size(self.metadata.name) + 7 + size(string(self.spec.indexing.shards - 1)) <= 63",
             "message": "metadata.name is too long for spec.indexing.shards: the shards' host names "
                        "NAME-index-N (N the shard) must fit 63 characters"},
        ],
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR,
                      "shortNames": list(SHORT_NAMES)},
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                              "labelSelectorPath": ".status.selector"},
                },
                "additionalPrinterColumns": [
                    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
                    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
                    {"name": "Available", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Available\")].status"},
                    {"name": "Indexed", "type": "string", "priority": 1,
                     "jsonPath": ".status.conditions[?(@.type==\"Indexed\")].status"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    }


def with_defaults(schema: dict, value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server's structural defaulting does.

    The operator applies them itself so a spec read from a cluster that runs an older CRD, or one a
    unit test writes by hand, behaves exactly like a freshly defaulted one.
    """
    if isinstance(value, dict) and schema.get("type") == "object":
        out = dict(value)
        for key, prop in schema.get("properties", {}).items():
            if key not in out and "default" in prop:
                out[key] = copy.deepcopy(prop["default"])
            if key in out:
                out[key] = with_defaults(prop, out[key])
        return out
    return value


@functools.cache
def _defaulting_schema() -> dict:
    return spec_schema()  # built once (twice per pass was 6% of its CPU); only read by with_defaults


def defaulted_spec(spec: dict | None) -> dict:
    return with_defaults(_defaulting_schema(), spec or {})


def render_yaml() -> str:
    header = "# Generated by `make manifests` from operator/kuberag_operator/crd.py: do not edit.\n"
    return header + yaml.safe_dump(custom_resource_definition(), sort_keys=False, default_flow_style=False, width=120)


def main(argv: list[str] | None = None) -> int:
    """``python -m kuberag_operator.crd [PATH]``: write the CRD YAML (stdout without PATH)."""
    argv = sys.argv[1:] if argv is None else argv
    text = render_yaml()
    if argv:
        with open(argv[0], "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
