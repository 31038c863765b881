"""``reconcile()``: one idempotent pass that makes a RagService's children and status match its spec.

Every trigger leads here (a new RagService or spec, resuming after a restart, a change of an
owned child, the resync; see handlers.py and its work queue). It checks the Secrets the pods
need, applies with server-side apply the children of ``desired_children()`` that differ from
what is declared (each child carries the hash of what was declared for it, so an unchanged one
costs no request), prunes optional children that are no longer wanted and writes status.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import urllib3
from kuberag_contract import ANNOTATION_CONFIG_HASH, KIND, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY
from kubernetes import client

from kuberag_operator import metrics
from kuberag_operator.children import (
    OPTIONAL_KINDS,
    SpecError,
    desired_children,
    desired_replicas,
    endpoint_url,
    secret_refs,
    selector_string,
    uses_autoscaling,
)
from kuberag_operator.crd import defaulted_spec
from kuberag_operator.drift import foreign_fields, matches, project, protected_view, take_foreign_fields
from kuberag_operator.health import DependencyHealth
from kuberag_operator.indexing import plan_indexing, uses_shared_store
from kuberag_operator.kube import FIELD_MANAGER, Cluster
from kuberag_operator.names import child_name
from kuberag_operator.status import (
    MONITORING,
    Condition,
    failure_conditions,
    merge_conditions,
    now_rfc3339,
    workload_conditions,
)

logger = logging.getLogger(__name__)
# On every child: the hash of what the operator declared for it (the whole applied object). A
# child whose hash and declared fields match needs no apply, and a different hash is the
# operator's own change (a new spec, a new operator version, the HPA's replica count in the
# config), never drift.
ANNOTATION_DESIRED_HASH = "kuberag.io/desired-hash"


class ReconcileFailed(Exception):
    """The RagService could not be reconciled; the message says why (already written to status)."""

    def __init__(self, message: str, *, temporary: bool, reason: str = "ReconcileFailed",
                 ragservice: dict | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.reason = reason
        self.ragservice = ragservice


def ownership_problem(obj: dict, owner_name: str, owner_uid: str) -> str | None:
    """Why ``obj`` (an existing object with a child's name) must not be applied over, or None.

    Server-side apply with force would take any object: the owner reference list of another
    RagService (same field manager) or another controller's fields. Only an object this
    RagService controls, or one the operator made for a RagService of this name and that lost its
    owner reference (deleted with ``--cascade=orphan``), is adopted.
    """
    meta = obj.get("metadata") or {}
    what = f"{obj.get('kind')} {meta.get('name')}"
    controllers = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    if any(r.get("uid") == owner_uid for r in controllers):
        return None
    if controllers:
        ref = controllers[0]
        if ref.get("kind") == KIND and ref.get("name") == owner_name:
            return (f"{what} still belongs to a previous RagService {owner_name} (uid {ref.get('uid')}) "
                    "that is being garbage-collected")
        return f"{what} already exists and is controlled by {ref.get('kind')} {ref.get('name')}"
    labels = meta.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_INSTANCE) == owner_name:
        return None  # ours, orphaned: adopt it
    managers = sorted({m.get("manager", "?") for m in meta.get("managedFields") or []})
    return (f"{what} already exists and was not created by the kuberag operator for this RagService"
            + (f" (written by {', '.join(managers)})" if managers else ""))


@dataclass
class Outcome:
    ragservice: dict | None  # None: the RagService is gone (or being deleted)
    created: list[str] = field(default_factory=list)  # "Kind/name" of children created
    changed: list[str] = field(default_factory=list)  # ... changed by the apply
    pruned: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # restored: deleted or edited by someone else
    initial: bool = False  # the first pass that applied this RagService (no observedGeneration yet)
    applied_spec: bool = False  # a pass applied a new spec generation and that changed children


# Where a child's field comes from in the RagService: an apply error names the RagService's field.
# (kind, child field prefix, RagService field); containers[0] is `api`, containers[1] the Redis sidecar.
FIELD_ORIGINS = (
    ("Deployment", "spec.template.spec.containers[0].image", "spec.image"),
    ("Deployment", "spec.template.spec.containers[0].resources", "spec.resources"),
    ("Deployment", "spec.template.spec.containers[0].env", "a Secret reference (spec.*SecretRef / spec.rateLimit.redis)"),
    ("Deployment", "spec.template.spec.containers[1].image", "spec.cache.redis.image"),
    ("Deployment", "spec.template.spec.containers[1].resources", "spec.cache.redis.resources"),
    ("Deployment", "spec.template.spec.volumes[2]", "spec.corpus"),
    ("Deployment", "spec.replicas", "spec.replicas"),
    ("HorizontalPodAutoscaler", "spec", "spec.autoscaling"),
    ("ServiceMonitor", "spec.endpoints", "spec.monitoring.serviceMonitor"),
)


def api_error_text(exc: client.ApiException) -> str:
    """The API server's own message (its Status body), else the HTTP reason."""
    try:
        body = json.loads(exc.body) if isinstance(exc.body, (str, bytes)) and exc.body else {}
    except ValueError:
        body = {}
    return (body.get("message") if isinstance(body, dict) else None) or f"{exc.status} {exc.reason}"


def apply_error_message(child: dict, exc: client.ApiException) -> str:
    """An apply refusal in the RagService's terms: each cause names the spec field it came from."""
    what = f"{child['kind']} {child['metadata']['name']}"
    try:
        causes = ((json.loads(exc.body) or {}).get("details") or {}).get("causes") or []
    except (TypeError, ValueError):
        causes = []
    parts = []
    for cause in causes:
        field = cause.get("field") or ""
        origin = next((f for kind, prefix, f in FIELD_ORIGINS if kind == child["kind"] and field.startswith(prefix)),
                      None)
        text = cause.get("message") or cause.get("reason") or "invalid"
        parts.append(f"{origin}: {text} (the API server refused {what} field {field})" if origin
                     else f"{what} field {field}: {text}")
    return "; ".join(parts) if parts else f"{what} was refused: {api_error_text(exc)}"


def _ref(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _write_status(cluster: Cluster, rs: dict, status: dict) -> None:
    current = rs.get("status") or {}
    if all(current.get(k) == v for k, v in status.items()):
        return  # nothing changed: no write, no watch event
    # The response goes into the operator's view of the RagService: the next pass compares with it.
    cluster.patch_ragservice_status(rs["metadata"]["namespace"], rs["metadata"]["name"], status)


def _available(conditions: list[dict]) -> bool:
    return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)


def _fail(cluster: Cluster, rs: dict, reason: str, message: str, *, temporary: bool, result: str) -> ReconcileFailed:
    old = (rs.get("status") or {}).get("conditions")
    conditions = merge_conditions(old, failure_conditions(old, reason, message), now_rfc3339(),
                                  rs["metadata"].get("generation"))
    try:
        _write_status(cluster, rs, {"conditions": conditions})
    except client.ApiException as exc:  # the failure itself is what matters; status is best effort
        logger.warning("could not write Degraded status of %s: %s", rs["metadata"]["name"], exc.reason)
    metrics.observe_ragservice(rs["metadata"]["namespace"], rs["metadata"]["name"], available=_available(conditions))
    metrics.RECONCILES.labels(result).inc()
    return ReconcileFailed(message, temporary=temporary, reason=reason, ragservice=rs)


def reconcile(cluster: Cluster, rs: dict, *, full: bool = True, health: DependencyHealth | None = None) -> Outcome:
    """Make the children and status of RagService ``rs`` (as last observed) match its spec.

    Children are applied when they differ from what is declared: missing, a declared field
    changed, foreign fields in what must be exactly the spec, or a declared-content hash that is
    not the current one. ``full`` (resuming, the resync, a retry after a failure) also checks the
    referenced Secrets again and looks up unwanted optional children that were never observed;
    otherwise (children's events, status refreshes) the Secrets are checked only for a new spec.
    ``health``: the pods' own dependency state, read from their metrics port, for the conditions.
    """
    with metrics.RECONCILE_DURATION.time():
        try:
            return _reconcile(cluster, rs, full=full, health=health)
        except ReconcileFailed:
            raise  # counted by _fail with its own result
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            raise


def desired_hash(child: dict) -> str:
    return hashlib.sha256(json.dumps(child, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def with_desired_hash(child: dict) -> dict:
    """``child`` with its hash annotation (new top-level and metadata dicts: ``child`` is unchanged)."""
    meta = child["metadata"]
    annotations = {**(meta.get("annotations") or {}), ANNOTATION_DESIRED_HASH: desired_hash(child)}
    return {**child, "metadata": {**meta, "annotations": annotations}}


def _live_hash(live: dict | None) -> str | None:
    return ((live or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_DESIRED_HASH)


def _apply_child(cluster: Cluster, child: dict, live: dict | None) -> tuple[dict, bool]:
    """Apply ``child`` (stamped with its hash) if it differs from ``live``; (the object now,
    whether the apply changed what it manages)."""
    foreign = live is not None and bool(foreign_fields(live, FIELD_MANAGER))
    if not (live is None or foreign or _live_hash(live) != _live_hash(child) or not matches(child, live)):
        return live, False
    after = cluster.apply(child)
    taken = take_foreign_fields(after, FIELD_MANAGER)
    if taken is not None:
        # Foreign fields in what must be exactly the spec: make them ours, then the apply that
        # does not declare them deletes them (server-side apply removes what its manager dropped).
        try:
            cluster.replace_managed_fields(after, taken)
        except client.ApiException as exc:
            if exc.status not in (409, 422):  # changed meanwhile: its watch event brings another pass
                raise
        else:
            after = cluster.apply(child)
    changed = (live is None or project(child, live) != project(child, after)
               or protected_view(live) != protected_view(after))
    return after, changed


def _reconcile(cluster: Cluster, rs: dict, *, full: bool, health: DependencyHealth | None) -> Outcome:
    if rs["metadata"].get("deletionTimestamp"):
        return Outcome(ragservice=None)
    namespace, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
    generation = rs["metadata"].get("generation")
    status = rs.get("status") or {}
    spec = defaulted_spec(rs.get("spec"))
    # In steady state (spec already handled) anything the apply restores was drift.
    steady = status.get("observedGeneration") == generation

    # Errors the schema cannot catch: a Secret the pods would fail to start without (checked for
    # a new spec and by full passes: the resync, retries, resuming).
    problems = []
    for field_path, ref in secret_refs(spec) if full or not steady else ():
        try:
            problem = cluster.secret_key_problem(namespace, ref["name"], ref["key"])
        except client.ApiException as exc:  # e.g. 403: the operator's RBAC does not reach it
            raise _fail(cluster, rs, "SecretUnreadable", f"{field_path}: reading Secret {namespace}/{ref['name']} "
                        f"failed: {api_error_text(exc)}", temporary=True, result="error") from None
        if problem:
            problems.append(f"{field_path}: {problem}")
    if problems:
        raise _fail(cluster, rs, "SecretMissing", "; ".join(problems), temporary=True, result="secret_missing")

    current_replicas = None
    if uses_autoscaling(spec):
        deployment = cluster.current("apps/v1", "Deployment", namespace, name)
        current_replicas = ((deployment or {}).get("spec") or {}).get("replicas")
    # Without a shared store there is no indexing Job to read (a lookup of a missing child is a
    # request on every pass: 2-3 per RagService in the operator bench).
    job = cluster.current("batch/v1", "Job", namespace, child_name(name, "index")) if uses_shared_store(spec) else None
    indexing = plan_indexing(job, spec, status)
    try:
        children = desired_children(rs, current_replicas=current_replicas, index_build=indexing.build,
                                    served=indexing.served)
    except SpecError as exc:
        raise _fail(cluster, rs, "InvalidSpec", str(exc), temporary=False, result="invalid_spec") from None
    if indexing.replace is not None:
        # A Job's pod template cannot change: the one for another index (or settings) goes first.
        cluster.delete_owned("batch/v1", "Job", namespace, indexing.replace, rs["metadata"]["uid"])

    extra_conditions: list[Condition] = []
    servicemonitors_served = cluster.servicemonitor_crd_installed()
    if any(c["kind"] == "ServiceMonitor" for c in children):
        if servicemonitors_served:
            extra_conditions.append(Condition(MONITORING, True, "ServiceMonitorApplied",
                                              "ServiceMonitor for the metrics port applied"))
        else:
            children = [c for c in children if c["kind"] != "ServiceMonitor"]
            extra_conditions.append(Condition(
                MONITORING, False, "ServiceMonitorCRDMissing",
                "spec.monitoring.serviceMonitor.enabled is set but the ServiceMonitor CRD "
                "(servicemonitors.monitoring.coreos.com, prometheus-operator) is not installed"))

    children = [with_desired_hash(c) for c in children]
    outcome = Outcome(ragservice=rs, initial=status.get("observedGeneration") is None)
    applied: dict[str, dict] = {}
    uid = rs["metadata"]["uid"]
    try:
        existing = {_ref(c): cluster.current(c["apiVersion"], c["kind"], namespace, c["metadata"]["name"])
                    for c in children}
        conflicts = [p for obj in existing.values() if obj is not None
                     and (p := ownership_problem(obj, name, rs["metadata"]["uid"]))]
        if conflicts:
            # Nothing is applied: the other owner's objects stay untouched and nothing flaps.
            raise _fail(cluster, rs, "NameConflict", "; ".join(conflicts) + ": delete or rename it, or rename this "
                        "RagService", temporary=True, result="name_conflict")
        for child in children:
            before = existing[_ref(child)]
            try:
                after, changed = _apply_child(cluster, child, before)
            except client.ApiException as exc:
                # The observed copy may be stale: another owner may have claimed it meanwhile.
                fresh = cluster.get(child["apiVersion"], child["kind"], namespace, child["metadata"]["name"])
                if fresh is not None:
                    cluster.observed.put(fresh)
                    if problem := ownership_problem(fresh, name, uid):
                        raise _fail(cluster, rs, "NameConflict", f"{problem}: delete or rename it, or rename "
                                    "this RagService", temporary=True, result="name_conflict") from None
                if exc.status in (400, 422):  # the spec makes an invalid child: retrying cannot help
                    raise _fail(cluster, rs, "InvalidSpec", apply_error_message(child, exc), temporary=False,
                                result="invalid_spec") from None
                raise
            applied[child["kind"]] = after
            if not changed:
                continue
            (outcome.created if before is None else outcome.changed).append(_ref(child))
            # Drift: gone, or changed by someone else while it held what is declared now (a new
            # hash is the operator's own change: an upgrade, the HPA's count in the config).
            if steady and (before is None or _live_hash(before) == _live_hash(child)):
                outcome.drift.append(_ref(child))
                metrics.DRIFT_CORRECTIONS.labels(child["kind"]).inc()
        wanted = {(c["apiVersion"], c["kind"]) for c in children}
        for api_version, kind in OPTIONAL_KINDS:
            if kind == "ServiceMonitor" and not servicemonitors_served:
                continue  # no such type: nothing to prune (and no discovery round trip for it)
            if outcome.initial:
                continue  # nothing can be controlled by a RagService before its first pass
            if (api_version, kind) not in wanted and cluster.delete_owned(
                    api_version, kind, namespace, name, uid, observed_only=steady and not full):
                outcome.pruned.append(f"{kind}/{name}")
    except client.ApiException as exc:
        raise _fail(cluster, rs, "ApplyFailed", f"applying children failed: {api_error_text(exc)}",
                    temporary=True, result="error") from None
    except urllib3.exceptions.HTTPError as exc:
        raise _fail(cluster, rs, "ApplyFailed", f"applying children failed: API server unreachable ({exc})",
                    temporary=True, result="error") from None

    deployment = applied["Deployment"]
    dep_status = deployment.get("status") or {}
    replicas = desired_replicas(spec, current_replicas)
    if health is not None and health.observed_generation != generation:
        health = None  # read for another spec: the next read tells
    conditions = workload_conditions(deployment, replicas, status.get("conditions"), health,
                                     indexed=indexing.condition) + extra_conditions
    new_status = {
        "observedGeneration": generation,
        "replicas": dep_status.get("replicas") or 0,
        "readyReplicas": dep_status.get("readyReplicas") or 0,
        "selector": selector_string(name),
        "endpoint": endpoint_url(name, namespace),
        "configHash": applied["ConfigMap"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH],
        "conditions": merge_conditions(status.get("conditions"), conditions, now_rfc3339(), generation),
    }
    if indexing.status is not None:
        new_status["indexing"] = indexing.status
    _write_status(cluster, rs, new_status)
    metrics.observe_ragservice(namespace, name, available=_available(new_status["conditions"]),
                               desired=replicas, ready=new_status["readyReplicas"])
    metrics.RECONCILES.labels("success").inc()
    outcome.applied_spec = not steady and bool(outcome.created or outcome.changed or outcome.pruned)
    return outcome
