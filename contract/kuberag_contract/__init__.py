"""The pinned contract between the kuberag operator and the API pod.

Both ``kuberag_api`` and ``kuberag_operator`` import this package; it imports neither.
It holds names and shapes only: the CRD group, env var names, ports, paths, labels and the
schema of the config file the operator writes and the API reads (``kuberag_contract.config``).
"""

from __future__ import annotations

GROUP = "kuberag.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RagService"
PLURAL = "ragservices"
SINGULAR = "ragservice"
SHORT_NAMES = ("rag",)
CONFIG_KIND = "ApiConfig"

# --- config file -----------------------------------------------------------------------------
# The ConfigMap is mounted as a directory (never with subPath) so the kubelet's atomic
# symlink swap (..data -> ..2024_xx) updates the file in place.
CONFIG_DIR = "/etc/kuberag"
CONFIG_FILENAME = "config.yaml"
# The indexing Job's config (same ConfigMap): the spec being indexed, which the API pods only
# switch to once its index is complete.
INDEX_CONFIG_FILENAME = "index.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILENAME}"

# --- environment -----------------------------------------------------------------------------
ENV_CONFIG = "KUBERAG_CONFIG"
ENV_HOST = "KUBERAG_HOST"
ENV_PORT = "KUBERAG_PORT"
ENV_METRICS_PORT = "KUBERAG_METRICS_PORT"
ENV_REDIS_URL = "KUBERAG_REDIS_URL"
ENV_LIMITER_REDIS_URL = "KUBERAG_LIMITER_REDIS_URL"
ENV_DATA_DIR = "KUBERAG_DATA_DIR"
ENV_ADMIN_API_KEY = "KUBERAG_ADMIN_API_KEY"
ENV_SERVICE_NAME = "KUBERAG_SERVICE_NAME"
ENV_NAMESPACE = "KUBERAG_NAMESPACE"
# Provider keys, each from a Secret named in the RagService spec.
ENV_LLM_API_KEY = "KUBERAG_LLM_API_KEY"
ENV_EMBEDDINGS_API_KEY = "KUBERAG_EMBEDDINGS_API_KEY"
ENV_VECTOR_STORE_API_KEY = "KUBERAG_VECTOR_STORE_API_KEY"
# Credentials of a Git corpus source (the indexing Job and CronJob only).
ENV_GIT_USERNAME = "KUBERAG_GIT_USERNAME"
ENV_GIT_PASSWORD = "KUBERAG_GIT_PASSWORD"
# The client-keys file (``ClientKeys``, see ``kuberag_contract.config``): the verified callers.
ENV_CLIENT_KEYS = "KUBERAG_CLIENT_KEYS"

DEFAULT_HOST_POD = "0.0.0.0"
DEFAULT_HOST_LOCAL = "127.0.0.1"

# --- ports, paths ----------------------------------------------------------------------------
HTTP_PORT = 8000
METRICS_PORT = 9090
REDIS_PORT = 6379
PORT_NAME_HTTP = "http"
PORT_NAME_METRICS = "metrics"
DEFAULT_REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"

PATH_HEALTHZ = "/healthz"
PATH_READYZ = "/readyz"
PATH_PROM_METRICS = "/metrics"  # on the metrics port only

# The client-keys Secret, mounted as a directory (never subPath: key rotations reach the pod live).
CLIENT_KEYS_DIR = "/etc/kuberag-clients"
CLIENT_KEYS_FILENAME = "clients.yaml"
CLIENT_KEYS_PATH = f"{CLIENT_KEYS_DIR}/{CLIENT_KEYS_FILENAME}"
CLIENT_KEYS_KIND = "ClientKeys"

DATA_DIR = "/var/lib/kuberag"  # writable emptyDir: the root FS is read-only
CORPUS_DIR = "/var/lib/kuberag-corpus"  # read-only corpus source (ConfigMap or volume)

ADMIN_HEADER = "X-API-Key"
# Client keys come in X-API-Key or ``Authorization: Bearer <key>`` (OpenAI-style clients).
CLIENT_KEY_HEADER = "X-API-Key"

# --- graceful shutdown -----------------------------------------------------------------------
# The API answers requests in flight for up to SHUTDOWN_SECONDS after SIGTERM (new ones get 503).
# The pod waits PRESTOP_SLEEP_SECONDS before that signal, so kube-proxy and ingresses stop routing
# to it first, and allows TERMINATION_GRACE_SECONDS in all (> sleep + bound + uvicorn's slack).
SHUTDOWN_SECONDS = 20
PRESTOP_SLEEP_SECONDS = 5
TERMINATION_GRACE_SECONDS = 40

# --- containers ------------------------------------------------------------------------------
CONTAINER_API = "api"
CONTAINER_REDIS = "redis"
RUN_AS_UID = 65532
API_COMMAND = ("kuberag", "serve")
# The indexing Job: build a new index version of the corpus and switch the replicas to it.
INDEX_COMMAND = ("kuberag", "ingest", "--sync")


def redis_sidecar_args(maxmemory: str) -> list[str]:
    """Arguments of the Redis sidecar: loopback only, no persistence, LRU eviction."""
    return [
        "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(REDIS_PORT),
        "--save", "",
        "--appendonly", "no",
        "--maxmemory", maxmemory,
        "--maxmemory-policy", "allkeys-lru",
    ]


# --- labels, annotations ---------------------------------------------------------------------
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
APP_NAME = "kuberag"
MANAGED_BY = "kuberag-operator"
# Hash of the static part of the config (providers, ports, corpus): a change rolls the pods.
ANNOTATION_STATIC_CONFIG_HASH = f"{GROUP}/static-config-hash"
# Hash of the whole config file (status.configHash, and the API's metric label).
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
# On the indexing Job: the hash of what it indexes (corpus source, embeddings, chunking) and the
# index version (build id) every shard writes.
ANNOTATION_INDEX_HASH = f"{GROUP}/index-hash"
ANNOTATION_INDEX_BUILD = f"{GROUP}/index-build"
