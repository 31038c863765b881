"""kopf wiring: every trigger calls the one ``reconcile()``.

- create / update (of spec) / resume of a RagService: a full reconcile (every child applied),
  with backoff on errors;
- any event of an owned child (found by the operator's managed-by label, mapped to its
  controller owner or, if another controller took it, to its instance label): the object is kept
  in ``Cluster.observed`` and the owner gets a light reconcile (only what differs is applied), so
  a deleted or hand-edited child comes back within seconds and status follows the pods;
- a timer per RagService reads its pods' metrics port (DependenciesReady) and refreshes status;
  a slow one is the safety net.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import kopf
from kuberag_contract import GROUP, KIND, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, VERSION

from kuberag_operator import metrics
from kuberag_operator.children import selector_string
from kuberag_operator.health import DependencyHealth, pods_health
from kuberag_operator.kube import Cluster, load_kube_config
from kuberag_operator.reconcile import KeyedSerializer, Outcome, ReconcileFailed, merge_outcomes, reconcile
from kuberag_operator.status import dependency_condition

logger = logging.getLogger(__name__)

TIMER_INTERVAL_SECONDS = 300.0
# How often each RagService's pods are asked for their dependency state (DependenciesReady);
# read at import because kopf fixes a timer's interval when the handler is registered.
HEALTH_INTERVAL_SECONDS = float(os.environ.get("KUBERAG_OPERATOR_POD_HEALTH_SECONDS", "30"))
# Owned kinds watched for drift: (group, version, plural).
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    # Watched when its CRD exists at operator start: with CRD scanning off, kopf resolves the
    # resources it serves once (a CRD installed later is covered by the reconcile timer).
    ("monitoring.coreos.com", "v1", "servicemonitors"),
    # The indexing Job (its progress goes to status) and a Git source's CronJob.
    ("batch", "v1", "jobs"),
    ("batch", "v1", "cronjobs"),
)
# What kopf itself needs beyond the watches above (see manifests/rbac/role.yaml).
KOPF_PERMISSIONS = frozenset(
    {(g, p, v) for g, _, p in WATCHED_CHILDREN for v in ("list", "watch")}
    | {(GROUP, PLURAL, v) for v in ("list", "watch", "patch")}  # patch: kopf's progress annotations
    | {("", "events", "create")}
)

_cluster: Cluster | None = None
_cluster_lock = threading.Lock()
_serializer = KeyedSerializer()
_managed: set[tuple[str, str]] = set()
_health: dict[tuple[str, str], DependencyHealth] = {}  # the last read of each RagService's pods
_health_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pod-health")


def cluster() -> Cluster:
    global _cluster
    with _cluster_lock:  # handlers run in several worker threads
        if _cluster is None:
            load_kube_config()
            _cluster = Cluster()
    return _cluster


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    # Progress in annotations under our own prefix: status is a strict schema kopf must not write to.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    # Strict mode: no namespace/CRD scanning, so no cluster-wide list/watch of those (least privilege).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    # Reconciles wait on the API server most of the time: more threads, more in flight.
    settings.execution.max_workers = 16


def _run(namespace: str, name: str, *, wait: bool, full: bool) -> list[Outcome]:
    """The outcome of each pass this call ran (none when coalesced into a running pass)."""
    passes = _serializer.run(
        (namespace, name),
        lambda: reconcile(cluster(), namespace, name, full=full, health=_health.get((namespace, name))), wait=wait)
    if passes:
        if passes[-1].ragservice is None:
            _managed.discard((namespace, name))
            metrics.forget_ragservice(namespace, name)
        else:
            _managed.add((namespace, name))
        metrics.MANAGED_RAGSERVICES.set(len(_managed))
    return passes


def _backoff(retry: int) -> float:
    return min(5.0 * 2 ** retry, 120.0)


@kopf.on.resume(GROUP, VERSION, PLURAL)
def resume_ragservice(namespace: str, name: str, body: kopf.Body, retry: int, **_: object) -> None:
    """At operator start every child is applied: a new operator version may declare less."""
    _handle(namespace, name, body, retry, full=True)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile_ragservice(namespace: str, name: str, body: kopf.Body, retry: int, **_: object) -> None:
    """A new spec generation: every child is applied, unless another trigger's pass already
    applied this generation (then only what differs)."""
    _handle(namespace, name, body, retry, full=False)


def _handle(namespace: str, name: str, body: kopf.Body, retry: int, *, full: bool) -> None:
    try:
        passes = _run(namespace, name, wait=True, full=full)
    except ReconcileFailed as exc:
        kopf.warn(body, reason=exc.reason, message=str(exc))
        if exc.temporary:
            raise kopf.TemporaryError(str(exc), delay=_backoff(retry)) from None
        raise kopf.PermanentError(str(exc)) from None
    _post_events(passes)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget_ragservice(namespace: str, name: str, **_: object) -> None:
    _managed.discard((namespace, name))
    _health.pop((namespace, name), None)
    metrics.forget_ragservice(namespace, name)
    metrics.MANAGED_RAGSERVICES.set(len(_managed))


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL_SECONDS, initial_delay=TIMER_INTERVAL_SECONDS, idle=60)
def resync_ragservice(namespace: str, name: str, body: kopf.Body, **_: object) -> None:
    _reconcile_from_event(namespace, name)


@kopf.timer(GROUP, VERSION, PLURAL, interval=HEALTH_INTERVAL_SECONDS, initial_delay=HEALTH_INTERVAL_SECONDS / 3)
async def read_pod_health(namespace: str, name: str, body: kopf.Body, **_: object) -> None:
    """Read each pod's dependency state from its metrics port (see health.py), then refresh the
    status with it (this pass also re-evaluates the time-based Degraded=NoReadyReplicas).

    Async, on a pool of its own: reading pods can wait seconds on timeouts, and kopf's worker
    threads must stay free for reconciles."""
    generation = body.get("metadata", {}).get("generation")
    status = dict(body.get("status") or {})
    # In kopf's context (its settings, for posting events), as kopf runs its own sync handlers.
    context = contextvars.copy_context()
    await asyncio.get_running_loop().run_in_executor(_health_pool, context.run, _refresh_health, namespace, name,
                                                     generation, status)


def _refresh_health(namespace: str, name: str, generation: int | None, status: dict) -> None:
    try:
        pods = cluster().list_pods(namespace, selector_string(name))
    except Exception as exc:  # a failed read leaves the last one in place; the next timer tries again
        logger.warning("listing the pods of %s/%s failed: %s", namespace, name, exc)
        return
    health = pods_health(pods, generation)
    previous = _health.get((namespace, name))
    _health[(namespace, name)] = health
    # Refresh status when the pods say something new, or while no pod is ready (Degraded after a while).
    if (previous is None or dependency_condition(previous) != dependency_condition(health)
            or not status.get("readyReplicas")):
        _reconcile_from_event(namespace, name)


def _owner_name(body: dict) -> str | None:
    """The RagService a managed child belongs to: its controller, else (taken over by another
    controller) the instance label the operator gave it."""
    meta = body.get("metadata", {})
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/"):
                return ref.get("name")
            break
    return (meta.get("labels") or {}).get(LABEL_INSTANCE)


def _reconcile_from_event(namespace: str, name: str) -> None:
    try:
        passes = _run(namespace, name, wait=False, full=False)
    except ReconcileFailed as exc:
        logger.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
        if exc.ragservice is not None:
            kopf.warn(exc.ragservice, reason=exc.reason, message=str(exc))
        return
    _post_events(passes)


def _post_events(passes: list[Outcome]) -> None:
    """Events for what the passes of one call changed: each pass that applied a new spec
    generation reports it (Created or Updated: a child event's pass can apply a spec edit before
    kopf's update handler runs, and a create handler's pass can be followed by a re-run that
    applies an edit), and drift corrections are reported on their own."""
    for outcome in passes:
        if outcome.ragservice is not None and outcome.applied_spec:
            kopf.info(outcome.ragservice, reason="Created" if outcome.initial else "Updated",
                      message=_describe(outcome))
    merged = merge_outcomes(passes)
    if merged is not None and merged.ragservice is not None and merged.drift:
        kopf.info(merged.ragservice, reason="DriftCorrected", message="corrected " + ", ".join(dict.fromkeys(merged.drift)))


def on_child_event(type: str | None, event: dict, namespace: str, **_: object) -> None:
    raw = event.get("object") or {}
    observed = cluster().observed
    if type == "DELETED":
        observed.forget(raw.get("kind", ""), namespace, raw.get("metadata", {}).get("name", ""))
        news = True
    else:
        news = observed.put(copy.deepcopy(raw))
    owner = _owner_name(raw)
    # type None is the initial listing: resume handlers already reconcile every RagService.
    if owner is None or type is None or not news:
        return
    _reconcile_from_event(namespace, owner)


for _group, _version, _plural in WATCHED_CHILDREN:
    kopf.on.event(_group, _version, _plural, labels={LABEL_MANAGED_BY: MANAGED_BY})(on_child_event)


def _describe(outcome: Outcome) -> str:
    parts = []
    for label, items in (("created", outcome.created), ("changed", outcome.changed), ("pruned", outcome.pruned)):
        if items:
            parts.append(f"{label} {', '.join(dict.fromkeys(items))}")
    return "; ".join(parts) or "children up to date"
