"""The one module that talks to the Kubernetes API (besides kopf's own watching).

Server-side apply with ONE field manager and forced conflicts; deletes only what the
RagService owns. ``API_PERMISSIONS`` declares every (group, resource, verb) this module uses,
next to the calls; a unit test checks the manifests' ClusterRole against it.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

from kuberag_contract import GROUP, PLURAL, VERSION
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from kuberag_operator import metrics

FIELD_MANAGER = "kuberag-operator"
# (connect, read) seconds: a hung API server must not pin a worker thread forever.
REQUEST_TIMEOUT = (5, 30)
_T = {"_request_timeout": REQUEST_TIMEOUT}
SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"

# (api group, resource, verb): "" is the core group. SSA of a missing object needs create too.
_CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")
API_PERMISSIONS: frozenset[tuple[str, str, str]] = frozenset(
    {(GROUP, PLURAL, v) for v in ("get", "list", "watch", "patch")}
    | {(GROUP, f"{PLURAL}/status", v) for v in ("get", "patch")}
    | {(g, r, v) for g, r in (("", "configmaps"), ("", "services"), ("apps", "deployments"),
                               ("autoscaling", "horizontalpodautoscalers"), ("policy", "poddisruptionbudgets"),
                               ("networking.k8s.io", "networkpolicies"), ("monitoring.coreos.com", "servicemonitors"))
       for v in _CHILD_VERBS}
    | {("", "secrets", "get")}  # existence of referenced Secrets only: never list/watch
    | {("apiextensions.k8s.io", "customresourcedefinitions", "get")}
)


def load_kube_config() -> None:
    """In-cluster credentials in a pod, else $KUBECONFIG / ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()


def request_resource(path: str) -> str:
    """``deployments``, ``ragservices/status``...: the resource a request path names (for counting)."""
    parts = [p for p in path.split("?")[0].strip("/").split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces") + 2
        if i < len(parts):
            return "/".join(parts[i:i + 3:2])  # resource, then a subresource after the name
        return "namespaces"
    base = 3 if parts[:1] == ["apis"] else 2
    return "/".join(parts[base:base + 3:2]) or path


class _CountingApiClient(client.ApiClient):
    """Counts every request by method and resource: the reconcile's API cost, measured."""

    def call_api(self, resource_path: str, method: str, path_params: dict | None = None, *args: Any,
                 **kwargs: Any) -> Any:
        path = resource_path
        for key, value in (path_params or {}).items():
            path = path.replace(f"{{{key}}}", str(value))
        metrics.API_REQUESTS.labels(method, request_resource(path)).inc()
        return super().call_api(resource_path, method, path_params, *args, **kwargs)


class Cluster:
    """A thread-safe handle on the API server (kopf runs sync handlers in worker threads)."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or _CountingApiClient()
        # A private discovery cache: processes sharing /tmp must not read each other's.
        cache = os.path.join(tempfile.mkdtemp(prefix="kuberag-operator-"), "discovery.json")
        self.dynamic = DynamicClient(self.api_client, cache_file=cache)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.extensions = client.ApiextensionsV1Api(self.api_client)
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], Any] = {}

    def _resource(self, api_version: str, kind: str) -> Any:
        with self._lock:
            key = (api_version, kind)
            if key not in self._resources:
                self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
            return self._resources[key]

    # --- RagServices ---------------------------------------------------------------------------
    def get_ragservice(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, **_T)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_ragservice_status(self, namespace: str, name: str, status: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status}, **_T)

    # --- children ------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace, **_T).to_dict()
        except NotFoundError:
            return None

    def apply(self, obj: dict) -> dict:
        """Server-side apply: idempotent (a no-op apply does not touch the object)."""
        res = self._resource(obj["apiVersion"], obj["kind"])
        return self.dynamic.server_side_apply(
            res, body=obj, namespace=obj["metadata"]["namespace"], field_manager=FIELD_MANAGER, force_conflicts=True, **_T
        ).to_dict()

    def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
        """Delete the child if this RagService controls it; True when something was deleted."""
        try:
            current = self.get(api_version, kind, namespace, name)
        except ResourceNotFoundError:
            return False  # the kind is not served (e.g. no ServiceMonitor CRD): nothing to prune
        if current is None:
            return False
        refs = current.get("metadata", {}).get("ownerReferences") or []
        if not any(r.get("uid") == owner_uid and r.get("controller") for r in refs):
            return False
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace, **_T)
        except NotFoundError:
            return False
        return True

    # --- what the pods depend on ---------------------------------------------------------------
    def secret_key_problem(self, namespace: str, name: str, key: str) -> str | None:
        """None if Secret ``name`` has ``key``; else what is wrong."""
        if not name:  # an empty name would LIST every Secret instead of reading one
            return "the Secret name is empty"
        try:
            secret = self.core.read_namespaced_secret(name, namespace, **_T)
        except client.ApiException as exc:
            if exc.status == 404:
                return f"Secret {namespace}/{name} not found"
            raise
        if key not in (secret.data or {}) and key not in (secret.string_data or {}):
            return f"Secret {namespace}/{name} has no key {key!r}"
        return None

    def servicemonitor_crd_installed(self) -> bool:
        try:
            self.extensions.read_custom_resource_definition(SERVICEMONITOR_CRD, **_T)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def forget_resource(self, api_version: str, kind: str) -> None:
        """Drop a cached resource lookup (a CRD that appeared or vanished)."""
        with self._lock:
            self._resources.pop((api_version, kind), None)
