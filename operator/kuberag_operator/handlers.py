"""kopf wiring: kopf reports events, a work queue of RagService keys decides what runs when.

- RagServices are watched with ``@kopf.on.event`` and kept in ``Cluster.ragservices``. No
  finalizer: the children's owner references already garbage-collect them, so deleting a
  RagService never waits for an operator (it is gone at once even after the operator is
  uninstalled), and kopf writes nothing into the object (kopf's create/update/resume handlers,
  timers and daemons would add a finalizer and progress/diff-base annotations: more writes, each
  echoed back by the watch). A new RagService or spec generation is queued ``URGENT``; every
  RagService listed at start (a restart, a new leader) is resumed ``ROUTINE``, behind new work.
- Any event of an owned child (found by the operator's managed-by label or, label removed, by its
  RagService controller reference; mapped to its controller owner or, if another controller took
  it, to its instance label) is kept in
  ``Cluster.observed``; a change of the object queues its RagService at once (drift comes back
  within a second), a change of the status it follows after ``STATUS_DELAY_SECONDS`` (a
  rollout's status churn coalesces into a few status writes).
- One thread reads every RagService's pods' metrics ports (DependenciesReady) every
  ``KUBERAG_OPERATOR_POD_HEALTH_SECONDS`` with one pod list for all of them, and queues a full
  pass of every RagService every ``RESYNC_SECONDS`` (the safety net).
- ``KUBERAG_OPERATOR_WORKERS`` threads run the passes (workqueue.py: one pass per RagService at a
  time, triggers coalesce, retries back off 5 s, 10 s, 20 s ... 2 min).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time

import kopf
from kuberag_contract import (
    APP_NAME,
    GROUP,
    KIND,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from kubernetes import client

from kuberag_operator import metrics
from kuberag_operator.health import DependencyHealth, health_of_each
from kuberag_operator.kube import OBJECT, Cluster, ObservedRagServices, load_kube_config
from kuberag_operator.reconcile import Outcome, ReconcileFailed, reconcile
from kuberag_operator.status import dependency_condition
from kuberag_operator.workqueue import ROUTINE, URGENT, WorkQueue

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 300.0
# How often the pods are asked for their dependency state (DependenciesReady).
HEALTH_INTERVAL_SECONDS = float(os.environ.get("KUBERAG_OPERATOR_POD_HEALTH_SECONDS", "30"))
HEALTH_DEFER_SECONDS = 1.0  # how often a read deferred behind new RagServices looks again
# Passes run concurrently: each mostly waits on the API server.
WORKERS = int(os.environ.get("KUBERAG_OPERATOR_WORKERS", "8"))
STATUS_DELAY_SECONDS = 1.0
# What operator versions that used kopf's change handlers and timers left on every RagService:
# removed when seen, so those RagServices can be deleted without an operator too.
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
POD_SELECTOR = f"{LABEL_NAME}={APP_NAME},{LABEL_MANAGED_BY}={MANAGED_BY}"
# Owned kinds watched for drift: (group, version, plural).
WATCHED_CHILDREN = (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    # Watched when its CRD exists at operator start: with CRD scanning off, kopf resolves the
    # resources it serves once (a CRD installed later is covered by the resync).
    ("monitoring.coreos.com", "v1", "servicemonitors"),
    # The indexing Job (its progress goes to status) and a Git source's CronJob.
    ("batch", "v1", "jobs"),
    ("batch", "v1", "cronjobs"),
)
# What kopf itself needs (see manifests/rbac/role.yaml): its watches and the Events it posts.
KOPF_PERMISSIONS = frozenset(
    {(g, p, v) for g, _, p in WATCHED_CHILDREN for v in ("list", "watch")}
    | {(GROUP, PLURAL, v) for v in ("list", "watch")}
    | {("", "events", "create")}
)

Key = tuple[str, str]

_cluster: Cluster | None = None
_cluster_lock = threading.Lock()
_queue = WorkQueue()
_state_lock = threading.Lock()
_full: set[Key] = set()  # keys whose next pass is a full one (resume, resync, retry)
_failures: dict[Key, int] = {}  # consecutive failed passes (the retry backoff)
_refused: dict[Key, int | None] = {}  # generation whose spec failed for good (waits for a new one)
_health: dict[Key, DependencyHealth] = {}  # the last read of each RagService's pods
_kopf_context: contextvars.Context | None = None  # kopf's, for posting Events from the workers
_stop = threading.Event()
_threads: list[threading.Thread] = []


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf builds one (a deep copy of the whole object) for every watch event, for
    change handlers and daemons; this operator has only event handlers, so nothing ever reads it
    (it was a sixth of the operator's CPU under a burst of new RagServices)."""

    def build(self, *, body, extra_fields=None):  # noqa: ANN001, ANN201 (kopf's signature)
        return None

    def fetch(self, *, body):  # noqa: ANN001, ANN201
        return None

    def store(self, *, body, patch, essence) -> None:  # noqa: ANN001
        pass


def cluster() -> Cluster:
    global _cluster
    with _cluster_lock:
        if _cluster is None:
            load_kube_config()
            _cluster = Cluster(pool_size=WORKERS + 4)  # + the ticker's and kopf-side reads
    return _cluster


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    settings.posting.level = logging.INFO  # the Created/Updated/DriftCorrected Events are INFO
    # Strict mode: no namespace/CRD scanning, so no cluster-wide list/watch of those (least privilege).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf's discovery, listings and Event posts: an answer lost under load costs 30 s and a retry,
    # not kopf's default 5 min (during which a new leader's watches would not even start).
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    global _queue
    cluster()
    _queue = WorkQueue()  # a fresh one: a stopped queue stays shut down
    _stop.clear()
    _threads[:] = [threading.Thread(target=_work, name=f"reconcile-{i}", daemon=True) for i in range(WORKERS)]
    _threads.append(threading.Thread(target=_tick, name="pod-health-and-resync", daemon=True))
    for thread in _threads:
        thread.start()


@kopf.on.cleanup()
def stop_workers(**_: object) -> None:
    """Passes in flight finish (bounded: the leader must release its Lease before it expires)."""
    _stop.set()
    _queue.shutdown()
    deadline = time.monotonic() + 5.0
    for thread in _threads:
        thread.join(max(0.0, deadline - time.monotonic()))


def _enqueue(key: Key, lane: int, *, full: bool = False, after: float = 0.0) -> None:
    if full:
        with _state_lock:
            _full.add(key)
    _queue.add(key, lane, after=after)


def _backoff(retry: int) -> float:
    return min(5.0 * 2 ** retry, 120.0)


def _retry(key: Key) -> None:
    with _state_lock:
        failures = _failures.get(key, 0)
        _failures[key] = failures + 1
    _enqueue(key, ROUTINE, full=True, after=_backoff(failures))


def _forget(key: Key) -> None:
    cluster().ragservices.forget(key)
    with _state_lock:
        _full.discard(key)
        _failures.pop(key, None)
        _refused.pop(key, None)
        _health.pop(key, None)
    metrics.forget_ragservice(*key)
    metrics.MANAGED_RAGSERVICES.set(len(cluster().ragservices))


# --- kopf's events ----------------------------------------------------------------------------

@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_ragservice_event(type: str | None, event: dict, **_: object) -> None:
    global _kopf_context
    if _kopf_context is None:
        _kopf_context = contextvars.copy_context()  # kopf's settings and Event queue
    raw = event.get("object") or {}
    key = ObservedRagServices.key(raw)
    if type == "DELETED":
        _forget(key)
        return
    # Kept as kopf parsed it (each event is a fresh object, never changed after): read-only here.
    why = cluster().ragservices.put(raw)
    metrics.MANAGED_RAGSERVICES.set(len(cluster().ragservices))
    if why is None:
        return  # the echo of a status write, a label edit, a listing that brought nothing new
    if type is None:  # listed when the watch started: resume it, behind any new work
        _enqueue(key, ROUTINE, full=True)
    else:
        _enqueue(key, URGENT)


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


async def on_child_event(type: str | None, event: dict, namespace: str, **_: object) -> None:
    raw = event.get("object") or {}
    observed = cluster().observed
    if type == "DELETED":
        observed.forget(raw.get("kind", ""), namespace, raw.get("metadata", {}).get("name", ""))
        news: str | None = OBJECT
    else:
        news = observed.put(raw)  # read-only, as the RagServices' (no copy)
    owner = _owner_name(raw)
    # type None is the initial listing: every RagService listed is resumed anyway.
    if owner is None or type is None or news is None:
        return
    key = (namespace, owner)
    if cluster().ragservices.get(key) is None:
        return  # not (yet) a RagService: its own event brings the pass
    _enqueue(key, ROUTINE, after=0.0 if news == OBJECT else STATUS_DELAY_SECONDS)


def _is_child(body: dict, **_: object) -> bool:
    """A child of a RagService: the operator's managed-by label, or a RagService as its controller
    (a child whose label someone removed must still be seen, and get it back)."""
    meta = body.get("metadata", {})
    if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY:
        return True
    return any(ref.get("controller") and ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(f"{GROUP}/")
               for ref in meta.get("ownerReferences") or [])


for _group, _version, _plural in WATCHED_CHILDREN:
    kopf.on.event(_group, _version, _plural, when=_is_child)(on_child_event)


# --- the workers --------------------------------------------------------------------------------

def _work() -> None:
    while (item := _queue.get()) is not None:
        key, _lane = item
        try:
            _process(key)
        except client.ApiException as exc:
            if exc.status == 404:  # its status write: the RagService is gone
                _forget(key)
            else:
                logger.warning("reconciling %s/%s failed: %s", *key, exc)
                _retry(key)
        except Exception:
            logger.exception("reconciling %s/%s failed", *key)
            _retry(key)
        finally:
            _queue.done(key)


def _process(key: Key) -> None:
    cl = cluster()
    with _state_lock:
        full = key in _full
        _full.discard(key)
    rs = cl.ragservices.get(key)
    if rs is None:
        return
    if KOPF_FINALIZER in (rs["metadata"].get("finalizers") or []):
        try:
            cl.remove_finalizer(rs, KOPF_FINALIZER)
        except client.ApiException as exc:
            if exc.status not in (404, 409, 422):  # gone, or changed meanwhile: its event comes
                raise
    generation = rs["metadata"].get("generation")
    with _state_lock:
        refused = key in _refused and _refused[key] == generation
    if refused and not full:
        return  # this spec cannot be applied: only a new generation (or the resync) tries again
    try:
        outcome = reconcile(cl, rs, full=full, health=_health.get(key))
    except ReconcileFailed as exc:
        logger.warning("reconcile of %s/%s failed: %s", *key, exc)
        _post(kopf.warn, exc.ragservice, exc.reason, str(exc))
        if exc.temporary:
            _retry(key)
        else:
            with _state_lock:
                _refused[key] = generation
                _failures.pop(key, None)
        return
    with _state_lock:
        _failures.pop(key, None)
        _refused.pop(key, None)
    _post_events(outcome)


def _post(fn, obj: dict | None, reason: str, message: str) -> None:
    """An Event through kopf's poster (queued, posted by kopf's event loop)."""
    if obj is None or _kopf_context is None:
        return
    _kopf_context.copy().run(fn, obj, reason=reason, message=message)


def _post_events(outcome: Outcome) -> None:
    """Events for what the pass changed: a new spec generation applied (Created or Updated), and
    drift corrections on their own."""
    if outcome.ragservice is None:
        return
    if outcome.applied_spec:
        _post(kopf.info, outcome.ragservice, "Created" if outcome.initial else "Updated", _describe(outcome))
    if outcome.drift:
        _post(kopf.info, outcome.ragservice, "DriftCorrected", "corrected " + ", ".join(dict.fromkeys(outcome.drift)))


def _describe(outcome: Outcome) -> str:
    parts = []
    for label, items in (("created", outcome.created), ("changed", outcome.changed), ("pruned", outcome.pruned)):
        if items:
            parts.append(f"{label} {', '.join(dict.fromkeys(items))}")
    return "; ".join(parts) or "children up to date"


# --- the periodic work --------------------------------------------------------------------------

def _tick() -> None:
    next_health = time.monotonic() + HEALTH_INTERVAL_SECONDS / 3
    next_resync = time.monotonic() + RESYNC_SECONDS
    health_due: float | None = None  # when the deferred read was due
    while not _stop.wait(max(0.0, min(next_health, next_resync) - time.monotonic())):
        try:
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + RESYNC_SECONDS
                for key in cluster().ragservices.keys():
                    _enqueue(key, ROUTINE, full=True)
            now = time.monotonic()
            if now >= next_health:
                due = next_health if health_due is None else health_due
                if _queue.urgent_waiting() and now < due + HEALTH_INTERVAL_SECONDS:
                    # New RagServices first: the read, and the passes it queues for every
                    # RagService, wait until none waits for its first pass (one interval at most),
                    # as the work queue serves new RagServices before routine passes.
                    health_due = due
                    next_health = now + HEALTH_DEFER_SECONDS
                    continue
                _refresh_health()
                health_due = None
                next_health = time.monotonic() + HEALTH_INTERVAL_SECONDS
        except Exception:  # never let the ticker die; the next round tries again
            logger.exception("the periodic pod-health read or resync failed")


def _refresh_health() -> None:
    """Read each pod's dependency state from its metrics port (see health.py), then queue a pass
    for each RagService whose pods say something new, or that has no ready pod (Degraded after a
    while is time-based)."""
    cl = cluster()
    groups: dict[Key, tuple[list[dict], int | None]] = {}
    for key in cl.ragservices.keys():
        rs = cl.ragservices.get(key)
        if rs is not None:
            groups[key] = ([], rs["metadata"].get("generation"))
    if not groups:
        return
    try:
        pods = cl.list_pods(POD_SELECTOR)
    except Exception as exc:  # a failed read leaves the last one in place; the next round tries again
        logger.warning("listing the RagServices' pods failed: %s", exc)
        return
    for pod in pods:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", ""), (meta.get("labels") or {}).get(LABEL_INSTANCE, ""))
        if key in groups:
            groups[key][0].append(pod)
    for key, health in health_of_each(groups).items():
        rs = cl.ragservices.get(key)
        if rs is None:
            continue
        with _state_lock:
            previous = _health.get(key)
            _health[key] = health
        if (previous is None or dependency_condition(previous) != dependency_condition(health)
                or not (rs.get("status") or {}).get("readyReplicas")):
            _enqueue(key, ROUTINE)
