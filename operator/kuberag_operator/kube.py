"""The one module that talks to the Kubernetes API (besides kopf's own watching).

Server-side apply with ONE field manager and forced conflicts; deletes only what the
RagService owns. ``API_PERMISSIONS`` declares every (group, resource, verb) this module uses,
next to the calls; a unit test checks the manifests' ClusterRole against it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from typing import Any

from kuberag_contract import GROUP, KIND, PLURAL, VERSION
from kubernetes import client, config

from kuberag_operator import metrics

FIELD_MANAGER = "kuberag-operator"
USER_AGENT = "kuberag-operator"
# (connect, read) seconds: a hung API server must not pin a worker thread forever.
REQUEST_TIMEOUT = (5, 30)
SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"
# The REST resource of each kind the operator reads or writes. Fixed API types: a table instead of
# the dynamic client's discovery, and requests sent as plain JSON (the dynamic client's and the
# typed APIs' per-call wrapping, validation and model building were a third of the operator's CPU).
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Pod"): "pods",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("batch/v1", "Job"): "jobs",
    ("batch/v1", "CronJob"): "cronjobs",
    (f"{GROUP}/{VERSION}", KIND): PLURAL,
}

# (api group, resource, verb): "" is the core group. SSA of a missing object needs create too.
_CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")
API_PERMISSIONS: frozenset[tuple[str, str, str]] = frozenset(
    # patch: removing the kopf finalizer older operator versions left (the rest is read from the watch).
    {(GROUP, PLURAL, "patch")}
    | {(GROUP, f"{PLURAL}/status", "patch")}
    | {(g, r, v) for g, r in (("", "configmaps"), ("", "services"), ("apps", "deployments"),
                               ("autoscaling", "horizontalpodautoscalers"), ("policy", "poddisruptionbudgets"),
                               ("networking.k8s.io", "networkpolicies"), ("monitoring.coreos.com", "servicemonitors"),
                               ("batch", "jobs"), ("batch", "cronjobs"))
       for v in _CHILD_VERBS}
    | {("", "secrets", "get")}  # existence of referenced Secrets only: never list/watch
    | {("", "pods", "list")}  # the pods' IPs, to read their metrics port (dependency health), cluster-wide
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
    parts = [p for p in urllib.parse.urlsplit(path).path.strip("/").split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces") + 2
        if i < len(parts):
            return "/".join(parts[i:i + 3:2])  # resource, then a subresource after the name
        return "namespaces"
    base = 3 if parts[:1] == ["apis"] else 2
    return "/".join(parts[base:base + 3:2]) or path


class _CountingApiClient(client.ApiClient):
    """Counts every request by method and resource: the reconcile's API cost, measured."""

    def __init__(self, pool_size: int) -> None:
        configuration = client.Configuration.get_default_copy()
        # One connection per worker thread: with fewer (the client's default is 5 per CPU), a
        # busy worker's request opens and then discards a connection, a TLS handshake each time.
        configuration.connection_pool_maxsize = pool_size
        super().__init__(configuration)
        self.user_agent = USER_AGENT  # names the operator in the API server's audit log

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        metrics.API_REQUESTS.labels(method, request_resource(url)).inc()
        if len(args) < 4 and kwargs.get("_request_timeout") is None:
            # Every request bounded, also those without a timeout of their own (once the dynamic
            # client's discovery, under a lock: one lost answer held every worker).
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return super().call_api(method, url, *args, **kwargs)


def _newer(a: dict, b: dict) -> bool:
    """Whether ``a`` is a later version of the object than ``b`` (resourceVersions are etcd revisions)."""
    try:
        return int(a["metadata"]["resourceVersion"]) >= int(b["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return True  # not comparable: the latest one seen wins


# The parts of a Deployment's status that the RagService's status is computed from.
_DEPLOYMENT_STATUS = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
_VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation")


def _relevant(obj: dict) -> tuple:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    status = obj.get("status") or {}
    used = None
    if obj.get("kind") == "Deployment":
        progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
        used = ([status.get(k) for k in _DEPLOYMENT_STATUS], progressing.get("reason"))
    elif obj.get("kind") == "Job":  # the indexing Job's progress and outcome are in the RagService's status
        used = (status.get("succeeded"), status.get("failed"),
                sorted(c.get("type", "") for c in status.get("conditions") or [] if c.get("status") == "True"))
    return meta, body, used


OBJECT, STATUS = "object", "status"  # what a child's event tells (ObservedChildren.put)


class ObservedChildren:
    """The operator's children as last seen, fed by the watch of managed children and by every
    apply response: a reconcile reads them here instead of one GET per child (an informer cache,
    which kopf does not keep). A miss means unknown, not absent: the caller then GETs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict] = {}

    @staticmethod
    def _key(obj: dict) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        with self._lock:
            return self._objects.get((kind, namespace, name))

    def put(self, obj: dict) -> str | None:
        """Keep ``obj`` unless a later version is known. What it tells that is new: ``OBJECT``
        (first sight, or a change of the object itself), ``STATUS`` (status the RagService's
        status follows), or None: a watch event that only echoes the operator's own apply, or
        status churn a reconcile does not read (a PDB's status), is not worth a reconcile."""
        key = self._key(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None and not _newer(obj, old):
                return None
            self._objects[key] = obj
        if old is None:
            return OBJECT
        new_view, old_view = _relevant(obj), _relevant(old)
        if new_view[:2] != old_view[:2]:
            return OBJECT
        return STATUS if new_view[2] != old_view[2] else None

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((kind, namespace, name), None)


# Why a RagService event needs a pass (None: it does not; e.g. the echo of a status write).
NEW, NEW_GENERATION = "new", "new generation"


class ObservedRagServices:
    """The RagServices as last seen: fed by kopf's watch events and by the operator's own status
    writes (their responses), so a reconcile reads its RagService here, not with a GET, and the
    watch echo of a status write is recognised as nothing new."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str], dict] = {}

    @staticmethod
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return meta.get("namespace", ""), meta.get("name", "")

    def get(self, key: tuple[str, str]) -> dict | None:
        with self._lock:
            return self._objects.get(key)

    def keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._objects)

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def put(self, obj: dict) -> str | None:
        """Keep ``obj`` unless a later version is known; why it needs a pass, or None."""
        key = self.key(obj)
        with self._lock:
            old = self._objects.get(key)
            if old is not None and old["metadata"].get("uid") == obj["metadata"].get("uid") and not _newer(obj, old):
                return None
            self._objects[key] = obj
        if old is None or old["metadata"].get("uid") != obj["metadata"].get("uid"):
            return NEW
        if (old["metadata"].get("generation") != obj["metadata"].get("generation")
                or bool(old["metadata"].get("deletionTimestamp")) != bool(obj["metadata"].get("deletionTimestamp"))):
            return NEW_GENERATION
        return None

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._objects.pop(key, None)


class Cluster:
    """A thread-safe handle on the API server (the reconcile workers are threads)."""

    # A missing ServiceMonitor CRD is looked up again at most this often (not on every reconcile).
    CRD_CHECK_SECONDS = 30.0

    def __init__(self, api_client: client.ApiClient | None = None, pool_size: int = 16) -> None:
        self.api_client = api_client or _CountingApiClient(pool_size)
        self._lock = threading.Lock()
        self.observed = ObservedChildren()
        self.ragservices = ObservedRagServices()
        self._crd_checked: tuple[float, bool] | None = None

    @staticmethod
    def path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """``/apis/apps/v1/namespaces/NS/deployments/NAME``: the REST path of an object (or a collection)."""
        parts = ["/api" if "/" not in api_version else "/apis", api_version]
        if namespace is not None:
            parts += ["namespaces", namespace]
        parts.append(RESOURCES[(api_version, kind)])
        parts += [p for p in (name, subresource) if p is not None]
        return "/".join(urllib.parse.quote(p, safe="/") for p in parts)

    def request(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None, body: Any = None,
                content_type: str = "application/json") -> dict:
        """One request through the official client's transport (auth, TLS, pool, counted and
        bounded by ``_CountingApiClient``), JSON in and out; a non-2xx answer raises ApiException."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, _, _ = self.api_client.param_serialize(
            method, path, query_params=query, header_params=headers, auth_settings=["BearerToken"])
        # The body goes as is (plain JSON data), without the client's per-field sanitizing walk.
        response = self.api_client.call_api(method, url, headers, body, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise client.ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        return json.loads(data)

    # --- RagServices ---------------------------------------------------------------------------
    def patch_ragservice_status(self, namespace: str, name: str, status: dict) -> dict:
        """Merge-patch ``status``; the response (the RagService now) is what the next pass reads."""
        written = self.request("PATCH", self.path(f"{GROUP}/{VERSION}", KIND, namespace, name, "status"),
                               body={"status": status}, content_type="application/merge-patch+json")
        self.ragservices.put(written)
        return written

    def remove_finalizer(self, rs: dict, finalizer: str) -> None:
        """Remove one finalizer (only if the list is still as read: a JSON patch with a test)."""
        finalizers = rs["metadata"].get("finalizers") or []
        i = finalizers.index(finalizer)
        patch = [{"op": "test", "path": f"/metadata/finalizers/{i}", "value": finalizer},
                 {"op": "remove", "path": f"/metadata/finalizers/{i}"}]
        meta = rs["metadata"]
        self.request("PATCH", self.path(f"{GROUP}/{VERSION}", KIND, meta["namespace"], meta["name"]), body=patch,
                     content_type="application/json-patch+json")

    # --- children ------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, namespace: str, name: str, *, cached: bool = False) -> dict | None:
        """The object, or None. ``cached``: from the API server's watch cache (resourceVersion 0:
        no etcd read; at most milliseconds behind, like any informer)."""
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name),
                                query=[("resourceVersion", "0")] if cached else None)
        except client.ApiException as exc:
            if exc.status == 404:  # no such object (or no such type: a CRD not installed)
                return None
            raise

    def current(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        """The child as last observed, else as the API server has it (None: it does not exist)."""
        seen = self.observed.get(kind, namespace, name)
        if seen is not None:
            return seen
        live = self.get(api_version, kind, namespace, name, cached=True)
        if live is not None:
            self.observed.put(live)
        return live

    def apply(self, obj: dict) -> dict:
        """Server-side apply: idempotent (a no-op apply does not touch the object)."""
        meta = obj["metadata"]
        applied = self.request(
            "PATCH", self.path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")], body=obj,
            content_type="application/apply-patch+yaml")  # JSON is YAML
        self.observed.put(applied)
        return applied

    def replace_managed_fields(self, obj: dict, managed_fields: list[dict]) -> None:
        """Rewrite ``obj``'s managedFields (only if it has not changed since it was read)."""
        meta = obj["metadata"]
        patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
                 {"op": "replace", "path": "/metadata/managedFields", "value": managed_fields}]
        self.request("PATCH", self.path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
                     query=[("fieldManager", FIELD_MANAGER)], body=patch, content_type="application/json-patch+json")

    def delete_owned(self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str,
                     *, observed_only: bool = False) -> bool:
        """Delete the child if this RagService controls it; True when something was deleted.

        ``observed_only``: decide from the observed children alone (no GET when it was never seen)."""
        # A kind that is not served (e.g. no ServiceMonitor CRD) reads as absent: nothing to prune.
        current = (self.observed.get(kind, namespace, name) if observed_only
                   else self.current(api_version, kind, namespace, name))
        if current is None:
            return False
        refs = current.get("metadata", {}).get("ownerReferences") or []
        if not any(r.get("uid") == owner_uid and r.get("controller") for r in refs):
            return False
        try:
            # Background: a Job's or CronJob's pods go with it (their API default orphans them).
            self.request("DELETE", self.path(api_version, kind, namespace, name),
                         query=[("propagationPolicy", "Background")])
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        finally:
            self.observed.forget(kind, namespace, name)
        return True

    # --- what the pods depend on ---------------------------------------------------------------
    def secret_key_problem(self, namespace: str, name: str, key: str) -> str | None:
        """None if Secret ``name`` has ``key``; else what is wrong."""
        if not name:  # an empty name would LIST every Secret instead of reading one
            return "the Secret name is empty"
        try:
            secret = self.request("GET", self.path("v1", "Secret", namespace, name))
        except client.ApiException as exc:
            if exc.status == 404:
                return f"Secret {namespace}/{name} not found"
            raise
        if key not in (secret.get("data") or {}) and key not in (secret.get("stringData") or {}):
            return f"Secret {namespace}/{name} has no key {key!r}"
        return None

    def servicemonitor_crd_installed(self, *, fresh: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            checked = self._crd_checked
        if not fresh and checked is not None and now - checked[0] < self.CRD_CHECK_SECONDS:
            return checked[1]
        try:
            self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{SERVICEMONITOR_CRD}")
            installed = True
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            installed = False
        with self._lock:
            self._crd_checked = (now, installed)
        return installed

    def list_pods(self, selector: str) -> list[dict]:
        """Every pod with these labels, in all namespaces: one request for all RagServices' pods
        (from the API server's watch cache), for reading their metrics ports."""
        pods = self.request("GET", self.path("v1", "Pod"), query=[("labelSelector", selector), ("resourceVersion", "0")])
        return pods.get("items") or []
