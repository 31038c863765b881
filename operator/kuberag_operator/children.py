"""``desired_children(ragservice)``: the pure function from a RagService to the objects it owns.

No I/O here: the reconcile loop applies what this returns (server-side apply), unit tests call it
directly. Every child carries the standard ``app.kubernetes.io/*`` labels and a controller owner
reference to the RagService. The pod shape is the pinned operator<->API contract
(``kuberag_contract``): env names, ports, probes, config directory, hardening, Redis sidecar.
"""

from __future__ import annotations

import math
import re
from typing import Any

import kopf
import msgspec
from kuberag_contract import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_STATIC_CONFIG_HASH,
    API_COMMAND,
    APP_NAME,
    CLIENT_KEYS_DIR,
    CLIENT_KEYS_FILENAME,
    CLIENT_KEYS_PATH,
    CONFIG_DIR,
    CONFIG_FILENAME,
    CONFIG_PATH,
    CONTAINER_API,
    CONTAINER_REDIS,
    CORPUS_DIR,
    DATA_DIR,
    DEFAULT_HOST_POD,
    DEFAULT_REDIS_URL,
    ENV_ADMIN_API_KEY,
    ENV_CLIENT_KEYS,
    ENV_CONFIG,
    ENV_DATA_DIR,
    ENV_EMBEDDINGS_API_KEY,
    ENV_HOST,
    ENV_LIMITER_REDIS_URL,
    ENV_LLM_API_KEY,
    ENV_METRICS_PORT,
    ENV_NAMESPACE,
    ENV_PORT,
    ENV_REDIS_URL,
    ENV_SERVICE_NAME,
    ENV_VECTOR_STORE_API_KEY,
    HTTP_PORT,
    INDEX_CONFIG_FILENAME,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    METRICS_PORT,
    PATH_HEALTHZ,
    PATH_PROM_METRICS,
    PATH_READYZ,
    PORT_NAME_HTTP,
    PORT_NAME_METRICS,
    PRESTOP_SLEEP_SECONDS,
    RUN_AS_UID,
    TERMINATION_GRACE_SECONDS,
    redis_sidecar_args,
)
from kuberag_contract.config import (
    ApiConfig,
    Cache,
    ConfigError,
    Corpus,
    Endpoint,
    L1Cache,
    L2Cache,
    L3Cache,
    Limit,
    LLMEndpoint,
    Providers,
    RateLimit,
    Retrieval,
    VectorStore,
    config_hash,
    render_config,
    static_config_hash,
)

from kuberag_operator.crd import defaulted_spec
from kuberag_operator.indexing import git_cronjob, index_job, spec_served, uses_shared_store
from kuberag_operator.names import child_name

COMPONENT_API = "api"
COMPONENT_METRICS = "metrics"
VOLUME_CONFIG = "config"
VOLUME_DATA = "data"
VOLUME_CORPUS = "corpus"
VOLUME_CLIENT_KEYS = "client-keys"

# (group/version, kind) of every child kind the operator may own; kinds it prunes when not desired.
OPTIONAL_KINDS = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("batch/v1", "CronJob"),
)


class SpecError(ValueError):
    """The spec passed the schema but cannot be turned into a valid config; the message names the field."""


def _prom_label(label: str) -> str:
    """A Kubernetes label name as Prometheus's service discovery spells it (``app.kubernetes.io/x`` -> ``app_kubernetes_io_x``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def selector_labels(name: str) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: name}


def selector_string(name: str) -> str:
    """``status.selector`` for the scale subresource (and the HPA)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def child_labels(name: str, component: str = COMPONENT_API) -> dict[str, str]:
    return {**selector_labels(name), LABEL_COMPONENT: component, LABEL_PART_OF: APP_NAME, LABEL_MANAGED_BY: MANAGED_BY}


def endpoint_url(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{HTTP_PORT}"


def uses_autoscaling(spec: dict) -> bool:
    return spec.get("autoscaling") is not None


def per_pod_total(total: int | None, replicas: int) -> int | None:
    """A service-wide total divided over the pods: rounded up, at least 1."""
    if total is None:
        return None
    return max(1, math.ceil(total / max(1, replicas)))


def api_config(spec: dict, replicas: int) -> ApiConfig:
    """The per-pod config file of a (defaulted) spec, validated by the contract's own schema."""
    rl, cache, ret = spec["rateLimit"], spec["cache"], spec["retrieval"]

    def endpoint(key: str) -> Endpoint | None:
        e = spec.get(key)
        return None if e is None else Endpoint(url=e["url"], model=e.get("model"))

    def llm() -> LLMEndpoint | None:
        e = spec.get("llm")
        if e is None:
            return None
        fields = {k: v for k, v in e.items() if k not in ("apiKeySecretRef", "timeouts", "prices")}
        return msgspec.convert({**fields, "timeouts": e.get("timeouts") or {}, "prices": e.get("prices") or {}},
                               LLMEndpoint)

    def vector_store() -> VectorStore | None:
        v = spec.get("vectorStore")
        if v is None:
            return None
        return msgspec.convert({k: x for k, x in v.items() if k != "apiKeySecretRef"}, VectorStore)

    try:
        built = ApiConfig(
            rate_limit=RateLimit(
                enabled=rl["enabled"],
                requests_per_minute=rl["requestsPerMinute"],
                burst=rl["burst"],
                # Old names mean clientKey now; a stored userId (refused since) too: never unverified ids.
                key_source="ip" if rl["keySource"] == "ip" else "clientKey",
                scope=rl["scope"],
                total_requests_per_minute=per_pod_total(rl.get("totalRequestsPerMinute"), replicas),
                tokens_per_minute=rl.get("tokensPerMinute"),
                token_burst=rl.get("tokenBurst"),
                per_user=Limit(requests_per_minute=rl["perUser"]["requestsPerMinute"],
                               burst=rl["perUser"]["burst"]) if rl.get("perUser") else None,
                trusted_proxies=tuple(rl.get("trustedProxies") or ()),
            ),
            cache=Cache(
                l1=L1Cache(max_entries=cache["l1"]["maxEntries"], ttl_seconds=cache["l1"]["ttlSeconds"]),
                l2=L2Cache(enabled=cache["l2"]["enabled"], ttl_seconds=cache["l2"]["ttlSeconds"]),
                l3=L3Cache(enabled=cache["l3"]["enabled"], max_entries=cache["l3"]["maxEntries"],
                           ttl_seconds=cache["l3"]["ttlSeconds"],
                           threshold=None if cache["l3"].get("threshold") is None else float(cache["l3"]["threshold"])),
            ),
            providers=Providers(llm=llm(), embeddings=endpoint("embeddings"),
                                vector_store=vector_store()),
            corpus=Corpus(path=CORPUS_DIR if spec.get("corpus") else None),
            retrieval=Retrieval(top_k=ret["topK"], chunk_size=ret["chunkSize"], chunk_overlap=ret["chunkOverlap"],
                                embedding_model=ret.get("embeddingModel", Retrieval().embedding_model)),
        )
        # Constructors skip msgspec's constraints; a round trip validates exactly as the API will.
        return msgspec.convert(msgspec.to_builtins(built), ApiConfig)
    except (msgspec.ValidationError, ConfigError, TypeError) as exc:
        raise SpecError(f"spec does not make a valid API config: {exc}") from None


def secret_refs(spec: dict) -> list[tuple[str, dict]]:
    """Every Secret the pods read, as (spec field path, {name, key}): the operator checks they exist."""
    refs = []
    if spec.get("adminKeySecretRef"):
        refs.append(("spec.adminKeySecretRef", spec["adminKeySecretRef"]))
    if spec.get("clientKeysSecretRef"):
        refs.append(("spec.clientKeysSecretRef", spec["clientKeysSecretRef"]))
    for field in ("llm", "embeddings", "vectorStore"):
        ref = (spec.get(field) or {}).get("apiKeySecretRef")
        if ref:
            refs.append((f"spec.{field}.apiKeySecretRef", ref))
    redis = spec["rateLimit"].get("redis") or {}
    if spec["rateLimit"]["scope"] == "shared" and redis.get("secretRef"):
        refs.append(("spec.rateLimit.redis.secretRef", redis["secretRef"]))
    return refs


def _secret_env(env_name: str, ref: dict) -> dict:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}}


def _security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_UID,
        "runAsGroup": RUN_AS_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _api_env(name: str, spec: dict) -> list[dict]:
    env = [
        {"name": ENV_HOST, "value": DEFAULT_HOST_POD},
        {"name": ENV_PORT, "value": str(HTTP_PORT)},
        {"name": ENV_METRICS_PORT, "value": str(METRICS_PORT)},
        {"name": ENV_CONFIG, "value": CONFIG_PATH},
        {"name": ENV_DATA_DIR, "value": DATA_DIR},
        {"name": ENV_REDIS_URL, "value": DEFAULT_REDIS_URL},
        {"name": ENV_SERVICE_NAME, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{LABEL_INSTANCE}']"}}},
        {"name": ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    rl = spec["rateLimit"]
    if rl["scope"] == "shared":
        redis = rl.get("redis") or {}
        if redis.get("secretRef"):
            env.append(_secret_env(ENV_LIMITER_REDIS_URL, redis["secretRef"]))
        else:
            env.append({"name": ENV_LIMITER_REDIS_URL, "value": redis["url"]})
    if spec.get("adminKeySecretRef"):
        env.append(_secret_env(ENV_ADMIN_API_KEY, spec["adminKeySecretRef"]))
    if spec.get("clientKeysSecretRef"):
        env.append({"name": ENV_CLIENT_KEYS, "value": CLIENT_KEYS_PATH})
    for field, env_name in (("llm", ENV_LLM_API_KEY), ("embeddings", ENV_EMBEDDINGS_API_KEY),
                            ("vectorStore", ENV_VECTOR_STORE_API_KEY)):
        ref = (spec.get(field) or {}).get("apiKeySecretRef")
        if ref:
            env.append(_secret_env(env_name, ref))
    return env


def _deployment(name: str, spec: dict, static_hash: str) -> dict:
    probe = {"httpGet": {"path": PATH_HEALTHZ, "port": PORT_NAME_HTTP}, "periodSeconds": 10, "timeoutSeconds": 3}
    api = {
        "name": CONTAINER_API,
        "image": spec["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": list(API_COMMAND),
        "env": _api_env(name, spec),
        "ports": [
            {"name": PORT_NAME_HTTP, "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": PORT_NAME_METRICS, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # Index building at start may take a while: the startup probe holds liveness off meanwhile.
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 90},
        # Routing stops before the API drains (it answers new requests 503 from SIGTERM on).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "livenessProbe": {**probe, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": PATH_READYZ, "port": PORT_NAME_HTTP}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 2},
        "resources": spec["resources"],
        "securityContext": _security_context(),
        "volumeMounts": [
            # The whole directory, never subPath: the kubelet's atomic ..data swap then reaches the pod.
            {"name": VOLUME_CONFIG, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": VOLUME_DATA, "mountPath": DATA_DIR},
        ],
    }
    volumes: list[dict[str, Any]] = [
        {"name": VOLUME_CONFIG, "configMap": {"name": child_name(name, "config")}},
        {"name": VOLUME_DATA, "emptyDir": {}},
    ]
    # With a shared store the indexing Job reads the corpus; the pods only query.
    corpus = {} if uses_shared_store(spec) else spec.get("corpus") or {}
    if corpus.get("configMap"):
        volumes.append({"name": VOLUME_CORPUS, "configMap": {"name": corpus["configMap"]["name"]}})
    elif corpus.get("volume"):
        volumes.append({**corpus["volume"], "name": VOLUME_CORPUS})
    if corpus:
        api["volumeMounts"].append({"name": VOLUME_CORPUS, "mountPath": CORPUS_DIR, "readOnly": True})
    keys = spec.get("clientKeysSecretRef")
    if keys:
        # A directory mount (never subPath), so a key rotation in the Secret reaches the pod live.
        volumes.append({"name": VOLUME_CLIENT_KEYS, "secret": {
            "secretName": keys["name"], "items": [{"key": keys["key"], "path": CLIENT_KEYS_FILENAME}],
            "defaultMode": 0o440}})
        api["volumeMounts"].append({"name": VOLUME_CLIENT_KEYS, "mountPath": CLIENT_KEYS_DIR, "readOnly": True})
    redis = spec["cache"]["redis"]
    sidecar = {
        "name": CONTAINER_REDIS,
        "image": redis["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": redis_sidecar_args(redis["maxMemory"]),
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "-h", "127.0.0.1", "ping"]}, "periodSeconds": 10},
        "resources": redis["resources"],
        "securityContext": _security_context(),
    }
    pod_labels = child_labels(name)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {
                "labels": pod_labels,
                # Only the static part: a rate-limit or TTL edit changes the ConfigMap, not the pods.
                "annotations": {ANNOTATION_STATIC_CONFIG_HASH: static_hash},
            },
            "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "enableServiceLinks": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "fsGroup": RUN_AS_UID,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [api, sidecar],
                "volumes": volumes,
            },
        },
    }
    # With autoscaling the HPA owns replicas: leaving the field out of the apply gives it up.
    if not uses_autoscaling(spec):
        deployment_spec["replicas"] = spec["replicas"]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": pod_labels},
            "spec": deployment_spec}


# Each RagService's last rendered config: (its JSON, the YAML text, the static hash). A pass that
# finds the config unchanged (most do: status refreshes, children's events, the resync) skips the
# two YAML dumps, a fifth of a pass's CPU. Per RagService, so each one's first pass renders.
_RENDERED: dict[tuple[str, str], tuple[bytes, str, str]] = {}
_RENDERED_MAX = 20_000  # RagServices gone are not tracked: a bound instead


def _rendered(key: tuple[str, str], config: ApiConfig) -> tuple[str, str]:
    """``render_config(config)`` and ``static_config_hash(config)``, from the last pass if the same."""
    encoded = msgspec.json.encode(config)
    last = _RENDERED.get(key)
    if last is not None and last[0] == encoded:
        return last[1], last[2]
    text, static_hash = render_config(config), static_config_hash(config)
    if len(_RENDERED) >= _RENDERED_MAX:
        _RENDERED.clear()
    _RENDERED[key] = (encoded, text, static_hash)
    return text, static_hash


def desired_replicas(spec: dict, current_replicas: int | None = None) -> int:
    """The pod count the config is divided over: spec.replicas, or the HPA's current choice."""
    if uses_autoscaling(spec):
        lo, hi = spec["autoscaling"]["minReplicas"], spec["autoscaling"]["maxReplicas"]
        return min(hi, max(lo, current_replicas or lo))
    return spec["replicas"]


def desired_children(ragservice: dict, *, current_replicas: int | None = None, index_build: str | None = None,
                     served: dict | None = None) -> list[dict]:
    """Every object the RagService owns, fully formed for server-side apply.

    ``current_replicas`` is the Deployment's current replica count, used only with autoscaling to
    divide ``rateLimit.totalRequestsPerMinute`` over the pods the HPA chose. With a shared store:
    ``index_build`` adds the indexing Job that builds that index version, and ``served`` (the
    embeddings and chunking of the completed index) is what the pods run with meanwhile.
    Raises SpecError when the spec cannot make a valid config.
    """
    meta = ragservice["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = defaulted_spec(ragservice.get("spec"))
    replicas = desired_replicas(spec, current_replicas)
    shared = uses_shared_store(spec)
    pod_spec = spec_served(spec, served) if shared else spec
    config = api_config(pod_spec, replicas)
    config_text, static_hash = _rendered((namespace, name), config)
    data = {CONFIG_FILENAME: config_text}
    if shared:
        data[INDEX_CONFIG_FILENAME] = render_config(api_config(spec, replicas))

    children: list[dict] = [
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": child_name(name, "config"), "labels": child_labels(name, "config"),
                      "annotations": {ANNOTATION_CONFIG_HASH: config_hash(config_text)}},
         "data": data},
        _deployment(name, pod_spec, static_hash),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": name, "labels": child_labels(name)},
         "spec": {"type": "ClusterIP", "selector": selector_labels(name),
                  "ports": [{"name": PORT_NAME_HTTP, "port": HTTP_PORT, "targetPort": PORT_NAME_HTTP, "protocol": "TCP"}]}},
        # A separate Service for metrics: the public one never exposes the metrics port by accident.
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": child_name(name, "metrics"), "labels": child_labels(name, COMPONENT_METRICS)},
         "spec": {"type": "ClusterIP", "selector": selector_labels(name),
                  "ports": [{"name": PORT_NAME_METRICS, "port": METRICS_PORT, "targetPort": PORT_NAME_METRICS,
                             "protocol": "TCP"}]}},
    ]
    if uses_autoscaling(spec):
        a = spec["autoscaling"]
        children.append({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "labels": child_labels(name)},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": a["minReplicas"], "maxReplicas": a["maxReplicas"],
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": a["targetCPUUtilizationPercentage"]}}}],
            },
        })
    min_pods = spec["autoscaling"]["minReplicas"] if uses_autoscaling(spec) else spec["replicas"]
    if min_pods > 1:
        children.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "labels": child_labels(name)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
        })
    if spec["networkPolicy"]["enabled"]:
        children.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "labels": child_labels(name)},
            "spec": {
                "podSelector": {"matchLabels": selector_labels(name)},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {"from": [{"podSelector": {}}], "ports": [{"port": PORT_NAME_HTTP, "protocol": "TCP"}]},
                    {"from": [{"namespaceSelector": {}}], "ports": [{"port": PORT_NAME_METRICS, "protocol": "TCP"}]},
                ],
            },
        })
    sm = spec["monitoring"]["serviceMonitor"]
    if sm["enabled"]:
        children.append({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": name, "labels": child_labels(name, COMPONENT_METRICS)},
            "spec": {
                "selector": {"matchLabels": {**selector_labels(name), LABEL_COMPONENT: COMPONENT_METRICS}},
                "endpoints": [{
                    "port": PORT_NAME_METRICS, "path": PATH_PROM_METRICS, "interval": sm["interval"],
                    # The API's series carry no RagService label: the dashboards and alerts group
                    # by this one (and the `namespace` prometheus-operator adds).
                    "relabelings": [{"sourceLabels": [f"__meta_kubernetes_service_label_{_prom_label(LABEL_INSTANCE)}"],
                                     "targetLabel": "ragservice", "action": "replace"}],
                }],
            },
        })
    if shared and index_build:
        children.append(index_job(name, spec, index_build))
    cronjob = git_cronjob(name, spec) if shared else None
    if cronjob is not None:
        children.append(cronjob)
    for child in children:
        child["metadata"]["namespace"] = namespace
        # kopf's helper sets a controller owner reference with blockOwnerDeletion.
        kopf.append_owner_reference(child, owner=ragservice)
    return children
