"""drift.py: what counts as a change, and moving foreign fields into the operator's apply entry."""

import pytest
from kuberag_operator.drift import foreign_fields, matches, project, protected_view, take_foreign_fields

pytestmark = pytest.mark.unit

OURS = "kuberag-operator"


def test_matches_ignores_server_defaults_and_normalised_quantities():
    desired = {"spec": {"replicas": 2, "template": {"spec": {"containers": [
        {"name": "api", "resources": {"requests": {"cpu": "0.5", "memory": 1073741824}}}]}}}}
    live = {"spec": {"replicas": 2, "progressDeadlineSeconds": 600, "template": {"spec": {"containers": [
        {"name": "api", "terminationMessagePath": "/dev/termination-log",
         "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}}}}
    assert matches(desired, live)
    live["spec"]["replicas"] = 5
    assert not matches(desired, live)
    # A list of another length (an extra or missing item) does not match.
    assert not matches({"a": [1]}, {"a": [1, 2]})


def test_project_sees_only_the_fields_the_operator_sets():
    desired = {"spec": {"replicas": 2}}
    before = {"spec": {"replicas": 2}, "status": {"readyReplicas": 0}, "metadata": {"resourceVersion": "1"}}
    after = {"spec": {"replicas": 2}, "status": {"readyReplicas": 2}, "metadata": {"resourceVersion": "9"}}
    assert project(desired, before) == project(desired, after)  # status churn is not a change
    assert project(desired, {"spec": {"replicas": 5}}) != project(desired, after)


def _deployment(managed_fields, annotations=None):
    return {"kind": "Deployment", "metadata": {"managedFields": managed_fields},
            "spec": {"template": {"metadata": {"annotations": annotations or {}}, "spec": {"containers": []}}}}


ENV_X = {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"api"}': {"f:env": {
    'k:{"name":"X"}': {".": {}, "f:name": {}, "f:value": {}}}}}}}}}
OUR_FIELDS = {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {'k:{"name":"api"}': {
    ".": {}, "f:name": {}, "f:image": {}}}}}}}


def test_foreign_env_var_is_found_and_moved_into_our_entry():
    obj = _deployment([
        {"manager": OURS, "operation": "Apply", "apiVersion": "apps/v1", "fieldsV1": OUR_FIELDS},
        {"manager": "kubectl-set", "operation": "Update", "apiVersion": "apps/v1", "fieldsV1": ENV_X},
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1", "subresource": "status",
         "fieldsV1": {"f:status": {"f:replicas": {}}}},
    ])
    assert foreign_fields(obj, OURS) == {"kubectl-set/Update": ENV_X}
    taken = take_foreign_fields(obj, OURS)
    managers = [e["manager"] for e in taken]
    assert managers == [OURS, "kube-controller-manager"]  # kubectl-set owned nothing else: dropped
    env = taken[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"api"}']["f:env"]
    assert 'k:{"name":"X"}' in env
    assert taken[0]["fieldsV1"]["f:spec"]["f:replicas"] == {}  # ours kept


def test_fields_outside_the_pod_template_and_restarted_at_stay_foreign():
    rollout = {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
        ".": {}, "f:kubectl.kubernetes.io/restartedAt": {}}}}}}
    paused = {"f:spec": {"f:paused": {}}, "f:metadata": {"f:labels": {"f:team": {}}}}
    obj = _deployment([
        {"manager": OURS, "operation": "Apply", "apiVersion": "apps/v1", "fieldsV1": OUR_FIELDS},
        {"manager": "kubectl-rollout", "operation": "Update", "apiVersion": "apps/v1", "fieldsV1": rollout},
        {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "apps/v1", "fieldsV1": paused},
    ])
    assert foreign_fields(obj, OURS) == {}
    assert take_foreign_fields(obj, OURS) is None


def test_configmap_extra_key_is_foreign_but_a_label_is_not():
    obj = {"kind": "ConfigMap", "metadata": {"managedFields": [
        {"manager": OURS, "operation": "Apply", "apiVersion": "v1", "fieldsV1": {"f:data": {"f:config.yaml": {}}}},
        {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "v1",
         "fieldsV1": {"f:data": {"f:extra": {}}, "f:metadata": {"f:labels": {"f:x": {}}}}},
    ]}}
    assert foreign_fields(obj, OURS) == {"kubectl-edit/Update": {"f:data": {"f:extra": {}}}}
    taken = take_foreign_fields(obj, OURS)
    assert taken[0]["fieldsV1"] == {"f:data": {"f:config.yaml": {}, "f:extra": {}}}
    assert taken[1]["fieldsV1"] == {"f:metadata": {"f:labels": {"f:x": {}}}}


def test_protected_view_leaves_out_the_restart_annotation():
    a = _deployment([], {"kubectl.kubernetes.io/restartedAt": "t1"})
    b = _deployment([], {"kubectl.kubernetes.io/restartedAt": "t2"})
    assert protected_view(a) == protected_view(b)
    c = _deployment([], {"other": "x"})
    assert protected_view(a) != protected_view(c)
    assert a["spec"]["template"]["metadata"]["annotations"]  # the object itself is not modified
