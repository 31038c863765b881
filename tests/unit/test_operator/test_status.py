import pytest
from kuberag_operator.status import (
    AVAILABLE,
    DEGRADED,
    PROGRESSING,
    Condition,
    deployment_conditions,
    failure_conditions,
    merge_conditions,
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


def test_deployment_conditions_follow_ready_replicas():
    dep = {"metadata": {"generation": 2},
           "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}}
    c = {x.type: x for x in deployment_conditions(dep, 2, True)}
    assert c[AVAILABLE].status is True and c[PROGRESSING].status is False and c[DEGRADED].status is False
    rolling = {"metadata": {"generation": 3}, "status": {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2}}
    c = {x.type: x for x in deployment_conditions(rolling, 2, True)}
    assert c[PROGRESSING].status is True
    c = {x.type: x for x in deployment_conditions({"metadata": {}, "status": {}}, 2, True)}
    assert c[AVAILABLE].status is False and c[AVAILABLE].reason == "NoReadyReplicas"


def test_failure_keeps_availability_and_sets_degraded_with_the_message():
    old = merge_conditions(None, deployment_conditions(
        {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                                                    "readyReplicas": 1}}, 1, True), "T1", 1)
    conds = _by_type(merge_conditions(old, failure_conditions(old, "SecretMissing", "Secret ns/x not found"), "T2", 1))
    assert conds[AVAILABLE]["status"] == "True" and conds[AVAILABLE]["lastTransitionTime"] == "T1"
    assert conds[DEGRADED]["status"] == "True" and conds[DEGRADED]["reason"] == "SecretMissing"
    assert conds[DEGRADED]["message"] == "Secret ns/x not found"
    fresh = _by_type(merge_conditions(None, failure_conditions(None, "InvalidSpec", "bad"), "T", 1))
    assert fresh[AVAILABLE]["status"] == "Unknown"
