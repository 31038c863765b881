"""The operator against a real control plane (etcd + kube-apiserver + controller-manager + scheduler + kwok).

One operator process for the module; every test works in its own namespace.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kuberag_contract import ANNOTATION_CONFIG_HASH, ANNOTATION_STATIC_CONFIG_HASH
from kuberag_contract.config import parse_config
from kubernetes import client

from tests.fixtures.operator_process import OperatorProcess, install_crd, ragservice, sample, wait_for

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "kuberag.io", "v1alpha1", "ragservices"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    install_crd(control_plane)
    # Before the operator starts, so it watches ServiceMonitors (kopf resolves its types at start).
    control_plane.install_servicemonitor_crd()
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log").start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api(control_plane):
    with control_plane.api_client() as a:
        yield a


@pytest.fixture
def ns(control_plane):
    return control_plane.create_namespace(f"op-{uuid.uuid4().hex[:8]}")


class Kube:
    def __init__(self, api_client, namespace, operator):
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.ns = namespace
        self.operator = operator

    def create(self, body):
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def get(self, name):
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def patch(self, name, spec_patch):
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec_patch})

    def secret(self, name, data):
        self.core.create_namespaced_secret(self.ns, client.V1Secret(metadata=client.V1ObjectMeta(name=name),
                                                                    string_data=data))

    def deployment(self, name):
        try:
            return self.apps.read_namespaced_deployment(name, self.ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def condition(self, name, ctype):
        for c in (self.get(name).get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return c
        return None

    def wait(self, probe, what, timeout=TIMEOUT):
        return wait_for(probe, timeout=timeout, what=what, diagnose=self.operator.log_tail)


@pytest.fixture
def kube(api, ns, operator):
    return Kube(api, ns, operator)


def _sample_in(kube: Kube) -> dict:
    doc = sample()
    doc["metadata"]["namespace"] = kube.ns
    kube.secret("docs-qa-admin", {"apiKey": "s3cret"})
    kube.core.create_namespaced_config_map(kube.ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="docs-qa-corpus"), data={"intro.md": "# kuberag\nQuestions over docs."}))
    return doc


def test_sample_gets_every_child_with_owner_refs_and_becomes_available(kube, operator):
    doc = _sample_in(kube)
    created = kube.create(doc)
    uid = created["metadata"]["uid"]
    dep = kube.wait(lambda: kube.deployment("docs-qa"), "the Deployment")
    svc = kube.wait(lambda: kube.core.read_namespaced_service("docs-qa", kube.ns), "the Service")
    metrics_svc = kube.wait(lambda: kube.core.read_namespaced_service("docs-qa-metrics", kube.ns), "the metrics Service")
    cm = kube.wait(lambda: kube.core.read_namespaced_config_map("docs-qa-config", kube.ns), "the ConfigMap")
    pdb = kube.wait(lambda: client.PolicyV1Api(kube.core.api_client).read_namespaced_pod_disruption_budget(
        "docs-qa", kube.ns), "the PodDisruptionBudget")
    for obj in (dep, svc, metrics_svc, cm, pdb):
        (ref,) = obj.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
            "RagService", "docs-qa", uid, True, True)
        assert obj.metadata.labels["app.kubernetes.io/managed-by"] == "kuberag-operator"
    # The pinned shape, as the API server stored it.
    pod = dep.spec.template.spec
    assert [c.name for c in pod.containers] == ["api", "redis"]
    api_ctr = pod.containers[0]
    assert api_ctr.command == ["kuberag", "serve"]
    assert {p.name: p.container_port for p in api_ctr.ports} == {"http": 8000, "metrics": 9090}
    assert api_ctr.security_context.read_only_root_filesystem and api_ctr.security_context.run_as_user == 65532
    config_mount = next(m for m in api_ctr.volume_mounts if m.name == "config")
    assert config_mount.mount_path == "/etc/kuberag" and not config_mount.sub_path
    assert dep.spec.replicas == 2
    assert [p.name for p in svc.spec.ports] == ["http"] and [p.name for p in metrics_svc.spec.ports] == ["metrics"]
    config = parse_config(cm.data["config.yaml"])
    assert config.rate_limit.requests_per_minute == 60 and config.cache.l1.max_entries == 5000

    # kwok runs the pods: readyReplicas and Available follow.
    def available():
        st = kube.get("docs-qa").get("status") or {}
        cond = kube.condition("docs-qa", "Available")
        return st.get("readyReplicas") == 2 and cond and cond["status"] == "True" and st
    # kwok may take a while to mark pods Ready on a loaded machine: a generous bound.
    status = kube.wait(available, "status.readyReplicas=2 and Available=True", timeout=120)
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert status["endpoint"] == f"http://docs-qa.{kube.ns}.svc:8000"
    assert status["selector"] == "app.kubernetes.io/name=kuberag,app.kubernetes.io/instance=docs-qa"
    assert status["configHash"] == cm.metadata.annotations[ANNOTATION_CONFIG_HASH]
    assert kube.condition("docs-qa", "Degraded")["status"] == "False"

    def created_event():
        events = kube.core.list_namespaced_event(kube.ns, field_selector=f"involvedObject.uid={uid}").items
        return [e for e in events if e.reason == "Created" and e.involved_object.kind == "RagService"]
    (event,) = kube.wait(created_event, "a Created event on the RagService")
    assert "Deployment/docs-qa" in event.message


def _reconciled_service(kube: Kube, name: str, spec: dict | None = None) -> dict:
    """Create a RagService and wait until the operator has applied its spec (children + status written)."""
    created = kube.create(ragservice(name, kube.ns, spec))

    def reconciled():
        rs = kube.get(name)
        return (rs.get("status") or {}).get("observedGeneration") == created["metadata"]["generation"] and rs
    return kube.wait(reconciled, f"{name} to be reconciled")


def test_spec_edit_rolls_the_deployment_and_advances_observed_generation(kube):
    before = _reconciled_service(kube, "edit-me")
    kube.patch("edit-me", {"image": "ghcr.io/kuberag/kuberag:9.9.9"})
    kube.wait(lambda: kube.deployment("edit-me").spec.template.spec.containers[0].image == "ghcr.io/kuberag/kuberag:9.9.9",
              "the Deployment's image to follow the spec")
    kube.wait(lambda: kube.get("edit-me")["status"]["observedGeneration"] == before["metadata"]["generation"] + 1,
              "observedGeneration to advance")

    def updated_event():
        events = kube.core.list_namespaced_event(
            kube.ns, field_selector=f"involvedObject.uid={before['metadata']['uid']}").items
        return [e for e in events if e.reason == "Updated" and "Deployment/edit-me" in e.message]
    kube.wait(updated_event, "an Updated event naming the changed Deployment")


def test_limit_edit_changes_only_the_configmap(kube):
    before = _reconciled_service(kube, "limits")
    dep_before = kube.deployment("limits")
    kube.patch("limits", {"rateLimit": {"requestsPerMinute": 7, "burst": 3}, "cache": {"l2": {"ttlSeconds": 42}}})

    def new_config():
        cm = kube.core.read_namespaced_config_map("limits-config", kube.ns)
        cfg = parse_config(cm.data["config.yaml"])
        return cfg.rate_limit.requests_per_minute == 7 and cfg.cache.l2.ttl_seconds == 42 and cm
    cm = kube.wait(new_config, "the ConfigMap to carry the new limits")
    kube.wait(lambda: kube.get("limits")["status"]["configHash"] == cm.metadata.annotations[ANNOTATION_CONFIG_HASH],
              "status.configHash to follow")
    assert kube.get("limits")["status"]["configHash"] != before["status"]["configHash"]
    dep_after = kube.deployment("limits")
    # Same pod template (no roll): the Deployment's generation did not move.
    assert dep_after.metadata.generation == dep_before.metadata.generation
    assert dep_after.spec.template.metadata.annotations[ANNOTATION_STATIC_CONFIG_HASH] == \
        dep_before.spec.template.metadata.annotations[ANNOTATION_STATIC_CONFIG_HASH]


def test_deleted_or_edited_child_is_restored(kube, operator):
    _reconciled_service(kube, "drift")
    drift_before = sum(v for k, v in operator.metrics().items() if k.startswith("kuberag_operator_drift_corrections_total"))
    old_uid = kube.core.read_namespaced_service("drift", kube.ns).metadata.uid
    kube.core.delete_namespaced_service("drift", kube.ns)

    def restored():
        try:
            return kube.core.read_namespaced_service("drift", kube.ns).metadata.uid != old_uid
        except client.ApiException as exc:
            assert exc.status == 404
            return False
    kube.wait(restored, "the deleted Service to come back", timeout=15)
    kube.apps.patch_namespaced_deployment("drift", kube.ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "api", "image": "evil/image:1"}]}}}})
    kube.wait(lambda: kube.deployment("drift").spec.template.spec.containers[0].image != "evil/image:1",
              "the hand-edited Deployment to be restored", timeout=15)
    kube.wait(lambda: sum(v for k, v in operator.metrics().items()
                          if k.startswith("kuberag_operator_drift_corrections_total")) >= drift_before + 2,
              "two drift corrections counted")
    # No flapping: once restored, the Deployment stays put.
    rv = kube.deployment("drift").spec.template.spec.containers[0].image
    gen = kube.deployment("drift").metadata.generation
    time.sleep(2)
    assert kube.deployment("drift").metadata.generation == gen and rv == kube.deployment("drift").spec.template.spec.containers[0].image


def test_deleting_the_ragservice_garbage_collects_children(kube):
    _reconciled_service(kube, "gone", {"replicas": 2})
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, kube.ns, PLURAL, "gone")

    def all_gone():
        return (kube.deployment("gone") is None
                and not kube.core.list_namespaced_service(kube.ns).items
                and not [c for c in kube.core.list_namespaced_config_map(kube.ns).items if c.metadata.name == "gone-config"])
    kube.wait(all_gone, "the children to be garbage-collected", timeout=90)


BAD_SPECS = [
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas"),
    ({"cache": {"l3": {"threshold": 0}}}, "spec.cache.l3.threshold must be in (0,1]"),
    ({"cache": {"l3": {"threshold": 1.5}}}, "spec.cache.l3.threshold must be in (0,1]"),
    ({"rateLimit": {"scope": "shared"}},
     "spec.rateLimit.scope 'shared' requires spec.rateLimit.redis.url or spec.rateLimit.redis.secretRef"),
    ({"ingestion": {"enabled": True}, "replicas": 3},
     "spec.ingestion.enabled with more than one replica or autoscaling requires a shared vector store"),
    ({"ingestion": {"enabled": True}, "autoscaling": {"maxReplicas": 3}},
     "spec.ingestion.enabled with more than one replica or autoscaling requires a shared vector store"),
    ({"retrieval": {"chunkSize": 200, "chunkOverlap": 300}},
     "spec.retrieval.chunkOverlap must be smaller than spec.retrieval.chunkSize"),
    ({"replicas": -1}, "spec.replicas"),
    ({"rateLimit": {"keySource": "cookie"}}, "spec.rateLimit.keySource"),
    # Every field that ends up in a child is checked at admission, naming the RagService's field.
    ({"image": ""}, "spec.image"),
    ({"image": "ghcr.io/kuberag/kuberag: 1"}, "spec.image"),
    ({"cache": {"redis": {"image": ""}}}, "spec.cache.redis.image"),
    ({"resources": {"requests": {"cpu": "2 cores"}}}, "spec.resources.requests.cpu"),
    ({"resources": {"limits": {"memory": -1}}}, "spec.resources.limits.memory"),
    ({"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}},
     "spec.resources: each request must be less than or equal to its limit"),
    ({"resources": {"requests": {"cpus": "1"}}}, "spec.resources.requests: resource names are cpu, memory"),
    ({"cache": {"redis": {"resources": {"requests": {"memory": "lots"}}}}}, "spec.cache.redis.resources.requests.memory"),
    ({"adminKeySecretRef": {"name": ""}}, "spec.adminKeySecretRef.name"),
    ({"adminKeySecretRef": {"name": "Bad_Name"}}, "spec.adminKeySecretRef.name"),
    ({"adminKeySecretRef": {"name": "ok", "key": ""}}, "spec.adminKeySecretRef.key"),
    ({"llm": {"url": "not a url"}}, "spec.llm.url"),
    ({"llm": {"url": "http://llm", "model": ""}}, "spec.llm.model"),
    ({"embeddings": {"url": "http://e", "apiKeySecretRef": {"name": ""}}}, "spec.embeddings.apiKeySecretRef.name"),
    ({"rateLimit": {"scope": "shared", "redis": {"url": "http://redis"}}}, "spec.rateLimit.redis.url"),
    ({"rateLimit": {"scope": "shared", "redis": {"secretRef": {"name": ""}}}}, "spec.rateLimit.redis.secretRef.name"),
    ({"corpus": {"configMap": {"name": ""}}}, "spec.corpus.configMap.name"),
    ({"corpus": {"volume": {}}}, "spec.corpus.volume"),
    ({"corpus": {"volume": {"persistentVolumeClaim": {"claimName": "a"}, "emptyDir": {}}}}, "spec.corpus.volume"),
    ({"rateLimit": {"tokensPerMinute": 0}}, "spec.rateLimit.tokensPerMinute"),
    ({"retrieval": {"embeddingModel": "bert-base"}}, "spec.retrieval.embeddingModel"),
    ({"llm": {"url": "http://llm/v1", "maxRetries": 50}}, "spec.llm.maxRetries"),
    ({"llm": {"url": "http://llm/v1", "timeouts": {"totalSeconds": 0}}}, "spec.llm.timeouts.totalSeconds"),
    ({"llm": {"url": "http://llm/v1", "prices": {"m" * 300: {"promptPer1k": 1}}}},
     "spec.llm.prices: model names are at most 253 characters"),
    ({"rateLimit": {"keySource": "userId"}}, "spec.rateLimit.keySource 'userId' was removed"),
    ({"rateLimit": {"trustedProxies": ["10.0.0.0/33"]}},
     "spec.rateLimit.trustedProxies: each entry must be an IP address or a CIDR network"),
    ({"rateLimit": {"perUser": {"burst": 3}}}, "spec.rateLimit.perUser.requestsPerMinute"),
    ({"vectorStore": {"url": "weaviate:8080"}}, "spec.vectorStore.url"),
    ({"vectorStore": {"url": "http://weaviate:8080/v1"}}, "spec.vectorStore.url"),
    ({"vectorStore": {"url": "http://w:8080", "grpcPort": 0}}, "spec.vectorStore.grpcPort"),
    ({"vectorStore": {"url": "http://w:8080", "pollSeconds": 2}}, "spec.vectorStore.pollSeconds"),
    ({"vectorStore": {"url": "http://w:8080", "timeouts": {"querySeconds": 0}}}, "spec.vectorStore.timeouts.querySeconds"),
    ({"vectorStore": {"url": "http://w:8080", "apiKeySecretRef": {"name": ""}}}, "spec.vectorStore.apiKeySecretRef.name"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[m[:40] for _, m in BAD_SPECS])
def test_bad_specs_are_refused_with_a_message_naming_the_field(kube, spec, message):
    with pytest.raises(client.ApiException) as err:
        kube.create(ragservice("bad", kube.ns, spec))
    assert err.value.status == 422
    assert message in err.value.body


def test_identity_settings_are_accepted(kube):
    kube.create(ragservice("identity", kube.ns, {
        "rateLimit": {"keySource": "auto", "perUser": {"requestsPerMinute": 10, "burst": 2},
                      "trustedProxies": ["172.21.0.0/16", "172.22.0.1", "fd00::/8"]},
        "clientKeysSecretRef": {"name": "identity-clients"}}))
    spec = kube.get("identity")["spec"]
    assert spec["clientKeysSecretRef"]["key"] == "clients.yaml"


def test_good_spec_with_ingestion_and_shared_store_is_accepted(kube):
    kube.create(ragservice("ingest", kube.ns, {"replicas": 3, "ingestion": {"enabled": True},
                                               "vectorStore": {"url": "http://weaviate:8080"}}))
    spec = kube.get("ingest")["spec"]  # defaults applied by the API server
    assert spec["retrieval"]["embeddingModel"] == "multilingual-e5-small" and spec["cache"]["l3"]["enabled"] is True
    assert "threshold" not in spec["cache"]["l3"]  # unset: the embedding model's calibrated threshold


def test_missing_secret_degrades_then_recovers(kube):
    kube.create(ragservice("needs-key", kube.ns, {"adminKeySecretRef": {"name": "late-secret"}}))

    def degraded():
        c = kube.condition("needs-key", "Degraded")
        return c and c["status"] == "True" and c
    cond = kube.wait(degraded, "Degraded=True")
    assert cond["reason"] == "SecretMissing"
    assert f"spec.adminKeySecretRef: Secret {kube.ns}/late-secret not found" in cond["message"]
    assert kube.deployment("needs-key") is None
    kube.secret("late-secret", {"apiKey": "k"})
    # Retried with backoff (5s, 10s, ...): recovery within the next retries.
    kube.wait(lambda: (kube.condition("needs-key", "Degraded") or {}).get("status") == "False",
              "recovery once the Secret exists", timeout=45)
    assert kube.deployment("needs-key") is not None


def test_scale_subresource_with_kubectl(kube, control_plane):
    _reconciled_service(kube, "scaled", {"replicas": 1})
    out = control_plane.kubectl("-n", kube.ns, "scale", "ragservice/scaled", "--replicas=3", check=False)
    assert out.returncode == 0, out.stderr
    kube.wait(lambda: kube.deployment("scaled").spec.replicas == 3, "the Deployment to scale to 3")
    kube.wait(lambda: kube.get("scaled")["status"].get("readyReplicas") == 3, "3 ready replicas in status", 120)
    scale = kube.custom.get_namespaced_custom_object_scale(GROUP, VERSION, kube.ns, PLURAL, "scaled")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "app.kubernetes.io/name=kuberag,app.kubernetes.io/instance=scaled"
    # kubectl get shows the printer columns.
    out = control_plane.kubectl("-n", kube.ns, "get", "rag", "scaled")
    header = out.stdout.splitlines()[0].split()
    assert header == ["NAME", "REPLICAS", "READY", "ENDPOINT", "AVAILABLE", "AGE"], out.stdout


def test_autoscaling_adds_an_hpa_and_turning_it_off_prunes_it(kube):
    autoscaling = client.AutoscalingV2Api(kube.core.api_client)
    kube.create(ragservice("auto", kube.ns, {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}))
    hpa = kube.wait(lambda: autoscaling.read_namespaced_horizontal_pod_autoscaler("auto", kube.ns), "the HPA")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 5)
    # The operator does not own replicas under autoscaling (the HPA does).
    managers = {f.manager: f for f in kube.deployment("auto").metadata.managed_fields}
    assert "f:replicas" not in str(managers["kuberag-operator"].fields_v1.get("f:spec", {}))
    kube.patch("auto", {"autoscaling": None})  # merge patch: null removes the field

    def pruned():
        try:
            autoscaling.read_namespaced_horizontal_pod_autoscaler("auto", kube.ns)
            return False
        except client.ApiException as exc:
            return exc.status == 404
    kube.wait(pruned, "the HPA to be pruned")
    kube.wait(lambda: kube.deployment("auto").spec.replicas == 1, "replicas back to spec.replicas")


def test_servicemonitor_follows_the_spec_and_is_restored(kube):
    spec = {"monitoring": {"serviceMonitor": {"enabled": True}}, "networkPolicy": {"enabled": True}}
    kube.create(ragservice("watched", kube.ns, spec))
    net = client.NetworkingV1Api(kube.core.api_client)
    kube.wait(lambda: net.read_namespaced_network_policy("watched", kube.ns), "the NetworkPolicy")
    kube.patch("watched", {"monitoring": {"serviceMonitor": {"interval": "10s"}}})

    def servicemonitor():
        try:
            return kube.custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", kube.ns, "servicemonitors",
                                                            "watched")
        except client.ApiException as exc:
            assert exc.status == 404, exc
            return None
    sm = kube.wait(lambda: (m := servicemonitor()) and m["spec"]["endpoints"][0]["interval"] == "10s" and m,
                   "the ServiceMonitor with the edited interval")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert kube.wait(lambda: (kube.condition("watched", "MonitoringReady") or {}).get("status") == "True",
                     "MonitoringReady=True")
    # Drift: a deleted ServiceMonitor comes back through the watch, well before the 5-minute timer
    # (once the pods are Ready, so no Deployment event triggers a reconcile meanwhile).
    assert kube.wait(lambda: (kube.condition("watched", "Available") or {}).get("status") == "True", "Available=True")
    uid = sm["metadata"]["uid"]
    kube.custom.delete_namespaced_custom_object("monitoring.coreos.com", "v1", kube.ns, "servicemonitors", "watched")
    restored = kube.wait(lambda: (m := servicemonitor()) and m["metadata"]["uid"] != uid and m,
                         "the deleted ServiceMonitor restored")
    assert restored["spec"]["endpoints"][0]["interval"] == "10s"


def test_operator_metrics_and_health(operator, kube):
    _reconciled_service(kube, "metered")
    samples = operator.metrics()
    assert samples['kuberag_operator_reconciles_total{result="success"}'] >= 1
    assert samples["kuberag_operator_managed_ragservices"] >= 1
    assert samples["kuberag_operator_reconcile_duration_seconds_count"] >= 1
    assert operator.http_get(operator.health_port, "/healthz")[0] == 200


@pytest.mark.parametrize("order", [("docs", "docs-metrics"), ("docs-metrics", "docs")], ids=["owner-first", "owner-last"])
def test_a_name_that_would_collide_with_another_ragservices_child_is_refused(kube, order):
    """RagService docs owns Service docs-metrics: a RagService named docs-metrics would claim it."""
    for name in order:
        if name == "docs":
            kube.create(ragservice(name, kube.ns))
            continue
        with pytest.raises(client.ApiException) as err:
            kube.create(ragservice(name, kube.ns))
        assert err.value.status == 422
        assert "metadata.name must not end in -config, -metrics, -index" in err.value.body
    for suffix in ("config", "index"):
        with pytest.raises(client.ApiException):
            kube.create(ragservice(f"docs-{suffix}", kube.ns))


def test_names_longer_than_55_characters_are_refused(kube):
    _reconciled_service(kube, "a" * 55)
    assert kube.core.read_namespaced_service("a" * 55 + "-metrics", kube.ns)
    with pytest.raises(client.ApiException) as err:
        kube.create(ragservice("a" * 56, kube.ns))
    assert err.value.status == 422
    assert "metadata.name must be at most 55 characters" in err.value.body


def _events(kube, uid, reason):
    return [e for e in kube.core.list_namespaced_event(kube.ns, field_selector=f"involvedObject.uid={uid}").items
            if e.reason == reason]


def _foreign_owner(kube, name="legacy"):
    """Another controller's object (a ConfigMap stands in for any owner kind)."""
    return kube.core.create_namespaced_config_map(kube.ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name)))


def test_an_object_of_another_controller_is_never_taken_over(kube):
    owner = _foreign_owner(kube)
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="legacy", uid=owner.metadata.uid,
                                  controller=True)
    theirs = kube.core.create_namespaced_service(kube.ns, client.V1Service(
        metadata=client.V1ObjectMeta(name="web-metrics", owner_references=[ref], labels={"app": "legacy"}),
        spec=client.V1ServiceSpec(selector={"app": "legacy"}, ports=[client.V1ServicePort(name="x", port=1234)])))
    created = kube.create(ragservice("web", kube.ns))

    def conflict():
        c = kube.condition("web", "Degraded")
        return c and c["status"] == "True" and c["reason"] == "NameConflict" and c
    cond = kube.wait(conflict, "Degraded=True NameConflict")
    assert "Service web-metrics already exists and is controlled by ConfigMap legacy" in cond["message"]
    kube.wait(lambda: _events(kube, created["metadata"]["uid"], "NameConflict"), "a NameConflict event")
    after = kube.core.read_namespaced_service("web-metrics", kube.ns)
    assert after.metadata.resource_version == theirs.metadata.resource_version  # untouched
    assert kube.deployment("web") is None  # nothing of a half-applied RagService either


def test_a_child_taken_over_by_another_controller_is_not_fought_over(kube, operator):
    _reconciled_service(kube, "taken")
    owner = _foreign_owner(kube)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "legacy", "uid": owner.metadata.uid, "controller": True}
    # Another controller claims the Service (replacing the owner reference), as a second
    # RagService's apply used to.
    kube.core.patch_namespaced_service("taken", kube.ns, [
        {"op": "replace", "path": "/metadata/ownerReferences", "value": [ref]}])

    def conflict():
        c = kube.condition("taken", "Degraded")
        return c and c["status"] == "True" and c["reason"] == "NameConflict" and c
    cond = kube.wait(conflict, "Degraded=True NameConflict")
    assert "Service taken already exists and is controlled by ConfigMap legacy" in cond["message"]
    rv = kube.core.read_namespaced_service("taken", kube.ns).metadata.resource_version
    time.sleep(3)  # a fight would rewrite it many times a second
    svc = kube.core.read_namespaced_service("taken", kube.ns)
    assert svc.metadata.resource_version == rv
    assert [r.kind for r in svc.metadata.owner_references] == ["ConfigMap"]


def test_an_apply_error_the_schema_cannot_catch_is_reported_in_ragservice_terms(kube):
    """A volume source the CRD keeps opaque: the Deployment is refused; status names spec.corpus."""
    kube.create(ragservice("badvol", kube.ns, {"corpus": {"volume": {"persistentVolumeClaim": {}}}}))

    def invalid():
        c = kube.condition("badvol", "Degraded")
        return c and c["status"] == "True" and c
    cond = kube.wait(invalid, "Degraded=True")
    assert cond["reason"] == "InvalidSpec", cond
    assert cond["message"].startswith("spec.corpus: "), cond
    assert "spec.template.spec.volumes[2].persistentVolumeClaim.claimName" in cond["message"]
