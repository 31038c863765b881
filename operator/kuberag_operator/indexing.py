"""The indexing Job of a RagService with a shared store (``spec.vectorStore``), and a Git source's
CronJob: pure functions of the spec, like ``children.py``.

The Job runs ``kuberag ingest --sync`` in the API image against the same config file the pods read
(the ConfigMap's ``index.yaml``: the spec being indexed). An Indexed Job with ``shards`` pods: each
indexes its share of the documents into one build, and the last shard to finish switches every
replica to it. Until a new index is complete the pods keep the embeddings and chunking of the one
they serve (``status.indexing.served``): a new model never answers from the old model's vectors.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from kuberag_contract import (
    ANNOTATION_INDEX_BUILD,
    ANNOTATION_INDEX_HASH,
    CONFIG_DIR,
    CORPUS_DIR,
    DATA_DIR,
    ENV_CONFIG,
    ENV_DATA_DIR,
    ENV_EMBEDDINGS_API_KEY,
    ENV_GIT_PASSWORD,
    ENV_GIT_USERNAME,
    ENV_NAMESPACE,
    ENV_SERVICE_NAME,
    ENV_VECTOR_STORE_API_KEY,
    INDEX_COMMAND,
    INDEX_CONFIG_FILENAME,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    RUN_AS_UID,
)

from kuberag_operator.names import child_name
from kuberag_operator.status import Condition

APP_NAME_INDEX = "kuberag-index"  # not the API pods' name: the Services never select an indexing pod
COMPONENT_INDEX = "index"
CONTAINER_INDEX = "index"
ANNOTATION_JOB_HASH = "kuberag.io/job-hash"
TMP_DIR = "/tmp"
# The retrieval fields the index depends on (topK is a query-time setting).
INDEX_RETRIEVAL_FIELDS = ("chunkSize", "chunkOverlap", "embeddingModel")


def uses_shared_store(spec: dict) -> bool:
    return spec.get("vectorStore") is not None


def served_fields(spec: dict) -> dict:
    """What an index is built with and the pods must run with to query it: the embeddings
    (endpoint, model, key) and the chunking."""
    return {"embeddings": copy.deepcopy(spec.get("embeddings")),
            **{k: spec["retrieval"].get(k) for k in INDEX_RETRIEVAL_FIELDS}}


def index_hash(spec: dict) -> str:
    """Hash of everything the index content depends on: a change means a new index version."""
    embeddings = spec.get("embeddings") or {}
    payload = {
        "corpus": spec.get("corpus"),
        "embeddings": {"url": embeddings.get("url"), "model": embeddings.get("model")} if embeddings else None,
        "retrieval": {k: spec["retrieval"].get(k) for k in INDEX_RETRIEVAL_FIELDS},
        "vectorStore": (spec.get("vectorStore") or {}).get("url"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def new_build_id(index_hash_: str, now: float | None = None) -> str:
    """``b<unix seconds><hash>``: the time lets a later build tell a crashed one's leftovers by age."""
    return f"b{int(time.time() if now is None else now)}{index_hash_[:6]}"


def spec_served(spec: dict, served: dict | None) -> dict:
    """The spec the API pods run with: the current one, except the embeddings and chunking of the
    completed index they serve (``served``) while a new index is being built."""
    if not served:
        return spec
    out = copy.deepcopy(spec)
    if served.get("embeddings"):
        out["embeddings"] = copy.deepcopy(served["embeddings"])
    else:
        out.pop("embeddings", None)
    out["retrieval"] = {**out["retrieval"], **{k: served[k] for k in INDEX_RETRIEVAL_FIELDS if served.get(k) is not None}}
    return out


def index_labels(name: str) -> dict[str, str]:
    return {LABEL_NAME: APP_NAME_INDEX, LABEL_INSTANCE: name, LABEL_COMPONENT: COMPONENT_INDEX,
            LABEL_PART_OF: "kuberag", LABEL_MANAGED_BY: MANAGED_BY}


def _security_context() -> dict:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "runAsGroup": RUN_AS_UID, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def _secret_env(env_name: str, name: str, key: str) -> dict:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def _command(spec: dict, build: str | None, *, if_changed: bool = False) -> list[str]:
    git = (spec.get("corpus") or {}).get("git")
    command = list(INDEX_COMMAND)
    if git:
        command += ["--git", git["url"], "--git-ref", git["ref"], "--git-path", git["path"]]
        if if_changed:
            command.append("--if-changed")
    else:
        command += [CORPUS_DIR, "--shards", str(spec["indexing"]["shards"])]
    if build:
        command += ["--build-id", build]
    return command


def _pod_spec(name: str, spec: dict, command: list[str]) -> dict:
    env: list[dict[str, Any]] = [
        {"name": ENV_CONFIG, "value": f"{CONFIG_DIR}/{INDEX_CONFIG_FILENAME}"},
        {"name": ENV_DATA_DIR, "value": DATA_DIR},
        {"name": ENV_SERVICE_NAME, "value": name},
        {"name": ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # The root filesystem is read-only: git and Python write their scratch files here.
        {"name": "HOME", "value": TMP_DIR},
        {"name": "TMPDIR", "value": TMP_DIR},
    ]
    for field, env_name in (("embeddings", ENV_EMBEDDINGS_API_KEY), ("vectorStore", ENV_VECTOR_STORE_API_KEY)):
        ref = (spec.get(field) or {}).get("apiKeySecretRef")
        if ref:
            env.append(_secret_env(env_name, ref["name"], ref["key"]))
    corpus = spec.get("corpus") or {}
    git_secret = (corpus.get("git") or {}).get("secretRef")
    if git_secret:
        env.append(_secret_env(ENV_GIT_USERNAME, git_secret["name"], git_secret["usernameKey"]))
        env.append(_secret_env(ENV_GIT_PASSWORD, git_secret["name"], git_secret["passwordKey"]))
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": TMP_DIR}]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": child_name(name, "config")}},
                                     {"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if corpus.get("configMap"):
        volumes.append({"name": "corpus", "configMap": {"name": corpus["configMap"]["name"]}})
    elif corpus.get("volume"):
        volumes.append({**corpus["volume"], "name": "corpus"})
    elif not corpus.get("git"):
        volumes.append({"name": "corpus", "emptyDir": {}})  # no source: an empty index (uploads only)
    if not corpus.get("git"):
        mounts.append({"name": "corpus", "mountPath": CORPUS_DIR, "readOnly": True})
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_UID, "fsGroup": RUN_AS_UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER_INDEX,
            "image": spec["image"],
            "imagePullPolicy": spec["imagePullPolicy"],
            "command": command,
            "env": env,
            "resources": spec["indexing"]["resources"],
            "securityContext": _security_context(),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    }


def index_job(name: str, spec: dict, build: str) -> dict:
    """The Indexed Job that builds index version ``build`` (one pod per shard)."""
    shards = 1 if (spec.get("corpus") or {}).get("git") else spec["indexing"]["shards"]
    labels = index_labels(name)
    job_spec = {
        "completionMode": "Indexed",
        "completions": shards,
        "parallelism": shards,
        # A failed shard is retried on its own; one that keeps failing fails the Job.
        "backoffLimitPerIndex": spec["indexing"]["backoffLimitPerIndex"],
        "maxFailedIndexes": 0,
        "template": {"metadata": {"labels": labels}, "spec": _pod_spec(name, spec, _command(spec, build))},
    }
    job_hash = hashlib.sha256(json.dumps(job_spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": child_name(name, "index"), "labels": labels,
                     "annotations": {ANNOTATION_INDEX_HASH: index_hash(spec), ANNOTATION_INDEX_BUILD: build,
                                     ANNOTATION_JOB_HASH: job_hash}},
        "spec": job_spec,
    }


def git_cronjob(name: str, spec: dict) -> dict | None:
    """A Git source's CronJob: it checks the ref and re-indexes only when its commit changed."""
    git = (spec.get("corpus") or {}).get("git")
    if not git:
        return None
    labels = index_labels(name)
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": child_name(name, "index"), "labels": labels},
        "spec": {
            "schedule": git["schedule"],
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels},
                "spec": {"backoffLimit": spec["indexing"]["backoffLimitPerIndex"],
                         "template": {"metadata": {"labels": labels},
                                      "spec": _pod_spec(name, spec, _command(spec, None, if_changed=True))}},
            },
        },
    }


def job_state(job: dict | None) -> tuple[str | None, int, int, str]:
    """(Complete | Failed | Running | None, completed shards, shards, the Job's own message)."""
    if job is None:
        return None, 0, 0, ""
    status = job.get("status") or {}
    shards = (job.get("spec") or {}).get("completions") or 1
    done = status.get("succeeded") or 0
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return cond["type"], done, shards, cond.get("message") or cond.get("reason") or ""
    return "Running", done, shards, ""


INDEXED = "Indexed"


@dataclass(frozen=True)
class IndexingPlan:
    """What a reconcile does about the shared index: which Job to apply, what the pods serve."""

    build: str | None = None  # the index version the Job to apply builds; None: no Job wanted now
    replace: str | None = None  # the name of a Job to delete first (it builds something else)
    served: dict | None = None  # the embeddings and chunking the pods run with
    status: dict | None = None  # status.indexing
    condition: Condition | None = None  # Indexed


def plan_indexing(job: dict | None, spec: dict, status: dict, now: float | None = None) -> IndexingPlan:
    """From the spec, the status and the indexing Job as it is now: the plan of this reconcile.

    A Job for the current index hash that completed makes its index the served one (the pods
    switch to its embeddings and chunking now); one that failed stays for its logs; one for
    another hash (or other settings, while it runs) is replaced by a Job for this spec.
    """
    if not uses_shared_store(spec):
        return IndexingPlan()
    wanted = index_hash(spec)
    before = status.get("indexing") or {}
    served = before.get("served")
    meta = (job or {}).get("metadata") or {}
    annotations = meta.get("annotations") or {}
    state, done, shards, message = job_state(job)
    last = {k: before[k] for k in ("lastIndexedBuild", "lastIndexedHash", "lastIndexedTime") if k in before}
    replace = None
    if job is not None and annotations.get(ANNOTATION_INDEX_HASH) == wanted:
        build = annotations.get(ANNOTATION_INDEX_BUILD) or new_build_id(wanted, now)
        if state == "Complete":
            served = served_fields(spec)
            finished = (job.get("status") or {}).get("completionTime")
            last = {"lastIndexedBuild": build, "lastIndexedHash": wanted,
                    **({"lastIndexedTime": finished} if finished else {})}
        elif state == "Running" and annotations.get(ANNOTATION_JOB_HASH) != index_job(
                meta.get("name", "").removesuffix("-index"), spec, build)["metadata"]["annotations"][ANNOTATION_JOB_HASH]:
            replace = meta.get("name")  # new settings (resources, shards, image): restart, same build
    elif last.get("lastIndexedHash") == wanted:
        build, state = last.get("lastIndexedBuild"), "Complete"
        shards = done = before.get("shards") or 0
    else:
        build, state, done = new_build_id(wanted, now), "Running", 0
        shards = 1 if (spec.get("corpus") or {}).get("git") else spec["indexing"]["shards"]
        replace = meta.get("name") if job is not None else None
    apply = build if state == "Running" else None
    serving = last.get("lastIndexedBuild")
    if state == "Complete":
        condition = Condition(INDEXED, True, "Indexed", f"index {serving} of the current spec serves the pods"
                              + (f" (completed {last['lastIndexedTime']})" if last.get("lastIndexedTime") else ""))
        label = "Indexed"
    elif state == "Failed":
        condition = Condition(INDEXED, False, "IndexingFailed", (
            f"the indexing Job {meta.get('name')} failed ({message or 'see kubectl logs job/' + str(meta.get('name'))}); "
            f"the pods keep serving {serving or 'no index (they stay not ready)'}"))
        label = "Failed"
    else:
        condition = Condition(INDEXED, False, "Indexing", (
            f"{done}/{shards} shards of index {build} done; the pods serve "
            f"{serving or 'nothing yet (not ready until this index is complete)'}"))
        label = "Indexing"
    status_out = {"job": meta.get("name") or "", "build": build or "", "indexHash": wanted, "shards": shards,
                  "completedShards": done, "state": label, **last}
    if served is not None:
        status_out["served"] = served
    return IndexingPlan(build=apply, replace=replace, served=served, status=status_out, condition=condition)
