"""Replicas sharing one real Weaviate: the indexing command, two `kuberag serve` processes that
see each other's ingests, deletes and cache clears within the documented bound, /readyz, and an
outage under load (503 only for uncached questions, then recovery by itself)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.fixtures.api_app import write_corpus
from tests.fixtures.api_process import start_serve, stop_serve
from tests.fixtures.redis_server import RedisServer, free_port
from tests.fixtures.weaviate_server import WeaviateServer

pytestmark = pytest.mark.integration

ADMIN = "shared-admin-key"
# Documented in the README: a change made through any replica reaches every other one within
# pollSeconds (0.5 s) plus one read; the target is 2 s.
STALENESS_BOUND_SECONDS = 2.0


def service_env(tmp_path: Path, server: WeaviateServer, name: str, *, poll: float = 0.5) -> dict[str, str]:
    corpus = write_corpus(tmp_path / "corpus")
    config = tmp_path / "config.yaml"
    config.write_text("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n"
                      "rateLimit: {requestsPerMinute: 1000000, burst: 1000000}\n"
                      f"corpus: {{path: {corpus}}}\n" + server.config_yaml(poll_seconds=poll))
    return {"KUBERAG_CONFIG": str(config), "KUBERAG_SERVICE_NAME": name, "KUBERAG_NAMESPACE": "tests",
            "KUBERAG_ADMIN_API_KEY": ADMIN, "KUBERAG_HOST": "127.0.0.1", "KUBERAG_METRICS_PORT": "off",
            "KUBERAG_ACCESS_LOG": "off", **server.connection_env()}


def run_ingest(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """`kuberag ingest`, exactly as the indexing Job runs it (its env, its config file)."""
    return subprocess.run([sys.executable, "-m", "kuberag_api.cli", "ingest", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def ask(base: str, question: str, **headers: str) -> httpx.Response:
    return httpx.post(base + "/query", json={"question": question, "user_id": "t"}, headers=headers, timeout=30)


def checks(base: str) -> dict:
    """Every /readyz check (the detail needs the admin key)."""
    return httpx.get(base + "/readyz", headers={"X-API-Key": ADMIN}, timeout=30).json()["checks"]


def wait_until(predicate, timeout: float, interval: float = 0.02) -> float:
    """Seconds until predicate() is true; fails the test after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, weaviate: WeaviateServer):
    """Two replicas (each with its Redis sidecar) of one RagService, indexed by the Job's command.
    Shared by this module's tests, in file order."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    env = service_env(tmp_path, weaviate, f"qa-{uuid.uuid4().hex[:6]}")
    indexed = run_ingest(env, "--sync", str(tmp_path / "corpus"), "--revision", "r1")
    assert indexed.returncode == 0, indexed.stderr + indexed.stdout
    procs, bases, sidecars = [], [], []
    try:
        for i in range(2):
            sidecar = RedisServer(tmp_path / f"redis{i}")
            sidecar.start()
            sidecars.append(sidecar)
            port = free_port()
            pod_env = {**os.environ, **env, "KUBERAG_PORT": str(port), "KUBERAG_REDIS_URL": sidecar.url,
                       "KUBERAG_DATA_DIR": str(tmp_path / f"data{i}")}
            # Both start at once; each loads the model and connects in the background (minutes at load 20+).
            procs.append(start_serve(pod_env, port, tmp_path / f"serve{i}.log", ready=False, ready_within=240))
            bases.append(f"http://127.0.0.1:{port}")
        for base, log in zip(bases, ("serve0.log", "serve1.log"), strict=True):
            try:
                wait_until(lambda b=base: httpx.get(b + "/readyz", timeout=30).status_code == 200, 300, interval=0.2)
            except BaseException:
                print((tmp_path / log).read_text()[-3000:])
                raise
        yield {"a": bases[0], "b": bases[1], "env": env, "indexed": indexed, "corpus": tmp_path / "corpus"}
    finally:
        for proc in procs:
            stop_serve(proc)
        for sidecar in sidecars:
            sidecar.stop()


# The first test of the module also pays for the replicas' start (the module fixture).
@pytest.mark.timeout(900)
def test_the_indexing_command_logs_progress_and_a_summary(replicas):
    out = replicas["indexed"].stdout
    assert "indexing into Weaviate" in out and "tests/qa-" in out
    assert "[4/4]" in out and "added redis.md (1 chunks)" in out
    assert "4 added; index Kuberag_tests_qa_" in out and "4 documents, 4 chunks" in out


def test_replicas_share_ingests_deletes_and_cache_clears(replicas):
    a, b = replicas["a"], replicas["b"]
    question = "What does the copper kettle whistle at?"
    before = ask(b, question).json()
    assert "copper" not in before["answer"].lower()
    assert ask(b, question).json()["cache_level"] == "l1"  # B now holds an answer computed before the ingest

    upload = httpx.post(a + "/documents", headers={"X-API-Key": ADMIN},
                        files={"file": ("kettle.md", b"# Kettle\n\nThe copper kettle whistles at 100 degrees.\n",
                                        "text/markdown")}, timeout=60)
    assert upload.status_code == 201, upload.text
    doc_id = upload.json()["doc_id"]
    seen_new = wait_until(lambda: "100 degrees" in ask(b, question).json()["answer"], timeout=30)
    answered = ask(b, question).json()
    assert any(s["source"] == "kettle.md" for s in answered["sources"])

    deleted = httpx.delete(f"{a}/documents/{doc_id}", headers={"X-API-Key": ADMIN}, timeout=30)
    assert deleted.status_code == 200, deleted.text
    seen_gone = wait_until(lambda: all(s["source"] != "kettle.md" for s in ask(b, question).json()["sources"]),
                           timeout=30)

    epoch_before = checks(b)["cache"]["epoch"]
    cleared = httpx.delete(a + "/cache", headers={"X-API-Key": ADMIN}, timeout=30)
    assert cleared.status_code == 200, cleared.text
    new_epoch = cleared.json()["epoch"]
    assert new_epoch != epoch_before
    seen_epoch = wait_until(lambda: checks(b)["cache"]["epoch"] == new_epoch,
                            timeout=30)
    assert ask(b, question).json()["cache_hit"] is False  # B's cached answer is gone with the epoch
    print(f"staleness on replica B: ingest {seen_new:.3f}s, delete {seen_gone:.3f}s, cache clear {seen_epoch:.3f}s")
    for what, seconds in (("ingest", seen_new), ("delete", seen_gone), ("cache clear", seen_epoch)):
        assert seconds <= STALENESS_BOUND_SECONDS, f"replica B saw the {what} after {seconds:.2f}s"


def test_readyz_shows_the_store(replicas):
    ready = httpx.get(replicas["b"] + "/readyz", headers={"X-API-Key": ADMIN}).json()
    store = ready["checks"]["store"]
    assert ready["status"] == "ready" and store["status"] == "up" and store["type"] == "weaviate"
    assert store["collection"].startswith("Kuberag_tests_qa_") and store["documents"] == 4
    assert store["revision"] == "r1" and store["last_poll_seconds_ago"] < 5


NEW_QUESTION = "What is the amber lighthouse keeper called?"
GONE_QUESTION = "How hot should green tea water be?"


def _answer_version(question: str, body: dict) -> str:
    """Which corpus version answered: "old" (before the re-index) or "new"."""
    sources = {s["source"] for s in body["sources"]}
    if question == NEW_QUESTION:
        return "new" if "Ottoline" in body["answer"] or any("lighthouse" in s for s in sources) else "old"
    return "old" if "tea.txt" in sources else "new"


# Two indexing commands (each loads the model) and the old version's 15 s grace, on a loaded machine.
@pytest.mark.timeout(900)
def test_a_reindex_switches_both_replicas_only_when_complete_and_no_stale_answer(replicas, weaviate):
    """Queries during a two-shard rebuild keep answering from the complete old index; once the last
    shard switches the pointer, both replicas answer from the new version within the bound, and an
    answer cached before the switch is never served after it."""
    from kuberag_api.rag.weaviate_store import shard_of

    a, b, corpus, env = replicas["a"], replicas["b"], replicas["corpus"], replicas["env"]
    # The new page goes to shard 0 (written first): after shard 0 it is in the build, not served.
    new_page = next(n for n in (f"lighthouse{i}.md" for i in range(20)) if shard_of(n, 2) == 0)
    for base in (a, b):
        for q in (NEW_QUESTION, GONE_QUESTION):
            assert _answer_version(q, ask(base, q).json()) == "old"
            assert ask(base, q).json()["cache_level"] == "l1"  # cached before the re-index
    before = checks(a)["store"]["collection"]

    # (started, finished, replica, question, cached path?, status, version); t_switch when seen.
    outcomes: list[tuple[float, float, str, str, bool, int, str]] = []
    switch: dict[str, float] = {}
    stop = threading.Event()

    def load(base: str) -> None:
        while not stop.is_set():
            for q in (NEW_QUESTION, GONE_QUESTION):
                for cached in (True, False):
                    started = time.monotonic()
                    try:
                        # no-store too: a fresh answer must not refresh the cache the cached path checks.
                        r = ask(base, q, **({} if cached else {"Cache-Control": "no-cache, no-store"}))
                        version = _answer_version(q, r.json()) if r.status_code == 200 else "-"
                        outcomes.append((started, time.monotonic(), base, q, cached, r.status_code, version))
                    except httpx.HTTPError as exc:
                        outcomes.append((started, time.monotonic(), base, q, cached, -1, str(exc)))

    def watch_pointer() -> None:
        # The index in service, read straight from Weaviate's metadata collection (what the last
        # shard's switch writes): "old_seen" is when a read that still found the old version
        # started, "at" when the first read that found the new one ended; the switch lies between.
        import weaviate as weaviate_client
        from weaviate.classes.init import Auth
        from weaviate.classes.query import Filter

        client = weaviate_client.connect_to_local(host="127.0.0.1", port=weaviate.http_port,
                                                  grpc_port=weaviate.grpc_port,
                                                  auth_credentials=Auth.api_key(weaviate.api_key))
        try:
            where = (Filter.by_property("kind").equal("pointer")
                     & Filter.by_property("service").equal(f"tests/{env['KUBERAG_SERVICE_NAME']}"))
            while not stop.is_set():
                started = time.monotonic()
                objects = client.collections.use("KuberagMeta").query.fetch_objects(
                    filters=where, return_properties=["collection"]).objects
                if objects and objects[0].properties["collection"] != before:
                    switch["at"] = time.monotonic()
                    return
                switch["old_seen"] = started
                time.sleep(0.02)
        finally:
            client.close()

    threads = [threading.Thread(target=load, args=(base,)) for base in (a, b)]
    threads.append(threading.Thread(target=watch_pointer))
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        (corpus / new_page).write_text("# Lighthouse\n\nThe amber lighthouse keeper is called Ottoline Vance.\n")
        (corpus / "tea.txt").unlink()
        build = ["--sync", str(corpus), "--shards", "2", "--build-id", "breindex", "--revision", "r2"]
        first = run_ingest(env, *build, "--shard", "0")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"added {new_page}" in first.stdout
        after_first_shard = time.monotonic()
        time.sleep(2)  # several polls: one shard done must not switch anything
        assert "at" not in switch and checks(b)["store"]["collection"] == before
        last = run_ingest(env, *build, "--shard", "1")  # switches, then drops the old version 15 s later
        assert last.returncode == 0, last.stdout + last.stderr
        assert "at" in switch, "the last shard did not switch the index"
        wait_until(lambda: time.monotonic() - switch["at"] > STALENESS_BOUND_SECONDS + 1, 10)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    t_switch = switch["at"]
    failed = [o for o in outcomes if o[5] != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed during the re-index: {failed[:5]}"
    early = [o for o in outcomes if o[1] < switch["old_seen"]]  # answered before the switch was written
    late = [o for o in outcomes if o[0] > t_switch + STALENESS_BOUND_SECONDS]
    assert any(o[0] > after_first_shard for o in early), "no query ran between the shards"
    assert early and all(o[6] == "old" for o in early), [o for o in early if o[6] != "old"][:5]
    for base in (a, b):
        for q in (NEW_QUESTION, GONE_QUESTION):
            for cached in (True, False):
                mine = [o for o in late if o[2] == base and o[3] == q and o[4] == cached]
                assert mine, f"no request of {q!r} (cached path {cached}) on {base} after the switch"
                stale = [o for o in mine if o[6] != "new"]
                assert not stale, (f"{base} answered {q!r} from the old version {stale[0][0] - t_switch:.2f}s "
                                   f"after the switch (cached path {cached})")
    seen_new = {base: min(o[1] for o in outcomes if o[2] == base and o[6] == "new") - t_switch for base in (a, b)}
    print(f"re-index: {len(outcomes)} requests, all 200; first new answer after the switch: "
          + ", ".join(f"{s:.2f}s" for s in seen_new.values()))
    for base in (a, b):
        store = checks(base)["store"]
        assert store["revision"] == "r2" and store["collection"] != before and store["collection"].endswith("breindex")


def test_not_ready_until_a_first_index_exists(tmp_path: Path, weaviate: WeaviateServer):
    port = free_port()
    env = {**os.environ, **service_env(tmp_path, weaviate, f"empty-{uuid.uuid4().hex[:6]}"), "KUBERAG_PORT": str(port),
           "KUBERAG_REDIS_URL": "", "KUBERAG_DATA_DIR": str(tmp_path / "data")}
    proc, base = start_serve(env, port, tmp_path / "serve.log", ready=False), f"http://127.0.0.1:{port}"
    try:
        # A replica connects to Weaviate in the background after it starts listening (slow at load 10+).
        wait_until(lambda: "no index yet" in checks(base)["index"]["status"], 180)
        r = httpx.get(base + "/readyz")
        assert r.status_code == 503 and "no index yet" in r.json()["reasons"][0]
        q = ask(base, "anything?")
        assert q.status_code == 503 and "Retry-After" in q.headers
        assert run_ingest(env, "--sync", str(tmp_path / "corpus")).returncode == 0
        wait_until(lambda: httpx.get(base + "/readyz", timeout=30).status_code == 200, 60)
        assert "6379" in ask(base, "Which port does the Redis sidecar listen on?").json()["answer"]
    finally:
        stop_serve(proc)


def test_outage_under_load_503_only_for_uncached_then_recovery(tmp_path: Path, weaviate_own: WeaviateServer):
    env = service_env(tmp_path, weaviate_own, "outage")
    assert run_ingest(env, "--sync", str(tmp_path / "corpus")).returncode == 0
    port = free_port()
    env.update(KUBERAG_PORT=str(port), KUBERAG_REDIS_URL="", KUBERAG_DATA_DIR=str(tmp_path / "data"))
    proc, base = start_serve({**os.environ, **env}, port, tmp_path / "serve.log"), f"http://127.0.0.1:{port}"
    cached = ["Which port does the Redis sidecar listen on?", "How hot should green tea water be?"]
    try:
        for q in cached:
            assert ask(base, q).status_code == 200
        outcomes: list[tuple[str, int, bool, bool]] = []  # question, status, Retry-After, while down
        stop, down = threading.Event(), threading.Event()

        def load() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                for q in (cached[n % 2], f"An uncached question number {n} about kettles?"):
                    was_down = down.is_set()
                    try:
                        r = ask(base, q)
                        outcomes.append((q, r.status_code, "Retry-After" in r.headers, was_down and down.is_set()))
                    except httpx.HTTPError as exc:
                        outcomes.append((q, -1, False, was_down))
                        print("request failed", exc)

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(1)
        weaviate_own.stop()
        wait_until(lambda: "unreachable" in checks(base)["store"]["status"], 30)
        down.set()
        wait_until(lambda: sum(1 for *_, d in outcomes if d) >= 6, timeout=120, interval=0.1)
        assert httpx.get(base + "/readyz").status_code == 200  # still in the Service: cache hits answer
        problem = ask(base, "A brand new question during the outage?")
        assert problem.status_code == 503 and problem.headers["Retry-After"]
        assert problem.headers["content-type"].startswith("application/problem+json")
        assert "vector store is unavailable" in problem.json()["detail"]
        down.clear()
        weaviate_own.start()
        recovered = wait_until(lambda: ask(base, f"A question after recovery {time.time()}?").status_code == 200,
                               timeout=60, interval=0.2)
        stop.set()
        worker.join(30)
        print(f"recovered {recovered:.2f}s after Weaviate was ready again; {len(outcomes)} requests under load")
        for q, status, retry_after, _ in outcomes:
            if q in cached:
                assert status == 200, f"a cached question got {status}"
            else:
                assert status == 200 or (status == 503 and retry_after), f"an uncached question got {status}"
        while_down = [(q, status) for q, status, _, d in outcomes if d]
        assert any(q in cached and status == 200 for q, status in while_down)
        assert any(q not in cached and status == 503 for q, status in while_down)
    finally:
        stop_serve(proc)
