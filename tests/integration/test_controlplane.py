"""The real control plane behaves as the operator tests need: Deployments get Ready pods on the
kwok node, owner-reference GC runs, CEL validation and server-side apply work, and a
ServiceAccount kubeconfig has exactly the permissions RBAC grants it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from tests.fixtures.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    with control_plane.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> str:
    name = request.node.name.replace("_", "-")[:50].strip("-")
    return control_plane.create_namespace(name)


def deployment(name: str, replicas: int) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                # kwok never pulls or runs the image: any name works.
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="kuberag.invalid/app:1")]),
            ),
        ),
    )


def test_deployment_pods_are_bound_to_the_kwok_node_and_ready(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("web", replicas=3))

    wait_for("3 ready replicas", lambda: apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 3)

    replica_sets = apps.list_namespaced_replica_set(namespace).items
    assert [rs.metadata.owner_references[0].name for rs in replica_sets] == ["web"]
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.spec.node_name == control_plane.node_name
        assert pod.status.phase == "Running"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        assert pod.metadata.owner_references[0].name == replica_sets[0].metadata.name


def test_deleting_an_owner_garbage_collects_its_children(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("gc", replicas=2))
    wait_for("2 ready replicas", lambda: apps.read_namespaced_deployment("gc", namespace).status.ready_replicas == 2)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="child",
        owner_references=[client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)],
    )))

    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    wait_for("the child ConfigMap to be collected",
             lambda: not [c for c in core.list_namespaced_config_map(namespace).items if c.metadata.name == "child"])
    wait_for("the ReplicaSet to be collected", lambda: not apps.list_namespaced_replica_set(namespace).items)
    wait_for("the pods to be deleted", lambda: not core.list_namespaced_pod(namespace).items)


def test_a_crd_cel_rule_refuses_a_bad_object(api: client.ApiClient, namespace: str) -> None:
    ext, custom = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
    schema = {
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
            "x-kubernetes-validations": [
                {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
            ],
        }},
    }
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.kuberag.dev"},
        "spec": {
            "group": "test.kuberag.dev", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    })
    wait_for("the CRD to be Established", lambda: any(
        c.type == "Established" and c.status == "True"
        for c in ext.read_custom_resource_definition("widgets.test.kuberag.dev").status.conditions or []))

    def widget(name: str, low: int, high: int) -> dict:
        return {"apiVersion": "test.kuberag.dev/v1", "kind": "Widget", "metadata": {"name": name},
                "spec": {"minReplicas": low, "maxReplicas": high}}

    # The discovery of a new CRD's REST endpoint can lag Established by a moment.
    wait_for("the good Widget to be created", lambda: _create_ignoring_404(
        lambda: custom.create_namespaced_custom_object("test.kuberag.dev", "v1", namespace, "widgets", widget("ok", 1, 3))))
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("test.kuberag.dev", "v1", namespace, "widgets", widget("bad", 5, 2))
    assert refused.value.status == 422
    assert "minReplicas must not exceed maxReplicas" in refused.value.body


def _create_ignoring_404(create: Callable[[], object]) -> bool:
    try:
        create()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_server_side_apply_tracks_field_owners_and_conflicts(api: client.ApiClient, namespace: str) -> None:
    config_maps = dynamic.DynamicClient(api).resources.get(api_version="v1", kind="ConfigMap")

    def manifest(value: str) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": namespace},
                "data": {"key": value}}

    config_maps.server_side_apply(body=manifest("a"), name="ssa", namespace=namespace, field_manager="first")
    with pytest.raises(ApiException) as conflict:
        config_maps.server_side_apply(body=manifest("b"), name="ssa", namespace=namespace, field_manager="second")
    assert conflict.value.status == 409

    applied = config_maps.server_side_apply(
        body=manifest("b"), name="ssa", namespace=namespace, field_manager="second", force_conflicts=True)
    assert applied.data.key == "b"
    assert [m.manager for m in applied.metadata.managedFields] == ["second"]


def test_service_account_kubeconfig_has_exactly_its_rbac(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader")))
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "reader")

    with control_plane.api_client(kubeconfig) as as_reader:
        reader = client.CoreV1Api(as_reader)
        with pytest.raises(ApiException) as forbidden:
            reader.list_namespaced_config_map(namespace)
        assert forbidden.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in forbidden.value.body

        rbac.create_namespaced_role(namespace, client.V1Role(
            metadata=client.V1ObjectMeta(name="configmap-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list"])],
        ))
        rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ))

        def can_list() -> bool:
            try:
                reader.list_namespaced_config_map(namespace)
            except ApiException as exc:
                if exc.status == 403:  # the authorizer's RBAC cache catches up within moments
                    return False
                raise
            return True

        wait_for("the RoleBinding to take effect", can_list, timeout=15)
        with pytest.raises(ApiException) as still_forbidden:
            reader.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x")))
        assert still_forbidden.value.status == 403


def test_prometheus_operator_crds_install_and_validate(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    installed = control_plane.install_servicemonitor_crd()
    assert installed == [
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ]
    assert control_plane.install_servicemonitor_crd() == installed  # idempotent: apply, not create
    custom = client.CustomObjectsApi(api)

    def service_monitor(name: str, endpoints: object) -> dict:
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": name},
                "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": endpoints}}

    wait_for("a ServiceMonitor to be created", lambda: _create_ignoring_404(lambda: custom.create_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "servicemonitors", service_monitor("ok", [{"port": "metrics"}]))))
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "servicemonitors", service_monitor("bad", "not-a-list"))
    assert refused.value.status == 422
    assert "spec.endpoints" in refused.value.body


def test_pinned_kubectl_talks_to_the_cluster(control_plane: ControlPlane) -> None:
    assert control_plane.kubectl("get", "nodes", "-o", "name").stdout.split() == [f"node/{control_plane.node_name}"]
    version = control_plane.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{control_plane.tools.kubernetes_version}"' in version


def test_restarted_controller_manager_collects_children_of_new_crd_objects_promptly(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    control_plane.apply({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "owners.test.kuberag.dev"},
        "spec": {
            "group": "test.kuberag.dev", "scope": "Namespaced",
            "names": {"plural": "owners", "singular": "owner", "kind": "Owner"},
            "versions": [{"name": "v1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    })
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    owner_doc = {"apiVersion": "test.kuberag.dev/v1", "kind": "Owner", "metadata": {"name": "o"}}
    wait_for("the Owner CRD to serve", lambda: _create_ignoring_404(
        lambda: custom.create_namespaced_custom_object("test.kuberag.dev", "v1", namespace, "owners", owner_doc)))
    # Without the restart the garbage collector learns about the new type only 30-45 s later.
    control_plane.restart_controller_manager()
    owner = custom.get_namespaced_custom_object("test.kuberag.dev", "v1", namespace, "owners", "o")
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(
        name="owned",
        owner_references=[client.V1OwnerReference(
            api_version="test.kuberag.dev/v1", kind="Owner", name="o", uid=owner["metadata"]["uid"])],
    )))

    custom.delete_namespaced_custom_object("test.kuberag.dev", "v1", namespace, "owners", "o")

    wait_for("the ConfigMap owned by the deleted Owner to be collected", lambda: not [
        c for c in core.list_namespaced_config_map(namespace).items if c.metadata.name == "owned"], timeout=10)
    control_plane.assert_running()


def test_kwok_node_keeps_a_fresh_lease_and_stays_ready(control_plane: ControlPlane, api: client.ApiClient) -> None:
    """The node lifecycle controller marks a node NotReady when its heartbeat goes stale: kwok
    must renew the node's Lease (without it the node flapped NotReady every ~55 s)."""
    coordination, core = client.CoordinationV1Api(api), client.CoreV1Api(api)

    def renew_time() -> object:
        try:
            return coordination.read_namespaced_lease(control_plane.node_name, "kube-node-lease").spec.renew_time
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    first = wait_for("the kwok node's Lease in kube-node-lease", renew_time, timeout=30)
    # kwok renews every quarter of the 40 s lease duration.
    wait_for("the Lease to be renewed", lambda: (t := renew_time()) and t > first, timeout=30)
    conditions = {c.type: c.status for c in core.read_node(control_plane.node_name).status.conditions}
    assert conditions["Ready"] == "True"


def test_services_get_cluster_ips_from_the_shared_range(api: client.ApiClient, namespace: str) -> None:
    import ipaddress

    from tests.fixtures.controlplane import SERVICE_CLUSTER_IP_RANGE

    svc = client.CoreV1Api(api).create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="ranged"),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)], selector={"app": "x"})))
    assert SERVICE_CLUSTER_IP_RANGE == "172.20.0.0/16"
    assert ipaddress.ip_address(svc.spec.cluster_ip) in ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)
