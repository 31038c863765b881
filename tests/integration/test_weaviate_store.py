"""The Weaviate store against a real weaviate-server: ingest, replace, delete, refused objects,
hybrid ranking, re-indexing into a new version (sharded, a new model), the shared epoch, and an
outage with recovery. Each test uses its own RagService name, so they share one server."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kuberag_api.rag import DocumentError, doc_id_for, load_default_embedder
from kuberag_api.rag.weaviate_store import (
    DOCS_SUFFIX,
    IndexMissing,
    ServiceRef,
    StoreWriteError,
    VectorStoreUnavailable,
    WeaviateStore,
    chunk_uuid,
    shard_of,
)
from kuberag_contract.config import Retrieval, VectorStore, VectorStoreTimeouts

from tests.fixtures.api_app import write_corpus
from tests.fixtures.redis_server import free_port
from tests.fixtures.weaviate_server import WeaviateServer

pytestmark = pytest.mark.integration


class PoisonedEmbedder:
    """The real model, except that chunks containing POISON get a vector of the wrong length:
    Weaviate refuses exactly those objects (a per-object failure inside an accepted batch)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim

    def embed(self, texts: list[str]) -> list:
        vectors = [np.asarray(v) for v in self.inner.embed(texts)]
        return [v[:-1] if "POISON" in t else v for t, v in zip(texts, vectors, strict=True)]

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


class SmallerModel:
    """Another embedding model (another name and dimension): the real one's first 192 dimensions."""

    name = "minilm-first-192"
    dim = 192

    def __init__(self, inner) -> None:
        self.inner = inner

    def _cut(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float32)[..., :192]
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._cut(self.inner.embed(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._cut(self.inner.embed_query(text))


@pytest.fixture(scope="session")
def embedder():
    return load_default_embedder()


def make_store(server: WeaviateServer, name: str, embedder, **kwargs) -> WeaviateStore:
    config = VectorStore(url=server.url, grpc_port=server.grpc_port, poll_seconds=0.1,
                         timeouts=VectorStoreTimeouts(init_seconds=10, query_seconds=5, insert_seconds=60))
    store = WeaviateStore(config, ServiceRef("tests", name), Retrieval(), embedder, api_key=server.api_key, **kwargs)
    store.connect()
    store.refresh()
    return store


@pytest.fixture
def service_name() -> str:
    return f"svc-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(weaviate: WeaviateServer, service_name: str, embedder, tmp_path: Path):
    s = make_store(weaviate, service_name, embedder, sweep_grace_seconds=1.0)
    s.sync_corpus(write_corpus(tmp_path / "corpus"), switch_grace_seconds=0)
    yield s
    s.close()


def chunk_count_in_weaviate(store: WeaviateStore, doc_id: str, sha: str | None = None) -> int:
    from weaviate.classes.query import Filter

    where = Filter.by_property("docId").equal(doc_id)
    if sha is not None:
        where = where & Filter.by_property("docSha").equal(sha)
    return store._call(lambda c: c.collections.use(store.collection).aggregate.over_all(
        filters=where, total_count=True).total_count)


def test_no_index_means_not_ready_with_the_reason(weaviate, service_name, embedder):
    store = make_store(weaviate, service_name, embedder)
    try:
        assert not store.ready
        assert "no index yet" in store.status()["status"]
        with pytest.raises(IndexMissing, match="kuberag ingest --sync"):
            store.retrieve("anything")
    finally:
        store.close()


def test_api_key_is_required_and_used(weaviate, service_name, embedder):
    config = VectorStore(url=weaviate.url, grpc_port=weaviate.grpc_port)
    bad = WeaviateStore(config, ServiceRef("tests", service_name), Retrieval(), embedder, api_key="wrong-key")
    try:
        with pytest.raises(VectorStoreUnavailable):
            bad.connect()
            bad.refresh()
    finally:
        bad.close()


def test_connecting_does_not_ask_pypi(weaviate, service_name, embedder, monkeypatch):
    """weaviate-client's init checks GET pypi.org for its latest version on every connect: a replica
    must not (many clusters have no egress: it waited out the init timeout; pods should not call the
    internet). HTTPS requests of this process go to a local proxy that records their targets."""
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(8)
    targets: list[str] = []

    def record() -> None:
        while True:
            try:
                conn, _ = proxy.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    targets.append(conn.recv(500).split(b"\r\n")[0].decode(errors="replace"))
                except OSError as exc:
                    targets.append(repr(exc))

    threading.Thread(target=record, daemon=True).start()
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.getsockname()[1]}")
    for var in ("NO_PROXY", "no_proxy"):  # Weaviate itself (gRPC honours these variables too)
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    store = make_store(weaviate, service_name, embedder)
    try:
        assert "no index yet" in store.status()["status"]
        time.sleep(0.5)
        assert not [t for t in targets if "pypi" in t], targets
    finally:
        store.close()
        proxy.close()


def test_an_unusable_grpc_port_fails_the_connect_with_the_reason(weaviate, service_name, embedder):
    config = VectorStore(url=weaviate.url, grpc_port=free_port(),
                         timeouts=VectorStoreTimeouts(init_seconds=3, query_seconds=3, insert_seconds=10))
    store = WeaviateStore(config, ServiceRef("tests", service_name), Retrieval(), embedder, api_key=weaviate.api_key)
    try:
        with pytest.raises(VectorStoreUnavailable, match="gRPC"):
            store.connect()
    finally:
        store.close()


def test_ingest_replace_delete_with_deterministic_ids(store: WeaviateStore):
    first = store.ingest("coffee.md", b"# Coffee\n\nEspresso is brewed at nine bars of pressure.\n")
    assert first.status == "added" and first.chunks == 1
    doc = store.document(first.doc_id)
    assert doc is not None and doc.source == "coffee.md"
    # The id of a chunk is derived from the document, its content and the position: the same
    # content again changes nothing, and lands on the same object.
    expected = chunk_uuid(first.doc_id, doc.sha256, 0)
    assert store._call(lambda c: c.collections.use(store.collection).data.exists(expected))
    assert store.ingest("coffee.md", b"# Coffee\n\nEspresso is brewed at nine bars of pressure.\n").status == "unchanged"

    version = store.corpus_version
    replaced = store.ingest("coffee.md", b"# Coffee\n\nEspresso is brewed at ten bars of pressure for 25 s.\n")
    assert replaced.status == "replaced" and store.corpus_version != version
    top = store.retrieve("How is espresso brewed?")[0]
    assert top.source == "coffee.md" and "ten bars" in top.text and top.metadata["heading"] == "Coffee"
    assert 0.3 < top.metadata["dense_score"] <= 1.0
    # The superseded chunk is never returned, and the sweep removes it after the grace period.
    assert all("nine bars" not in p.text for p in store.retrieve("espresso nine bars pressure", top_k=10))
    time.sleep(1.2)
    assert store.sweep(store.collection, first.doc_id) == 1
    assert chunk_count_in_weaviate(store, first.doc_id) == 1

    assert store.delete(first.doc_id) is True
    assert store.document(first.doc_id) is None
    assert all(p.source != "coffee.md" for p in store.retrieve("How is espresso brewed?", top_k=10))
    assert store.delete(first.doc_id) is False
    time.sleep(1.2)
    store.sweep(store.collection, first.doc_id)
    assert chunk_count_in_weaviate(store, first.doc_id) == 0


def test_a_refused_object_fails_that_document_and_changes_nothing(weaviate, service_name, embedder, tmp_path):
    store = make_store(weaviate, service_name, PoisonedEmbedder(embedder))
    try:
        store.sync_corpus(write_corpus(tmp_path / "corpus"), switch_grace_seconds=0)
        old = "# Birds\n\nThe heron stands in shallow water.\n\n" + "Herons are patient hunters. " * 40
        store.ingest("birds.md", old.encode())
        doc_id = doc_id_for("birds.md")
        before = store.document(doc_id)
        assert before is not None and before.chunks >= 2
        new = ("# Birds\n\nThe heron now eats frogs.\n\n" + "Herons wade slowly. " * 40 +
               "\n\nA POISON paragraph the store cannot take.\n")
        with pytest.raises(StoreWriteError) as refused:
            store.ingest("birds.md", new.encode())
        message = str(refused.value)
        assert "birds.md" in message and "refused 1 of" in message and "vector" in message
        # The old version is whole; none of the new version's chunks stayed (rolled back).
        assert store.document(doc_id) == before
        new_sha = hashlib.sha256(new.encode()).hexdigest()
        assert chunk_count_in_weaviate(store, doc_id, new_sha) == 0
        assert chunk_count_in_weaviate(store, doc_id, before.sha256) == before.chunks
        assert any("heron stands" in p.text for p in store.retrieve("Where does the heron stand?"))
        # Through ingest_many (kuberag ingest) the same failure is a refused document with the reason.
        results = store.ingest_many([("birds.md", new.encode(), None), ("fish.md", b"# Fish\n\nTrout like cold water.\n", None)])
        assert [r.status for r in results] == ["refused", "added"] and "vector" in results[0].reason
    finally:
        store.close()


def test_a_reader_never_sees_a_half_replaced_document(weaviate, service_name, embedder, tmp_path):
    """Replica A replaces a document; replica B queries while A has written the new chunks but not
    yet switched the record: B sees the old version only, then (after its next poll) the new only."""
    writer = make_store(weaviate, service_name, embedder)
    reader = make_store(weaviate, service_name, embedder)
    try:
        writer.sync_corpus(write_corpus(tmp_path / "corpus"), switch_grace_seconds=0)
        v1 = "# Lake\n\n" + " ".join(f"Version one fact {i}: the lake is blue." for i in range(60))
        v2 = "# Lake\n\n" + " ".join(f"Version two fact {i}: the lake is green." for i in range(60))
        writer.ingest("lake.md", v1.encode())
        reader.refresh()
        chunks_written, proceed = threading.Event(), threading.Event()
        upsert = writer._upsert

        def pausing_upsert(collection, objects, what):
            if collection.endswith(DOCS_SUFFIX) and what == "document record write":
                chunks_written.set()
                proceed.wait(30)
            return upsert(collection, objects, what)

        writer._upsert = pausing_upsert
        t = threading.Thread(target=writer.ingest, args=("lake.md", v2.encode()))
        t.start()
        assert chunks_written.wait(60)
        reader.refresh()
        seen = reader.retrieve("What colour is the lake?", top_k=20)
        assert seen and all("Version one" in p.text for p in seen if p.source == "lake.md")
        proceed.set()
        t.join(60)
        reader.refresh()
        seen = [p for p in reader.retrieve("What colour is the lake?", top_k=20) if p.source == "lake.md"]
        assert seen and all("Version two" in p.text for p in seen)
    finally:
        writer.close()
        reader.close()


def test_hybrid_ranking_uses_both_words_and_meaning(store: WeaviateStore):
    store.ingest("codes.md", b"# Error codes\n\nThe code ZX-4417 means the quota was exceeded.\n")
    store.ingest("weather.md", b"# Weather\n\nIt is raining heavily in the mountains today.\n")
    # An exact rare token: BM25 finds it although the sentence means little to the model.
    assert store.retrieve("ZX-4417")[0].source == "codes.md"
    # A paraphrase with no shared word: the vectors find it.
    assert store.retrieve("Is there precipitation up in the hills?")[0].source == "weather.md"
    assert store.retrieve("Which port does the Redis sidecar listen on?")[0].source == "redis.md"
    scores = [p.score for p in store.retrieve("Redis sidecar port")]
    assert scores == sorted(scores, reverse=True)


def test_sharded_rebuild_switches_only_when_every_shard_is_done(weaviate, service_name, embedder, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    store = make_store(weaviate, service_name, embedder)
    replica = make_store(weaviate, service_name, embedder)
    try:
        store.sync_corpus(corpus, switch_grace_seconds=0, revision="r1")
        uploaded = store.ingest("uploaded.md", b"# Upload\n\nThe uploaded note mentions a red kite.\n")
        first = store.collection
        (corpus / "new.md").write_text("# New\n\nA new corpus file about the amber lighthouse.\n")
        (corpus / "tea.txt").unlink()
        shards = {shard_of(s, 2) for s in ("new.md", "redis.md", "limits.md", "operator.md")}
        assert shards == {0, 1}, "the test corpus must spread over both shards"
        store.sync_corpus(corpus, build_id="bshard1", shard=0, shards=2, revision="r2", switch_grace_seconds=0)
        replica.refresh()
        assert replica.collection == first  # one shard done: the old version still serves
        assert replica.document(uploaded.doc_id) is not None
        assert not any(p.source == "new.md" for p in replica.retrieve("amber lighthouse"))
        results = store.sync_corpus(corpus, build_id="bshard1", shard=1, shards=2, revision="r2",
                                    switch_grace_seconds=0.5)
        assert {r.source for r in results} <= {"new.md", "redis.md", "limits.md", "operator.md"}
        replica.refresh()
        assert replica.collection == store.index_name("bshard1") and replica.revision == "r2"
        assert replica.retrieve("amber lighthouse")[0].source == "new.md"
        assert {d.source for d in replica.documents()} == {"new.md", "redis.md", "limits.md", "operator.md",
                                                           "uploaded.md"}
        assert replica.retrieve("Which bird does the uploaded note mention?")[0].source == "uploaded.md"
        assert not store._call(lambda c: c.collections.exists(first))  # the old version is gone
    finally:
        store.close()
        replica.close()


def test_a_new_model_builds_a_new_index_and_the_old_keeps_serving(weaviate, service_name, embedder, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    old = make_store(weaviate, service_name, embedder)
    new = make_store(weaviate, service_name, SmallerModel(embedder))
    try:
        old.sync_corpus(corpus, switch_grace_seconds=0)
        old.ingest("uploaded.md", b"# Upload\n\nThe uploaded note mentions a red kite.\n")
        assert not new.ready  # nothing indexed with the new model yet: never mixed vectors
        new.sync_corpus(corpus, switch_grace_seconds=0)
        old.refresh()
        new.refresh()
        assert new.ready and new.collection != old.collection and old.ready
        assert old.retrieve("Redis sidecar port")[0].source == "redis.md"
        assert new.retrieve("Redis sidecar port")[0].source == "redis.md"
        # The upload was re-chunked and re-embedded from its stored sections for the new model.
        assert new.retrieve("Which bird does the uploaded note mention?")[0].source == "uploaded.md"
        assert old.corpus_version != new.corpus_version
        # Replicas of the old model still say they serve it: its index stays. Once none has for
        # the retirement period (0 here), a replica of the new model removes it.
        old._housekeeping()
        assert new.retire_unserved_indexes(idle_seconds=60) == []
        old_collection = old.collection
        assert new.retire_unserved_indexes(idle_seconds=0) == [old_collection]
        assert not new._call(lambda c: c.collections.exists(old_collection))
        assert new.ready and new.retrieve("Redis sidecar port")[0].source == "redis.md"
    finally:
        old.close()
        new.close()


def test_the_cache_epoch_is_shared(weaviate, service_name, embedder):
    a, b = make_store(weaviate, service_name, embedder), make_store(weaviate, service_name, embedder)
    try:
        before = b.cache_epoch
        epoch = a.bump_epoch()
        assert epoch > before and a.cache_epoch == epoch
        b.refresh()
        assert b.cache_epoch == epoch
        assert a.bump_epoch() > epoch
    finally:
        a.close()
        b.close()


def test_bad_documents_are_refused_with_the_reason(store: WeaviateStore):
    with pytest.raises(DocumentError, match="empty"):
        store.ingest("empty.md", b"   \n")
    with pytest.raises(DocumentError):
        store.ingest("photo.png", b"\x89PNG...")
    results = store.ingest_many([("  ", b"text", None)])
    assert results[0].status == "refused" and "source" in results[0].reason


def test_outage_then_recovery(weaviate_own: WeaviateServer, service_name, embedder, tmp_path):
    store = make_store(weaviate_own, service_name, embedder)
    try:
        store.sync_corpus(write_corpus(tmp_path / "corpus"), switch_grace_seconds=0)
        store.start()
        assert store.retrieve("Redis sidecar port")[0].source == "redis.md"
        weaviate_own.stop()
        deadline = time.monotonic() + 30
        while store.available and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.available and store.ready  # still ready: cache hits keep answering
        assert "unreachable" in store.status()["status"]
        started = time.monotonic()
        with pytest.raises(VectorStoreUnavailable):
            store.retrieve("Redis sidecar port")
        assert time.monotonic() - started < 1.0  # fails fast, no client-side retry loop
        weaviate_own.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if store.retrieve("Redis sidecar port")[0].source == "redis.md":
                    break
            except VectorStoreUnavailable:
                time.sleep(0.2)
        else:
            pytest.fail(f"the store did not recover within 60 s: {store.status()}")
        assert store.status()["status"] == "up"
    finally:
        store.close()
