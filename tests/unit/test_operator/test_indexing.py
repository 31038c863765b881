"""The indexing Job, a Git source's CronJob, and what the pods serve while an index is built
(pure functions: ``indexing.py`` and ``desired_children`` with a shared store)."""

import kuberag_contract as c
import pytest
from kuberag_contract.config import parse_config
from kuberag_operator.children import desired_children
from kuberag_operator.crd import defaulted_spec
from kuberag_operator.indexing import index_hash, job_state, plan_indexing
from kuberag_operator.status import workload_conditions

pytestmark = pytest.mark.unit

SHARED = {"vectorStore": {"url": "http://weaviate.db:8080", "apiKeySecretRef": {"name": "wv"}},
          "corpus": {"configMap": {"name": "docs"}}}


def rag(spec, status=None):
    return {"apiVersion": "kuberag.io/v1alpha1", "kind": "RagService",
            "metadata": {"name": "qa", "namespace": "team", "uid": "uid-1"}, "spec": spec, "status": status or {}}


def kinds(children):
    return {f"{ch['kind']}/{ch['metadata']['name']}": ch for ch in children}


def job_with(spec, build="b1", conditions=(), succeeded=0, completion=None):
    job = kinds(desired_children(rag(spec), index_build=build))["Job/qa-index"]
    job["status"] = {"succeeded": succeeded, "conditions": [{"type": t, "status": "True", "message": m}
                                                            for t, m in conditions]}
    if completion:
        job["status"]["completionTime"] = completion
    return job


def test_the_job_runs_kuberag_ingest_with_the_pods_contract():
    children = kinds(desired_children(rag({**SHARED, "indexing": {"shards": 3}}), index_build="b17"))
    job = children["Job/qa-index"]
    assert job["metadata"]["annotations"][c.ANNOTATION_INDEX_BUILD] == "b17"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 3
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [*c.INDEX_COMMAND, c.CORPUS_DIR, "--shards", "3", "--build-id", "b17"]
    env = {e["name"]: e for e in container["env"]}
    assert env[c.ENV_CONFIG]["value"] == f"{c.CONFIG_DIR}/{c.INDEX_CONFIG_FILENAME}"
    assert env[c.ENV_SERVICE_NAME]["value"] == "qa"
    assert env[c.ENV_VECTOR_STORE_API_KEY]["valueFrom"]["secretKeyRef"] == {"name": "wv", "key": "apiKey"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[c.CORPUS_DIR]["readOnly"] and mounts["/tmp"]
    assert container["securityContext"]["readOnlyRootFilesystem"] and pod["restartPolicy"] == "Never"
    assert {"name": "corpus", "configMap": {"name": "docs"}} in pod["volumes"]
    # Not selected by the Services (nor counted as an API pod).
    assert pod and spec["template"]["metadata"]["labels"][c.LABEL_NAME] != "kuberag"


def test_with_a_shared_store_the_pods_do_not_mount_the_corpus_and_the_job_has_its_config():
    children = kinds(desired_children(rag(SHARED), index_build="b1"))
    api = children["Deployment/qa"]["spec"]["template"]["spec"]
    assert all(v["name"] != "corpus" for v in api["volumes"])
    data = children["ConfigMap/qa-config"]["data"]
    assert parse_config(data[c.INDEX_CONFIG_FILENAME]).providers.vector_store.url == "http://weaviate.db:8080"
    assert "Job/qa-index" not in kinds(desired_children(rag(SHARED)))  # no build: no Job
    # Without a shared store, nothing changes: every pod indexes the corpus itself.
    plain = kinds(desired_children(rag({"corpus": {"configMap": {"name": "docs"}}}), index_build="b1"))
    assert "Job/qa-index" not in plain and c.INDEX_CONFIG_FILENAME not in plain["ConfigMap/qa-config"]["data"]


def test_a_git_source_gets_a_job_and_a_cronjob_that_checks_the_commit():
    spec = {"vectorStore": {"url": "http://w:8080"},
            "corpus": {"git": {"url": "https://git.example/docs.git", "ref": "release", "path": "docs",
                               "secretRef": {"name": "git-token"}, "schedule": "*/5 * * * *"}}}
    children = kinds(desired_children(rag(spec), index_build="b2"))
    job_cmd = children["Job/qa-index"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert job_cmd == [*c.INDEX_COMMAND, "--git", "https://git.example/docs.git", "--git-ref", "release",
                       "--git-path", "docs", "--build-id", "b2"]
    cron = children["CronJob/qa-index"]["spec"]
    assert cron["schedule"] == "*/5 * * * *" and cron["concurrencyPolicy"] == "Forbid"
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "--if-changed"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
           and "secretKeyRef" in e["valueFrom"]}
    assert env[c.ENV_GIT_USERNAME] == {"name": "git-token", "key": "username"}
    assert env[c.ENV_GIT_PASSWORD] == {"name": "git-token", "key": "password"}


def test_the_first_index_is_built_and_the_pods_wait_for_it():
    spec = defaulted_spec(SHARED)
    plan = plan_indexing(None, spec, {}, now=1000)
    assert plan.build == f"b1000{index_hash(spec)[:6]}" and plan.replace is None and plan.served is None
    assert plan.condition.status is False and plan.condition.reason == "Indexing"
    assert "not ready until this index is complete" in plan.condition.message
    conds = {x.type: x for x in workload_conditions(None, 1, None, None, indexed=plan.condition)}
    assert conds["Progressing"].status is True and conds["Progressing"].reason == "Indexing"
    assert conds["Degraded"].status is False  # indexing is progress, never degradation
    assert conds["Available"].reason == "WaitingForIndex"


def test_a_running_job_is_kept_and_its_progress_reported():
    spec = defaulted_spec({**SHARED, "indexing": {"shards": 4}})
    job = job_with(spec, "b9", succeeded=3)
    plan = plan_indexing(job, spec, {})
    assert plan.build == "b9" and plan.replace is None
    assert plan.status["completedShards"] == 3 and plan.status["shards"] == 4 and plan.status["state"] == "Indexing"
    assert job_state(job) == ("Running", 3, 4, "")


def test_a_complete_job_switches_the_pods_to_the_new_models_settings():
    old = defaulted_spec(SHARED)
    old_status = {"indexing": plan_indexing(job_with(old, "b1", [("Complete", "")], 1, "2026-11-27T10:00:00Z"),
                                            old, {}).status}
    assert old_status["indexing"]["lastIndexedBuild"] == "b1"
    new = defaulted_spec({**SHARED, "retrieval": {"embeddingModel": "all-MiniLM-L6-v2"}})
    # The new model's Job runs: the pods keep the old model (they query the old index).
    plan = plan_indexing(None, new, old_status, now=2000)
    assert plan.build and plan.served["embeddingModel"] == old["retrieval"]["embeddingModel"]
    pods = kinds(desired_children(rag(new), index_build=plan.build, served=plan.served))
    api_config = parse_config(pods["ConfigMap/qa-config"]["data"][c.CONFIG_FILENAME])
    job_config = parse_config(pods["ConfigMap/qa-config"]["data"][c.INDEX_CONFIG_FILENAME])
    assert api_config.retrieval.embedding_model == old["retrieval"]["embeddingModel"]
    assert job_config.retrieval.embedding_model == "all-MiniLM-L6-v2"
    # Once it is complete, the pods switch (a new static config: they roll).
    done = job_with(new, plan.build, [("Complete", "")], 1)
    after = plan_indexing(done, new, {"indexing": plan.status})
    assert after.build is None and after.served["embeddingModel"] == "all-MiniLM-L6-v2"
    assert after.condition.status is True and after.status["lastIndexedBuild"] == plan.build
    rolled = kinds(desired_children(rag(new), served=after.served))
    assert parse_config(rolled["ConfigMap/qa-config"]["data"][c.CONFIG_FILENAME]).retrieval.embedding_model == \
        "all-MiniLM-L6-v2"
    assert rolled["Deployment/qa"]["spec"]["template"]["metadata"]["annotations"] != \
        pods["Deployment/qa"]["spec"]["template"]["metadata"]["annotations"]


def test_a_changed_source_replaces_the_job_and_a_failed_one_degrades():
    spec = defaulted_spec(SHARED)
    other = job_with(defaulted_spec({**SHARED, "corpus": {"configMap": {"name": "old-docs"}}}), "b1")
    plan = plan_indexing(other, spec, {}, now=3000)
    assert plan.replace == "qa-index" and plan.build.startswith("b3000")
    failed = job_with(spec, "b5", [("Failed", "Job has reached the specified backoff limit")])
    plan = plan_indexing(failed, spec, {})
    assert plan.build is None and plan.condition.reason == "IndexingFailed"
    assert "backoff limit" in plan.condition.message
    conds = {x.type: x for x in workload_conditions(None, 1, None, None, indexed=plan.condition)}
    assert conds["Degraded"].status is True and conds["Degraded"].reason == "IndexingFailed"


def test_new_job_settings_restart_a_running_job_with_the_same_build():
    spec = defaulted_spec(SHARED)
    running = job_with(spec, "b7", succeeded=0)
    more = defaulted_spec({**SHARED, "indexing": {"resources": {"requests": {"cpu": "2"}}}})
    plan = plan_indexing(running, more, {})
    assert plan.replace == "qa-index" and plan.build == "b7"


def test_an_indexed_spec_needs_no_job():
    spec = defaulted_spec(SHARED)
    status = {"indexing": {"lastIndexedHash": index_hash(spec), "lastIndexedBuild": "b1", "shards": 1,
                           "served": {"embeddings": None, "chunkSize": 800, "chunkOverlap": 120}}}
    plan = plan_indexing(None, spec, status)
    assert plan.build is None and plan.replace is None and plan.condition.status is True
