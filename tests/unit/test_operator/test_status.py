import pytest
from kuberag_operator.health import DependencyHealth, PodHealth, parse_pod_metrics
from kuberag_operator.status import (
    AVAILABLE,
    DEGRADED,
    DEPENDENCIES,
    NO_READY_GRACE_SECONDS,
    PROGRESSING,
    Condition,
    dependency_condition,
    failure_conditions,
    merge_conditions,
    workload_conditions,
)

pytestmark = pytest.mark.unit


def _by_type(conds):
    return {c["type"]: c for c in conds}


def test_last_transition_time_changes_only_with_status():
    first = merge_conditions(None, [Condition(AVAILABLE, False, "NoReadyReplicas", "0/2")], "T1", 1)
    same = merge_conditions(first, [Condition(AVAILABLE, False, "NoReadyReplicas", "0/2 still")], "T2", 1)
    assert same[0]["lastTransitionTime"] == "T1"
    assert same[0]["message"] == "0/2 still"
    flipped = merge_conditions(same, [Condition(AVAILABLE, True, "MinimumReplicasReady", "2/2")], "T3", 1)
    assert flipped[0]["lastTransitionTime"] == "T3"
    assert flipped[0]["status"] == "True"


def _dep(gen=2, seen=2, replicas=2, updated=2, ready=2, reason="NewReplicaSetAvailable"):
    conditions = [{"type": "Progressing", "status": "True" if reason != "ProgressDeadlineExceeded" else "False",
                   "reason": reason, "message": f"ReplicaSet x: {reason}"}] if reason else []
    return {"metadata": {"generation": gen}, "status": {"observedGeneration": seen, "replicas": replicas,
                                                        "updatedReplicas": updated, "readyReplicas": ready,
                                                        "conditions": conditions}}


def _conds(dep, previous=None, health=None, now=None, desired=2):
    return {x.type: x for x in workload_conditions(dep, desired, previous, health, now)}


def test_workload_conditions_follow_ready_replicas():
    c = _conds(_dep())
    assert c[AVAILABLE].status is True and c[PROGRESSING].status is False and c[DEGRADED].status is False
    c = _conds(_dep(gen=3, seen=2))
    assert c[PROGRESSING].status is True
    c = _conds({"metadata": {}, "status": {}})
    assert c[AVAILABLE].status is False and c[AVAILABLE].reason == "Starting" and c[PROGRESSING].status is True
    assert c[DEGRADED].status is False  # the first pods may take long to build their index


def test_a_pod_not_ready_after_a_complete_rollout_is_not_progressing():
    c = _conds(_dep(ready=1))  # the defect: "Progressing=True RollingOut 2/2 updated, 1 ready"
    assert c[PROGRESSING].status is False and c[PROGRESSING].reason == "RolloutComplete"
    assert c[AVAILABLE].status is True


def test_no_ready_pod_for_a_while_is_degraded_but_not_during_the_first_start():
    was_ready = merge_conditions(None, [Condition(AVAILABLE, True, "MinimumReplicasReady", "2/2")], "2026-01-01T00:00:00Z", 1)
    lost = merge_conditions(was_ready, list(_conds(_dep(ready=0), was_ready).values()), "2026-01-01T00:01:00Z", 1)
    t_lost = 1767225660.0  # 2026-01-01T00:01:00Z
    assert _by_type(lost)[AVAILABLE]["reason"] == "NoReadyReplicas"
    c = _conds(_dep(ready=0), lost, now=t_lost + 10)
    assert c[DEGRADED].status is False  # a short gap
    c = _conds(_dep(ready=0), lost, now=t_lost + NO_READY_GRACE_SECONDS + 1)
    assert c[DEGRADED].status is True and c[DEGRADED].reason == "NoReadyReplicas"
    # Never ready yet (first index build): not degraded however long, until the rollout deadline.
    starting = merge_conditions(None, list(_conds(_dep(ready=0, reason="ReplicaSetUpdated")).values()),
                                "2026-01-01T00:00:00Z", 1)
    c = _conds(_dep(ready=0, reason="ReplicaSetUpdated"), starting, now=t_lost + 3600)
    assert c[DEGRADED].status is False and c[PROGRESSING].status is True
    c = _conds(_dep(ready=0, reason="ProgressDeadlineExceeded"), starting)
    assert c[DEGRADED].status is True and c[DEGRADED].reason == "ProgressDeadlineExceeded"
    assert c[PROGRESSING].status is False


def _pod(name, error=None, **deps):
    return PodHealth(name, "172.21.0.5:9090", error=error, dependencies={k: bool(v) for k, v in deps.items()})


def test_dependency_condition_names_the_pod_and_the_dependency():
    assert dependency_condition(None).status is None
    assert dependency_condition(DependencyHealth(pods=())).reason == "NoRunningPods"
    ok = dependency_condition(DependencyHealth(pods=(_pod("a", redis=1, index=1),)))
    assert ok.status is True and ok.reason == "AllUp"
    down = dependency_condition(DependencyHealth(pods=(_pod("a", redis=1, index=1), _pod("b", redis=0, index=1))))
    assert down.status is False and down.reason == "RedisDown"
    assert down.message == 'pod b: Redis sidecar down (kuberag_dependency_up{dependency="redis"} 0)'
    limiter = PodHealth("c", "x", dependencies={"redis": True, "index": True}, limiter_degraded=True)
    assert dependency_condition(DependencyHealth(pods=(limiter,))).reason == "RateLimiterDegraded"
    unreachable = dependency_condition(DependencyHealth(pods=(_pod("d", error="timed out"),)))
    assert unreachable.status is None and "pod d: metrics at 172.21.0.5:9090 unreadable (timed out)" in unreachable.message
    # A dependency down degrades the RagService; an index still building does not.
    c = _conds(_dep(), health=DependencyHealth(pods=(_pod("b", redis=0, index=1),)))
    assert c[DEGRADED].status is True and c[DEGRADED].reason == "DependencyDown" and c[DEPENDENCIES].status is False
    c = _conds(_dep(ready=0, reason="ReplicaSetUpdated"), health=DependencyHealth(pods=(_pod("b", redis=1, index=0),)))
    assert c[DEGRADED].status is False and c[AVAILABLE].reason == "IndexBuilding"


def test_pod_metrics_parse_from_the_exposition_format():
    text = ('# HELP kuberag_dependency_up 1 when a dependency is usable\n# TYPE kuberag_dependency_up gauge\n'
            'kuberag_dependency_up{dependency="redis"} 0.0\nkuberag_dependency_up{dependency="index"} 1.0\n'
            '# TYPE kuberag_rate_limiter_degraded gauge\nkuberag_rate_limiter_degraded 0.0\n')
    health = parse_pod_metrics("p", "1.2.3.4:9090", text)
    assert health.dependencies == {"redis": False, "index": True} and not health.limiter_degraded and not health.error
    assert parse_pod_metrics("p", "a", "up 1\n").error


def test_failure_keeps_availability_and_sets_degraded_with_the_message():
    old = merge_conditions(None, workload_conditions(_dep(1, 1, 1, 1, 1), 1, None, None), "T1", 1)
    conds = _by_type(merge_conditions(old, failure_conditions(old, "SecretMissing", "Secret ns/x not found"), "T2", 1))
    assert conds[AVAILABLE]["status"] == "True" and conds[AVAILABLE]["lastTransitionTime"] == "T1"
    assert conds[DEGRADED]["status"] == "True" and conds[DEGRADED]["reason"] == "SecretMissing"
    assert conds[DEGRADED]["message"] == "Secret ns/x not found"
    fresh = _by_type(merge_conditions(None, failure_conditions(None, "InvalidSpec", "bad"), "T", 1))
    assert fresh[AVAILABLE]["status"] == "Unknown"
