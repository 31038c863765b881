"""RagService status: conditions of the standard shape, computed without I/O.

``lastTransitionTime`` changes only when a condition's status changes, so re-reconciling a
steady service writes nothing (and a status-equality check skips the patch).
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass

from kuberag_operator.health import DependencyHealth

AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
MONITORING = "MonitoringReady"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str

    def as_dict(self, now: str, generation: int | None) -> dict:
        d = {
            "type": self.type,
            "status": {True: "True", False: "False", None: "Unknown"}[self.status],
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": now,
        }
        if generation is not None:
            d["observedGeneration"] = generation
        return d


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(old: list[dict] | None, new: list[Condition], now: str, generation: int | None) -> list[dict]:
    """The new conditions, keeping each one's lastTransitionTime when its status did not change."""
    previous = {c.get("type"): c for c in old or []}
    merged = []
    for cond in new:
        d = cond.as_dict(now, generation)
        before = previous.get(cond.type)
        if before is not None and before.get("status") == d["status"] and before.get("lastTransitionTime"):
            d["lastTransitionTime"] = before["lastTransitionTime"]
        merged.append(d)
    return merged


# A RagService that had ready pods and has none for this long is Degraded (short gaps, e.g. a
# pod replaced by the ReplicaSet, are not).
NO_READY_GRACE_SECONDS = float(os.environ.get("KUBERAG_OPERATOR_NO_READY_GRACE_SECONDS", "60"))
DEPENDENCIES = "DependenciesReady"
DEPENDENCY_NAMES = {"redis": "Redis sidecar", "index": "index", "limiter_redis": "shared limiter Redis",
                    "vector_store": "shared vector store (Weaviate)"}


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return None


def dependency_condition(health: DependencyHealth | None) -> Condition:
    """DependenciesReady from what each pod's metrics port says (see health.py)."""
    if health is None:
        return Condition(DEPENDENCIES, None, "NotChecked", "the pods' metrics have not been read yet")
    if not health.pods:
        return Condition(DEPENDENCIES, None, "NoRunningPods", "no running pod to read")
    problems: dict[str, list[str]] = {}
    for pod in health.pods:
        if pod.error:
            problems.setdefault("MetricsUnreachable", []).append(
                f"pod {pod.pod}: metrics at {pod.address} unreadable ({pod.error})")
            continue
        for dep, up in sorted(pod.dependencies.items()):
            if not up:
                reason = {"redis": "RedisDown", "index": "IndexNotReady", "limiter_redis": "LimiterRedisDown",
                          "vector_store": "VectorStoreDown"}.get(dep, "DependencyDown")
                problems.setdefault(reason, []).append(
                    f'pod {pod.pod}: {DEPENDENCY_NAMES.get(dep, dep)} down (kuberag_dependency_up{{dependency="{dep}"}} 0)')
        if pod.limiter_degraded:
            problems.setdefault("RateLimiterDegraded", []).append(
                f"pod {pod.pod}: shared rate limiter unavailable, limiting per replica (kuberag_rate_limiter_degraded 1)")
    if not problems:
        deps = sorted({d for p in health.pods for d in p.dependencies})
        return Condition(DEPENDENCIES, True, "AllUp", f"{len(health.pods)} pod(s): {', '.join(deps)} up")
    order = ("VectorStoreDown", "RedisDown", "LimiterRedisDown", "RateLimiterDegraded", "DependencyDown",
             "IndexNotReady", "MetricsUnreachable")
    reason = min(problems, key=lambda r: order.index(r) if r in order else len(order))
    message = "; ".join(m for r in order if r in problems for m in problems[r])
    if reason == "MetricsUnreachable":
        return Condition(DEPENDENCIES, None, reason, message)  # unknown, not known bad
    return Condition(DEPENDENCIES, False, reason, message)


def workload_conditions(deployment: dict | None, desired_replicas: int, previous: list[dict] | None,
                        health: DependencyHealth | None, now: float | None = None,
                        indexed: Condition | None = None) -> list[Condition]:
    """Available, Progressing, Degraded and DependenciesReady, with their standard meanings:

    - Progressing=True only while a rollout progresses (the Deployment has not yet made every
      replica run the current template); a pod that is not ready after a complete rollout is not
      a rollout;
    - Degraded=True when the rollout exceeded its deadline, when no pod has been ready for
      NO_READY_GRACE_SECONDS after the service had been available (never while its first pods
      start and build their index), or when a pod reports a dependency down;
    - with a shared store, ``indexed`` (the Indexed condition): building an index is Progressing
      (never Degraded), a failed indexing Job is Degraded.
    """
    now = time.time() if now is None else now
    dep = deployment or {}
    st = dep.get("status") or {}
    ready = st.get("readyReplicas") or 0
    updated = st.get("updatedReplicas") or 0
    total = st.get("replicas") or 0
    dep_progressing = next((c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), {})
    deadline_exceeded = dep_progressing.get("reason") == "ProgressDeadlineExceeded"
    generation_seen = st.get("observedGeneration", 0) >= (dep.get("metadata") or {}).get("generation", 0)
    previous_by_type = {c.get("type"): c for c in previous or []}
    before = previous_by_type.get(AVAILABLE) or {}
    was_available = before.get("status") == "True" or before.get("reason") == "NoReadyReplicas"
    dependencies = dependency_condition(health)

    if desired_replicas == 0:
        avail = Condition(AVAILABLE, True, "ScaledToZero", "spec.replicas is 0: no pods are wanted")
    elif ready >= 1:
        avail = Condition(AVAILABLE, True, "MinimumReplicasReady", f"{ready}/{desired_replicas} replicas ready")
    elif was_available:
        avail = Condition(AVAILABLE, False, "NoReadyReplicas", f"0/{desired_replicas} replicas ready")
    elif indexed is not None and indexed.status is not True:
        avail = Condition(AVAILABLE, False, "WaitingForIndex", "the pods wait for the first index of the shared "
                                                               f"store ({indexed.reason})")
    elif dependencies.reason == "IndexNotReady":
        avail = Condition(AVAILABLE, False, "IndexBuilding", "the first pods are building their index")
    else:
        avail = Condition(AVAILABLE, False, "Starting", f"0/{desired_replicas} replicas ready: the first pods "
                                                         "are starting (and building their index)")

    complete = (generation_seen and updated >= desired_replicas and total == updated
                and (desired_replicas == 0 or dep_progressing.get("reason") == "NewReplicaSetAvailable"))
    if deadline_exceeded:
        prog = Condition(PROGRESSING, False, "ProgressDeadlineExceeded", dep_progressing.get("message", ""))
    elif indexed is not None and indexed.reason == "Indexing":
        prog = Condition(PROGRESSING, True, "Indexing", indexed.message)
    elif complete:
        prog = Condition(PROGRESSING, False, "RolloutComplete", "all replicas run the current spec")
    else:
        prog = Condition(PROGRESSING, True, "RollingOut", f"{updated}/{desired_replicas} replicas updated, {ready} ready")

    unready_since = _parse_time(before.get("lastTransitionTime")) if before.get("status") == "False" else None
    if deadline_exceeded:
        degraded = Condition(DEGRADED, True, "ProgressDeadlineExceeded",
                             f"the rollout made no progress: {dep_progressing.get('message', '')}")
    elif (avail.reason == "NoReadyReplicas" and unready_since is not None
          and now - unready_since >= NO_READY_GRACE_SECONDS):
        degraded = Condition(DEGRADED, True, "NoReadyReplicas",
                             f"no pod has been ready for {int(now - unready_since)} s (0/{desired_replicas})")
    elif indexed is not None and indexed.reason == "IndexingFailed":
        degraded = Condition(DEGRADED, True, "IndexingFailed", indexed.message)
    elif dependencies.status is False and dependencies.reason != "IndexNotReady":
        degraded = Condition(DEGRADED, True, "DependencyDown", dependencies.message)
    else:
        degraded = Condition(DEGRADED, False, "Reconciled", "all children applied")
    return [avail, prog, degraded, dependencies, *([indexed] if indexed is not None else [])]


def failure_conditions(old: list[dict] | None, reason: str, message: str) -> list[Condition]:
    """Degraded=True with the reason; Available/Progressing keep what they were (unknown if never set)."""
    keep = []
    previous = {c.get("type"): c for c in old or []}
    for ctype in (AVAILABLE, PROGRESSING, DEPENDENCIES, "Indexed"):
        before = previous.get(ctype)
        if before is None and ctype == "Indexed":
            continue  # only with a shared store
        if before is None:
            keep.append(Condition(ctype, None, "Unknown", "not reconciled yet"))
        else:
            status = {"True": True, "False": False}.get(before.get("status"))
            keep.append(Condition(ctype, status, before.get("reason", "Unknown"), before.get("message", "")))
    return [*keep, Condition(DEGRADED, True, reason, message)]
