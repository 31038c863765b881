"""RagService status: conditions of the standard shape, computed without I/O.

``lastTransitionTime`` changes only when a condition's status changes, so re-reconciling a
steady service writes nothing (and a status-equality check skips the patch).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

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


def deployment_conditions(deployment: dict | None, desired_replicas: int, generation_applied: bool) -> list[Condition]:
    """Available/Progressing/Degraded from the Deployment the operator applied."""
    st = (deployment or {}).get("status") or {}
    ready = st.get("readyReplicas") or 0
    updated = st.get("updatedReplicas") or 0
    total = st.get("replicas") or 0
    dep_gen_seen = st.get("observedGeneration", 0) >= ((deployment or {}).get("metadata") or {}).get("generation", 0)
    available = ready >= 1 if desired_replicas > 0 else True
    if desired_replicas == 0:
        avail = Condition(AVAILABLE, True, "ScaledToZero", "spec.replicas is 0: no pods are wanted")
    elif available:
        avail = Condition(AVAILABLE, True, "MinimumReplicasReady", f"{ready}/{desired_replicas} replicas ready")
    else:
        avail = Condition(AVAILABLE, False, "NoReadyReplicas", f"0/{desired_replicas} replicas ready")
    rolled = dep_gen_seen and updated >= desired_replicas and total == updated and ready >= desired_replicas
    if generation_applied and rolled:
        prog = Condition(PROGRESSING, False, "RolloutComplete", "all replicas run the current spec")
    else:
        prog = Condition(PROGRESSING, True, "RollingOut",
                         f"{updated}/{desired_replicas} replicas updated, {ready} ready")
    return [avail, prog, Condition(DEGRADED, False, "Reconciled", "all children applied")]


def failure_conditions(old: list[dict] | None, reason: str, message: str) -> list[Condition]:
    """Degraded=True with the reason; Available/Progressing keep what they were (unknown if never set)."""
    keep = []
    previous = {c.get("type"): c for c in old or []}
    for ctype in (AVAILABLE, PROGRESSING):
        before = previous.get(ctype)
        if before is None:
            keep.append(Condition(ctype, None, "Unknown", "not reconciled yet"))
        else:
            status = {"True": True, "False": False}.get(before.get("status"))
            keep.append(Condition(ctype, status, before.get("reason", "Unknown"), before.get("message", "")))
    return [*keep, Condition(DEGRADED, True, reason, message)]
