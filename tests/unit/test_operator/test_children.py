"""desired_children(): the pure function from a RagService to its children, and the pinned contract."""

import copy
import re

import kuberag_contract as c
import pytest
from kuberag_contract.config import config_hash, parse_config, static_config_hash
from kuberag_operator.children import (
    SpecError,
    api_config,
    child_name,
    desired_children,
    per_pod_total,
    secret_refs,
)
from kuberag_operator.crd import defaulted_spec
from kuberag_operator.names import CHILD_NAME_SUFFIXES, MAX_NAME_LENGTH

pytestmark = pytest.mark.unit


def rag(spec=None, name="demo", namespace="team-a"):
    return {"apiVersion": "kuberag.io/v1alpha1", "kind": "RagService",
            "metadata": {"name": name, "namespace": namespace, "uid": "uid-1234", "generation": 1},
            "spec": spec or {}}


def by_kind(children):
    out = {}
    for ch in children:
        out.setdefault(ch["kind"], []).append(ch)
    return out


def deployment(children):
    return by_kind(children)["Deployment"][0]


def container(children, name):
    return next(x for x in deployment(children)["spec"]["template"]["spec"]["containers"] if x["name"] == name)


def config_of(children):
    return parse_config(by_kind(children)["ConfigMap"][0]["data"][c.CONFIG_FILENAME])


def test_minimal_spec_makes_configmap_deployment_and_two_services():
    children = desired_children(rag())
    assert sorted(ch["kind"] for ch in children) == ["ConfigMap", "Deployment", "Service", "Service"]
    for ch in children:
        meta = ch["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["ownerReferences"] == [{"apiVersion": "kuberag.io/v1alpha1", "kind": "RagService", "name": "demo",
                                            "uid": "uid-1234", "controller": True, "blockOwnerDeletion": True}]
        assert meta["labels"][c.LABEL_NAME] == "kuberag" and meta["labels"][c.LABEL_INSTANCE] == "demo"
        assert meta["labels"][c.LABEL_MANAGED_BY] == c.MANAGED_BY
    services = {s["metadata"]["name"]: s for s in by_kind(children)["Service"]}
    assert services["demo"]["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert services["demo-metrics"]["spec"]["ports"][0]["name"] == "metrics"
    assert deployment(children)["spec"]["replicas"] == 1


def test_api_container_follows_the_pinned_contract():
    children = desired_children(rag({"adminKeySecretRef": {"name": "adm"}, "corpus": {"configMap": {"name": "docs"}},
                                     "llm": {"url": "http://llm:8000/v1", "model": "m",
                                             "apiKeySecretRef": {"name": "llm-key", "key": "k"}}}))
    api = container(children, c.CONTAINER_API)
    assert api["command"] == ["kuberag", "serve"]
    env = {e["name"]: e for e in api["env"]}
    assert env[c.ENV_HOST]["value"] == "0.0.0.0"
    assert env[c.ENV_PORT]["value"] == "8000" and env[c.ENV_METRICS_PORT]["value"] == "9090"
    assert env[c.ENV_REDIS_URL]["value"] == "redis://127.0.0.1:6379/0"
    assert env[c.ENV_DATA_DIR]["value"] == c.DATA_DIR and env[c.ENV_CONFIG]["value"] == c.CONFIG_PATH
    assert env[c.ENV_NAMESPACE]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "app.kubernetes.io/instance" in env[c.ENV_SERVICE_NAME]["valueFrom"]["fieldRef"]["fieldPath"]
    assert env[c.ENV_ADMIN_API_KEY]["valueFrom"]["secretKeyRef"] == {"name": "adm", "key": "apiKey"}
    assert env[c.ENV_LLM_API_KEY]["valueFrom"]["secretKeyRef"] == {"name": "llm-key", "key": "k"}
    assert c.ENV_LIMITER_REDIS_URL not in env  # perReplica scope
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": 8000, "metrics": 9090}
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    sc = api["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] == 65532 and sc["readOnlyRootFilesystem"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["allowPrivilegeEscalation"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["name"]: m for m in api["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/kuberag", "readOnly": True}  # never subPath
    assert mounts["data"]["mountPath"] == c.DATA_DIR and not mounts["data"].get("readOnly")
    assert mounts["corpus"]["readOnly"] and mounts["corpus"]["mountPath"] == c.CORPUS_DIR
    volumes = {v["name"]: v for v in deployment(children)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "demo-config"
    assert volumes["data"] == {"name": "data", "emptyDir": {}}
    assert volumes["corpus"]["configMap"]["name"] == "docs"
    assert config_of(children).corpus.path == c.CORPUS_DIR
    assert config_of(children).providers.llm.url == "http://llm:8000/v1"


def test_redis_sidecar_is_pinned_and_hardened():
    children = desired_children(rag({"cache": {"redis": {"maxMemory": "256mb"}}}))
    redis = container(children, c.CONTAINER_REDIS)
    assert redis["command"] == c.redis_sidecar_args("256mb")
    assert "--bind" in redis["command"] and redis["command"][redis["command"].index("--bind") + 1] == "127.0.0.1"
    assert redis["securityContext"]["readOnlyRootFilesystem"] and redis["securityContext"]["runAsNonRoot"]


def test_pod_annotation_is_the_static_hash_and_configmap_carries_the_full_hash():
    children = desired_children(rag())
    cm = by_kind(children)["ConfigMap"][0]
    cfg = config_of(children)
    ann = deployment(children)["spec"]["template"]["metadata"]["annotations"]
    assert ann == {c.ANNOTATION_STATIC_CONFIG_HASH: static_config_hash(cfg)}
    assert cm["metadata"]["annotations"][c.ANNOTATION_CONFIG_HASH] == config_hash(cm["data"][c.CONFIG_FILENAME])


def test_rate_limit_and_ttl_edits_change_only_the_configmap():
    base = {"replicas": 2, "rateLimit": {"requestsPerMinute": 60}}
    edited = copy.deepcopy(base)
    edited["rateLimit"]["requestsPerMinute"] = 5
    edited["cache"] = {"l1": {"ttlSeconds": 30}, "l3": {"threshold": 0.9}}
    before, after = desired_children(rag(base)), desired_children(rag(edited))
    assert deployment(before) == deployment(after)
    assert config_of(after).rate_limit.requests_per_minute == 5
    assert config_of(after).cache.l3.threshold == 0.9
    assert by_kind(before)["ConfigMap"] != by_kind(after)["ConfigMap"]


@pytest.mark.parametrize("edit", [
    {"image": "ghcr.io/kuberag/kuberag:0.2.0"},
    {"resources": {"requests": {"cpu": "1"}}},
    {"llm": {"url": "http://other/v1"}},
    {"retrieval": {"topK": 9}},
])
def test_static_edits_roll_the_pods(edit):
    before = deployment(desired_children(rag()))["spec"]["template"]
    after = deployment(desired_children(rag(edit)))["spec"]["template"]
    assert before != after


def test_total_limit_is_divided_by_replicas_rounding_up():
    assert per_pod_total(100, 3) == 34 and per_pod_total(2, 5) == 1 and per_pod_total(None, 3) is None
    cfg = config_of(desired_children(rag({"replicas": 3, "rateLimit": {"totalRequestsPerMinute": 100}})))
    assert cfg.rate_limit.total_requests_per_minute == 34
    auto = {"autoscaling": {"minReplicas": 2, "maxReplicas": 8}, "rateLimit": {"totalRequestsPerMinute": 100}}
    assert config_of(desired_children(rag(auto))).rate_limit.total_requests_per_minute == 50
    assert config_of(desired_children(rag(auto), current_replicas=5)).rate_limit.total_requests_per_minute == 20


def test_autoscaling_adds_hpa_and_leaves_replicas_to_it():
    children = desired_children(rag({"autoscaling": {"minReplicas": 2, "maxReplicas": 6,
                                                     "targetCPUUtilizationPercentage": 70}}))
    kinds = by_kind(children)
    assert "replicas" not in deployment(children)["spec"]
    hpa = kinds["HorizontalPodAutoscaler"][0]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert "PodDisruptionBudget" in kinds  # min 2 pods


def test_pdb_only_with_more_than_one_replica():
    assert "PodDisruptionBudget" not in by_kind(desired_children(rag({"replicas": 1})))
    pdb = by_kind(desired_children(rag({"replicas": 3})))["PodDisruptionBudget"][0]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_monitoring_and_network_policy_toggles():
    assert {"ServiceMonitor", "NetworkPolicy"}.isdisjoint(by_kind(desired_children(rag())))
    kinds = by_kind(desired_children(rag({"monitoring": {"serviceMonitor": {"enabled": True, "interval": "15s"}},
                                          "networkPolicy": {"enabled": True}})))
    sm = kinds["ServiceMonitor"][0]["spec"]
    assert sm["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s", "relabelings": [
        # the label the dashboards and alerts group the API's series by
        {"sourceLabels": ["__meta_kubernetes_service_label_app_kubernetes_io_instance"], "targetLabel": "ragservice",
         "action": "replace"}]}]
    assert sm["selector"]["matchLabels"][c.LABEL_COMPONENT] == "metrics"
    np = kinds["NetworkPolicy"][0]["spec"]
    assert np["podSelector"]["matchLabels"][c.LABEL_INSTANCE] == "demo"


def test_shared_scope_passes_the_limiter_redis():
    by_url = desired_children(rag({"rateLimit": {"scope": "shared", "redis": {"url": "redis://r:6379/1"}}}))
    env = {e["name"]: e for e in container(by_url, "api")["env"]}
    assert env[c.ENV_LIMITER_REDIS_URL]["value"] == "redis://r:6379/1"
    by_secret = desired_children(rag({"rateLimit": {"scope": "shared", "redis": {"secretRef": {"name": "lim", "key": "url"}}}}))
    env = {e["name"]: e for e in container(by_secret, "api")["env"]}
    assert env[c.ENV_LIMITER_REDIS_URL]["valueFrom"]["secretKeyRef"] == {"name": "lim", "key": "url"}
    assert config_of(by_secret).rate_limit.scope == "shared"


def test_desired_children_is_pure_and_deterministic():
    r = rag({"replicas": 2})
    snapshot = copy.deepcopy(r)
    assert desired_children(r) == desired_children(r)
    assert r == snapshot


def test_a_spec_the_contract_refuses_is_a_clear_error():
    with pytest.raises(SpecError, match="threshold"):
        api_config(defaulted_spec({"cache": {"l3": {"threshold": 1.5}}}), replicas=1)


def test_child_names_of_the_longest_allowed_name_stay_valid_dns_labels():
    longest = "a" * MAX_NAME_LENGTH
    for suffix in CHILD_NAME_SUFFIXES:
        assert len(child_name(longest, suffix)) <= 63
    assert child_name("demo", "config") == "demo-config"
    with pytest.raises(ValueError, match="not reserved"):
        child_name("demo", "extra")


def test_child_name_suffixes_are_single_words():
    # The no-collision argument in names.py needs suffixes without '-' (the last word decides).
    for suffix in CHILD_NAME_SUFFIXES:
        assert re.fullmatch("[a-z0-9]+", suffix), suffix


def test_children_only_use_reserved_suffixes():
    rs = {"apiVersion": "kuberag.io/v1alpha1", "kind": "RagService",
          "metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
          "spec": {"replicas": 2, "autoscaling": {"maxReplicas": 3}, "networkPolicy": {"enabled": True},
                   "monitoring": {"serviceMonitor": {"enabled": True}}}}
    for child in desired_children(rs):
        name = child["metadata"]["name"]
        assert name == "demo" or name.removeprefix("demo-") in CHILD_NAME_SUFFIXES, name


def _existing(owner_refs=None, labels=None, managers=()):
    return {"kind": "Service", "metadata": {"name": "web-metrics", "ownerReferences": owner_refs or [],
                                            "labels": labels or {},
                                            "managedFields": [{"manager": m} for m in managers]}}


def test_ownership_problem_adopts_only_what_this_ragservice_controls_or_orphaned():
    from kuberag_operator.reconcile import ownership_problem

    mine = {"kind": "RagService", "name": "web", "uid": "u1", "controller": True}
    assert ownership_problem(_existing([mine]), "web", "u1") is None
    other = {"kind": "RagService", "name": "web-x", "uid": "u2", "controller": True}
    assert ownership_problem(_existing([other]), "web", "u1") == \
        "Service web-metrics already exists and is controlled by RagService web-x"
    stale = {**mine, "uid": "old"}
    assert "previous RagService web (uid old)" in ownership_problem(_existing([stale]), "web", "u1")
    deployment = {"kind": "Deployment", "name": "legacy", "uid": "u3", "controller": True}
    assert "controlled by Deployment legacy" in ownership_problem(_existing([deployment]), "web", "u1")
    # A non-controller reference does not make it ours.
    assert ownership_problem(_existing([{**mine, "controller": False}]), "web", "u1") is not None
    # Orphaned (--cascade=orphan) but made by the operator for a RagService of this name: adopted.
    ours = {"app.kubernetes.io/managed-by": "kuberag-operator", "app.kubernetes.io/instance": "web"}
    assert ownership_problem(_existing(labels=ours), "web", "u1") is None
    assert ownership_problem(_existing(labels={**ours, "app.kubernetes.io/instance": "x"}), "web", "u1") is not None
    assert ownership_problem(_existing(managers=["kubectl-create"]), "web", "u1") == (
        "Service web-metrics already exists and was not created by the kuberag operator for this RagService "
        "(written by kubectl-create)")


def test_llm_resilience_token_limits_and_embedding_model_reach_the_api_config():
    spec = defaulted_spec({
        "llm": {"url": "http://vllm:8000/v1", "model": "qwen", "maxTokens": 256, "contextTokens": 4096,
                "maxRetries": 3, "timeouts": {"firstTokenSeconds": 10},
                "prices": {"qwen": {"promptPer1k": 0.1, "completionPer1k": 0.2}},
                "apiKeySecretRef": {"name": "llm-key"}},
        "rateLimit": {"tokensPerMinute": 20000, "tokenBurst": 40000},
        "retrieval": {"embeddingModel": "all-MiniLM-L6-v2"},
    })
    config = api_config(spec, replicas=1)
    llm = config.providers.llm
    assert (llm.max_tokens, llm.context_tokens, llm.max_retries) == (256, 4096, 3)
    assert llm.timeouts.first_token_seconds == 10 and llm.timeouts.total_seconds == 60
    assert llm.prices["qwen"].completion_per_1k == 0.2
    assert (config.rate_limit.tokens_per_minute, config.rate_limit.token_burst) == (20000, 40000)
    assert config.retrieval.embedding_model == "all-MiniLM-L6-v2"
    assert defaulted_spec({})["retrieval"]["embeddingModel"] == "multilingual-e5-small"


def test_client_keys_secret_is_mounted_as_a_directory_and_identity_settings_reach_the_config():
    spec = {"clientKeysSecretRef": {"name": "clients"},
            "rateLimit": {"keySource": "apiKey", "perUser": {"requestsPerMinute": 10, "burst": 2},
                          "trustedProxies": ["172.21.0.0/16"]}}
    children = desired_children(rag(spec))
    api = container(children, c.CONTAINER_API)
    assert {"name": c.ENV_CLIENT_KEYS, "value": c.CLIENT_KEYS_PATH} in api["env"]
    mount = next(m for m in api["volumeMounts"] if m["mountPath"] == c.CLIENT_KEYS_DIR)
    assert mount["readOnly"] and "subPath" not in mount  # so a key rotation reaches the pod live
    volume = next(v for v in deployment(children)["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "clients"
    assert volume["secret"]["items"] == [{"key": "clients.yaml", "path": c.CLIENT_KEYS_FILENAME}]
    rl = config_of(children).rate_limit
    assert rl.key_source == "clientKey"  # apiKey (and auto) are earlier names of clientKey
    assert (rl.per_user.requests_per_minute, rl.per_user.burst) == (10, 2)
    assert rl.trusted_proxies == ("172.21.0.0/16",)
    assert ("spec.clientKeysSecretRef", {"name": "clients", "key": "clients.yaml"}) in secret_refs(defaulted_spec(spec))
    # without the Secret: no mount, and callers are limited by IP
    plain = desired_children(rag())
    assert all(m["mountPath"] != c.CLIENT_KEYS_DIR for m in container(plain, c.CONTAINER_API)["volumeMounts"])
    assert config_of(plain).rate_limit.key_source == "clientKey"


def test_pods_stop_routing_before_the_api_drains():
    pod = deployment(desired_children(rag()))["spec"]["template"]["spec"]
    api = container(desired_children(rag()), c.CONTAINER_API)
    assert api["lifecycle"]["preStop"] == {"sleep": {"seconds": c.PRESTOP_SLEEP_SECONDS}}
    # the grace period covers the sleep, the API's bound and uvicorn's 5 s on top
    assert pod["terminationGracePeriodSeconds"] >= c.PRESTOP_SLEEP_SECONDS + c.SHUTDOWN_SECONDS + 5


def test_vector_store_reaches_the_config_with_its_connection_settings_and_key():
    children = desired_children(rag({"vectorStore": {
        "url": "https://weaviate.example:8443", "grpcHost": "weaviate-grpc.example", "grpcPort": 443,
        "timeouts": {"querySeconds": 3}, "pollSeconds": 0.25, "apiKeySecretRef": {"name": "wv"}}}))
    store = config_of(children).providers.vector_store
    assert store.url == "https://weaviate.example:8443" and store.grpc_host == "weaviate-grpc.example"
    assert store.grpc_port == 443 and store.poll_seconds == 0.25
    assert store.timeouts.query_seconds == 3 and store.timeouts.insert_seconds == 120  # the rest defaulted
    env = {e["name"]: e for e in container(children, "api")["env"]}
    assert env[c.ENV_VECTOR_STORE_API_KEY]["valueFrom"]["secretKeyRef"] == {"name": "wv", "key": "apiKey"}
    assert ("spec.vectorStore.apiKeySecretRef", {"name": "wv", "key": "apiKey"}) in secret_refs(
        defaulted_spec({"vectorStore": {"url": "http://w:8080", "apiKeySecretRef": {"name": "wv"}}}))
