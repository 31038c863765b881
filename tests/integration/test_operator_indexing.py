"""The operator's indexing Job on the real control plane, its command run here against a real
Weaviate: the first index, a re-index on an embeddings-model change that the pods switch to only
when it is complete, a Git source (a file:// repository) with its commit-checking CronJob, and the
specs the CRD refuses.

kwok completes a Job's pods without running them, so a ResourceQuota (pods: the Deployment's
count) holds a Job incomplete while the test runs its pod's command itself (tests/fixtures/
job_runner.py); deleting the quota lets kwok complete it, as a real node would after that run.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from kuberag_contract import ANNOTATION_INDEX_BUILD, ANNOTATION_STATIC_CONFIG_HASH, CONFIG_FILENAME
from kuberag_contract.config import parse_config
from kubernetes import client

from tests.fixtures.job_runner import run_pod_template
from tests.fixtures.operator_process import ragservice, running_operator
from tests.fixtures.weaviate_server import WeaviateServer
from tests.integration.test_operator_reconcile import Kube

pytestmark = pytest.mark.integration
INDEX_TIMEOUT = 180.0  # the Job controller retries a quota-refused pod with backoff up to 60 s
DOCS = {"kettle.md": "# Kettle\n\nThe copper kettle whistles at one hundred degrees.\n",
        "garden.md": "# Garden\n\nThe roses in the garden bloom in June.\n",
        "boat.md": "# Boat\n\nThe red boat is moored at the north pier.\n"}


@pytest.fixture(scope="module")
def kube_for_module(control_plane, tmp_path_factory):
    with running_operator(control_plane, tmp_path_factory.mktemp("operator") / "operator.log") as proc, \
            control_plane.api_client() as api_client:
        yield api_client, proc


@pytest.fixture
def kube(control_plane, kube_for_module) -> Kube:
    api_client, proc = kube_for_module
    return Kube(api_client, control_plane.create_namespace(f"ix-{uuid.uuid4().hex[:8]}"), proc)


def shared_spec(server: WeaviateServer, **extra) -> dict:
    return {"vectorStore": {"url": server.url, "grpcPort": server.grpc_port, "pollSeconds": 0.2,
                            "apiKeySecretRef": {"name": "weaviate"}}, **extra}


def prepare(kube: Kube, server: WeaviateServer, docs: dict[str, str] = DOCS) -> None:
    kube.secret("weaviate", {"apiKey": server.api_key})
    kube.core.create_namespaced_config_map(kube.ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="docs"), data=docs))


def hold_jobs(kube: Kube, pods: int) -> None:
    """Only the Deployment's pods fit: an indexing Job's pods cannot be created while this stands."""
    kube.core.create_namespaced_resource_quota(kube.ns, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="hold"), spec=client.V1ResourceQuotaSpec(hard={"pods": str(pods)})))


def release_jobs(kube: Kube) -> None:
    kube.core.delete_namespaced_resource_quota("hold", kube.ns)


def job(kube: Kube, name: str) -> dict | None:
    try:
        return client.BatchV1Api(kube.core.api_client).read_namespaced_job(f"{name}-index", kube.ns).to_dict()
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def camel_job(kube: Kube, name: str) -> dict:
    """The Job as the API server returns it, in its JSON field names (what the pod would run)."""
    return kube.core.api_client.sanitize_for_serialization(
        client.BatchV1Api(kube.core.api_client).read_namespaced_job(f"{name}-index", kube.ns))


def indexing(kube: Kube, name: str) -> dict:
    return (kube.get(name).get("status") or {}).get("indexing") or {}


def run_shards(kube: Kube, name: str, workdir: Path) -> list[subprocess.CompletedProcess]:
    """Every shard of the indexing Job, run here with its JOB_COMPLETION_INDEX."""
    body = camel_job(kube, name)
    runs = []
    for shard in range(body["spec"]["completions"]):
        run = run_pod_template(kube.core.api_client, kube.ns, body["spec"]["template"]["spec"], workdir / f"shard{shard}",
                               extra_env={"JOB_COMPLETION_INDEX": str(shard)})
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        runs.append(run)
    return runs


def store_for(server: WeaviateServer, namespace: str, name: str, model: str | None = None):
    from kuberag_api.rag import load_default_embedder
    from kuberag_api.rag.weaviate_store import ServiceRef, WeaviateStore
    from kuberag_contract.config import Retrieval, VectorStore

    embedder = load_default_embedder(model) if model else load_default_embedder()
    store = WeaviateStore(VectorStore(url=server.url, grpc_port=server.grpc_port), ServiceRef(namespace, name),
                          Retrieval(**({"embedding_model": model} if model else {})), embedder,
                          api_key=server.api_key)
    store.connect()
    store.refresh()
    return store


def test_the_indexing_job_builds_the_index_its_command_proven_against_weaviate(kube, weaviate, tmp_path):
    prepare(kube, weaviate)
    hold_jobs(kube, pods=2)
    kube.create(ragservice("kb", kube.ns, shared_spec(weaviate, replicas=2, corpus={"configMap": {"name": "docs"}},
                                                      indexing={"shards": 2})))
    created = kube.wait(lambda: job(kube, "kb"), "the indexing Job")
    assert created["spec"]["completions"] == 2 and created["spec"]["completion_mode"] == "Indexed"
    assert created["metadata"]["owner_references"][0]["kind"] == "RagService"
    build = created["metadata"]["annotations"][ANNOTATION_INDEX_BUILD]
    kube.wait(lambda: indexing(kube, "kb").get("state") == "Indexing", "status.indexing to say Indexing")
    indexed = kube.condition("kb", "Indexed")
    assert indexed["status"] == "False" and indexed["reason"] == "Indexing" and "0/2 shards" in indexed["message"]
    progressing, degraded = kube.condition("kb", "Progressing"), kube.condition("kb", "Degraded")
    assert progressing["status"] == "True" and progressing["reason"] == "Indexing"
    assert degraded["status"] == "False"
    # The pods do not mount the corpus: they only query the shared store.
    pod = kube.deployment("kb").spec.template.spec
    assert all(v.name != "corpus" for v in pod.volumes)

    first, second = run_shards(kube, "kb", tmp_path)
    assert "shard 1 of 2" in first.stdout and "shard 2 of 2" in second.stdout
    assert "added" in first.stdout + second.stdout
    store = store_for(weaviate, kube.ns, "kb")
    try:
        assert store.ready and store.collection.endswith(build) and store.document_count == 3
        assert store.retrieve("When do the roses bloom?")[0].source == "garden.md"
        assert store.revision.startswith("files:")
    finally:
        store.close()

    release_jobs(kube)  # kwok now completes the Job: the operator records the index
    kube.wait(lambda: (kube.condition("kb", "Indexed") or {}).get("status") == "True", "Indexed=True",
              timeout=INDEX_TIMEOUT)
    status = indexing(kube, "kb")
    assert status["lastIndexedBuild"] == build and status["state"] == "Indexed"
    assert kube.condition("kb", "Progressing")["reason"] != "Indexing"


def test_a_new_embedding_model_is_indexed_aside_and_served_only_when_complete(kube, weaviate, tmp_path):
    prepare(kube, weaviate)
    hold_jobs(kube, pods=1)
    kube.create(ragservice("model", kube.ns, shared_spec(weaviate, corpus={"configMap": {"name": "docs"}})))
    kube.wait(lambda: job(kube, "model"), "the first indexing Job")
    run_shards(kube, "model", tmp_path / "first")
    release_jobs(kube)
    kube.wait(lambda: (kube.condition("model", "Indexed") or {}).get("status") == "True", "the first index",
              timeout=INDEX_TIMEOUT)
    first_build = indexing(kube, "model")["lastIndexedBuild"]
    template_hash = kube.deployment("model").spec.template.metadata.annotations[ANNOTATION_STATIC_CONFIG_HASH]

    def served_model() -> str:
        cm = kube.core.read_namespaced_config_map("model-config", kube.ns)
        return parse_config(cm.data[CONFIG_FILENAME]).retrieval.embedding_model

    default_model = served_model()
    hold_jobs(kube, pods=1)
    kube.patch("model", {"retrieval": {"embeddingModel": "all-MiniLM-L6-v2"}})
    kube.wait(lambda: (job(kube, "model") or {}).get("metadata", {}).get("annotations", {}).get(
        ANNOTATION_INDEX_BUILD, first_build) != first_build, "the new model's indexing Job")
    kube.wait(lambda: indexing(kube, "model").get("state") == "Indexing", "Indexing")
    # While the new index is incomplete the pods keep the model of the index they serve.
    assert served_model() == default_model
    assert kube.deployment("model").spec.template.metadata.annotations[ANNOTATION_STATIC_CONFIG_HASH] == template_hash
    run_shards(kube, "model", tmp_path / "second")
    old, new = store_for(weaviate, kube.ns, "model"), store_for(weaviate, kube.ns, "model", "all-MiniLM-L6-v2")
    try:
        assert old.ready and new.ready and old.collection != new.collection  # side by side
        assert old.collection.endswith(first_build)
        assert new.retrieve("Where is the red boat moored?")[0].source == "boat.md"
    finally:
        old.close()
        new.close()
    assert served_model() == default_model  # the Job has not completed yet
    release_jobs(kube)
    kube.wait(lambda: served_model() == "all-MiniLM-L6-v2", "the pods to switch to the new model",
              timeout=INDEX_TIMEOUT)
    # The same pass applies the Deployment right after the ConfigMap: wait for it, not assume it.
    kube.wait(lambda: kube.deployment("model").spec.template.metadata.annotations[ANNOTATION_STATIC_CONFIG_HASH]
              != template_hash, "the pod template to roll to the new model's config")
    # Status is written after the children, in a status refresh of its own (the work queue
    # gathers a burst of events into one write): the condition follows within a moment.
    kube.wait(lambda: (kube.condition("model", "Indexed") or {}).get("status") == "True",
              "Indexed=True for the new model's complete index")


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_a_git_source_is_indexed_by_its_job_and_rechecked_by_its_cronjob(kube, weaviate, tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "lighthouse.md").write_text("# Lighthouse\n\nThe lighthouse beam turns every ten seconds.\n")
    (repo / "README.md").write_text("not part of the corpus path\n")
    _git("init", "-q", "-b", "main", cwd=repo)
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "first", cwd=repo)
    first = _git("rev-parse", "HEAD", cwd=repo)
    prepare(kube, weaviate, docs={})
    hold_jobs(kube, pods=1)
    kube.create(ragservice("gitdocs", kube.ns, shared_spec(weaviate, corpus={"git": {
        "url": f"file://{repo}", "ref": "main", "path": "docs", "schedule": "*/5 * * * *"}})))
    kube.wait(lambda: job(kube, "gitdocs"), "the Git source's indexing Job")
    cron = kube.wait(lambda: client.BatchV1Api(kube.core.api_client).read_namespaced_cron_job(
        "gitdocs-index", kube.ns), "the Git source's CronJob")
    assert cron.spec.schedule == "*/5 * * * *" and cron.spec.concurrency_policy == "Forbid"
    (run,) = run_shards(kube, "gitdocs", tmp_path / "job")
    assert f"at {first}" in run.stdout and "added lighthouse.md" in run.stdout
    cron_pod = kube.core.api_client.sanitize_for_serialization(cron)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    unchanged = run_pod_template(kube.core.api_client, kube.ns, cron_pod, tmp_path / "cron1")
    assert unchanged.returncode == 0 and "indexed already: nothing to do" in unchanged.stdout, unchanged.stdout
    (repo / "docs" / "harbour.md").write_text("# Harbour\n\nThe harbour gate closes at dusk.\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-q", "-m", "second", cwd=repo)
    second = _git("rev-parse", "HEAD", cwd=repo)
    changed = run_pod_template(kube.core.api_client, kube.ns, cron_pod, tmp_path / "cron2")
    assert changed.returncode == 0 and f"at {second}" in changed.stdout, changed.stdout + changed.stderr
    store = store_for(weaviate, kube.ns, "gitdocs")
    try:
        assert store.revision == second
        assert {d.source for d in store.documents()} == {"lighthouse.md", "harbour.md"}
        assert store.retrieve("When does the harbour gate close?")[0].source == "harbour.md"
    finally:
        store.close()


BAD_INDEXING_SPECS = [
    ({"corpus": {"git": {"url": "https://git.example/d.git"}}}, "spec.corpus.git requires spec.vectorStore"),
    ({"indexing": {"shards": 3}}, "spec.indexing.shards applies to the indexing Job of a shared store"),
    ({"vectorStore": {"url": "http://w:8080"}, "indexing": {"shards": 2},
      "corpus": {"git": {"url": "https://git.example/d.git"}}}, "spec.indexing.shards must be 1 with a Git source"),
    ({"vectorStore": {"url": "http://w:8080"}, "corpus": {"git": {"url": "https://g/d.git", "path": "a/../../etc"}}},
     "spec.corpus.git.path must stay inside the repository"),
    ({"vectorStore": {"url": "http://w:8080"}, "corpus": {"git": {"url": "ftp://g/d.git"}}}, "spec.corpus.git.url"),
    ({"vectorStore": {"url": "http://w:8080"}, "corpus": {"git": {"url": "https://g/d.git", "schedule": "often"}}},
     "spec.corpus.git.schedule"),
    ({"vectorStore": {"url": "http://w:8080"}, "corpus": {"git": {"url": "https://g/d.git"},
                                                          "configMap": {"name": "docs"}}},
     "spec.corpus: set one of configMap, volume or git"),
    ({"vectorStore": {"url": "http://w:8080"}, "indexing": {"shards": 101}}, "spec.indexing.shards"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_INDEXING_SPECS, ids=[m[:40] for _, m in BAD_INDEXING_SPECS])
def test_bad_indexing_specs_are_refused_naming_the_field(kube, spec, message):
    with pytest.raises(client.ApiException) as err:
        kube.create(ragservice("bad", kube.ns, spec))
    assert err.value.status == 422 and message in err.value.body


def test_names_too_long_for_a_cronjob_or_shard_host_names_are_refused(kube):
    git = {"vectorStore": {"url": "http://w:8080"}, "corpus": {"git": {"url": "https://g/d.git"}}}
    with pytest.raises(client.ApiException) as err:
        kube.create(ragservice("g" * 47, kube.ns, git))
    assert "at most 46 characters with spec.corpus.git" in err.value.body
    with pytest.raises(client.ApiException) as err:
        kube.create(ragservice("s" * 55, kube.ns, {"vectorStore": {"url": "http://w:8080"}, "indexing": {"shards": 11}}))
    assert "NAME-index-N (N the shard)" in err.value.body
    kube.create(ragservice("s" * 55, kube.ns, {"vectorStore": {"url": "http://w:8080"}, "indexing": {"shards": 10}}))
