import json
import sqlite3
import threading

import numpy as np
import pytest
from kuberag_api.rag import (
    DocumentError,
    OnnxMiniLM,
    RagEngine,
    UnsupportedDocument,
    doc_id_for,
    load_default_embedder,
)
from kuberag_contract.config import Retrieval

pytestmark = pytest.mark.unit

CACHING = b"""# Caching
Answers are cached in three levels. The second level is a Redis sidecar bound to localhost.

## Invalidation
Every cache key includes the corpus version, so new documents never serve stale answers.
"""
LIMITS = b"""# Rate limiting
Each client gets a token bucket. When it is empty the API answers 429 with a Retry-After header.
"""
OPERATOR = b"<html><body><h1>Operator</h1><p>The operator reconciles RagService resources into Deployments.</p></body></html>"


@pytest.fixture
def engine(tmp_path, embedder):
    e = RagEngine.open(tmp_path / "data", retrieval=Retrieval(), embedder=embedder)
    yield e
    e.close()


def test_ingest_then_retrieve_with_metadata(engine):
    assert engine.ready and engine.chunk_count == 0 and engine.retrieve("anything") == []
    result = engine.ingest("caching.md", CACHING)
    assert result.status == "added" and result.chunks == 2 and result.doc_id == doc_id_for("caching.md")
    engine.ingest("limits.md", LIMITS)
    engine.ingest("operator.html", OPERATOR)
    passages = engine.retrieve("Where does the second cache tier live?", top_k=2)
    assert len(passages) == 2
    top = passages[0]
    assert top.source == "caching.md" and "Redis sidecar" in top.text
    assert top.metadata["heading"] == "Caching" and top.metadata["position"] == 0
    assert passages[0].score >= passages[1].score
    assert engine.document_count == 3 and engine.chunk_count == 4



def test_retrieve_uses_the_model_ranking_for_the_question_language(engine):
    """The default model's dense weight depends on the question's language (chosen per language on
    the evaluation set's tuning half); ``ranked_sources`` (what the benchmark scores) agrees with
    ``retrieve``."""
    ranking = engine.embedder.ranking
    assert engine.ranking == ranking and len(dict(ranking.language_weights)) == 2
    engine.ingest("caching.md", CACHING)
    engine.ingest("limits.md", LIMITS)
    engine.ingest("operator.html", OPERATOR)
    for question in ("How are cached answers invalidated?", "¿Qué responde la API cuando el cubo está vacío?"):
        passages = engine.retrieve(question, top_k=4)
        dense, lexical, _ = engine.score_all(question)
        expected = ranking.fuse(question, dense, lexical)
        assert [p.score for p in passages] == pytest.approx(sorted(expected.tolist(), reverse=True)[:4])
        sources = list(dict.fromkeys(p.source for p in passages))
        assert sources == engine.ranked_sources(question, dense, lexical, len(sources))


def test_a_given_query_vector_is_used_instead_of_embedding_the_question(engine, embedder):
    engine.ingest("caching.md", CACHING)
    engine.ingest("limits.md", LIMITS)
    vector = embedder.embed_query("what happens when a client sends too many requests")
    top = engine.retrieve("zzz qqq", query_vector=vector, top_k=1)[0]
    assert top.source == "limits.md"
    with pytest.raises(ValueError, match="dimension"):
        engine.retrieve("x", query_vector=np.zeros(3, np.float32))


def test_corpus_version_changes_on_add_replace_delete_but_not_on_unchanged(engine):
    versions = [engine.corpus_version]
    engine.ingest("caching.md", CACHING)
    versions.append(engine.corpus_version)
    assert engine.ingest("caching.md", CACHING).status == "unchanged"
    assert engine.corpus_version == versions[-1]
    replaced = engine.ingest("caching.md", CACHING + b"\nA third paragraph about TTLs.\n")
    assert replaced.status == "replaced"
    versions.append(engine.corpus_version)
    assert engine.delete(replaced.doc_id) is True
    versions.append(engine.corpus_version)
    assert engine.delete(replaced.doc_id) is False
    assert len(set(versions[1:])) == 3
    # Same content again after a delete is the same corpus as before it was first added.
    assert versions[-1] == versions[0]
    assert engine.chunk_count == 0 and engine.documents() == []


def test_replacing_a_document_removes_its_old_chunks(engine):
    engine.ingest("notes.txt", b"The blue widget listens on port 4242.")
    engine.ingest("notes.txt", b"The blue widget listens on port 5353.")
    texts = [p.text for p in engine.retrieve("blue widget port", top_k=5)]
    assert texts == ["The blue widget listens on port 5353."]


def test_refused_documents_change_nothing(engine):
    engine.ingest("caching.md", CACHING)
    before = (engine.corpus_version, engine.chunk_count)
    with pytest.raises(UnsupportedDocument, match="report.docx"):
        engine.ingest("report.docx", b"PK\x03\x04")
    with pytest.raises(DocumentError, match="empty"):
        engine.ingest("empty.txt", b"")
    assert (engine.corpus_version, engine.chunk_count) == before


def test_index_survives_a_restart(tmp_path, embedder):
    first = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=embedder)
    first.ingest("caching.md", CACHING)
    first.ingest("operator.html", OPERATOR)
    version, docs = first.corpus_version, first.documents()
    expected = [(p.chunk_id, round(p.score, 5)) for p in first.retrieve("who reconciles resources?")]
    first.close()
    again = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=embedder)
    assert again.corpus_version == version
    assert again.documents() == docs
    assert [(p.chunk_id, round(p.score, 5)) for p in again.retrieve("who reconciles resources?")] == expected
    info = {d.source: d for d in again.documents()}["operator.html"]
    assert info.content_type == "text/html" and info.bytes == len(OPERATOR) and info.chunks == 1
    again.close()


def test_corpus_directory_is_synchronised(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "caching.md").write_bytes(CACHING)
    (corpus / "sub" / "limits.md").write_bytes(LIMITS)
    (corpus / "picture.png").write_bytes(b"\x89PNG")
    engine = RagEngine.open(tmp_path / "data", retrieval=Retrieval(), corpus_path=str(corpus), embedder=embedder)
    statuses = {r.source: (r.status, r.reason) for r in engine.sync_corpus(corpus)}
    assert statuses["caching.md"][0] == "unchanged" and statuses["sub/limits.md"][0] == "unchanged"
    assert statuses["picture.png"][0] == "refused" and ".png" in statuses["picture.png"][1]
    engine.ingest("uploaded.txt", b"Uploaded through the API, not part of the corpus.")
    engine.close()

    # Between restarts: one file changed, one removed.
    (corpus / "caching.md").write_bytes(CACHING + b"\nEntries expire after their TTL.\n")
    (corpus / "sub" / "limits.md").unlink()
    engine = RagEngine.open(tmp_path / "data", retrieval=Retrieval(), corpus_path=str(corpus), embedder=embedder)
    assert engine.ready
    assert sorted(d.source for d in engine.documents()) == ["caching.md", "uploaded.txt"]
    assert all(p.source != "sub/limits.md" for p in engine.retrieve("token bucket 429", top_k=10))
    engine.close()


def test_fingerprint_covers_retrieval_parameters_not_the_corpus(tmp_path, embedder):
    a = RagEngine.open(tmp_path / "a", retrieval=Retrieval(), embedder=embedder)
    b = RagEngine.open(tmp_path / "b", retrieval=Retrieval(top_k=3), embedder=embedder)
    c = RagEngine.open(tmp_path / "c", retrieval=Retrieval(), embedder=embedder, dense_weight=0.5)
    fingerprint = a.retrieval_fingerprint
    a.ingest("caching.md", CACHING)
    assert a.retrieval_fingerprint == fingerprint
    assert len({fingerprint, b.retrieval_fingerprint, c.retrieval_fingerprint}) == 3
    for e in (a, b, c):
        e.close()


def test_changed_chunking_rebuilds_from_stored_documents(tmp_path, embedder):
    first = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=embedder)
    long_text = "# Guide\n" + " ".join(f"Sentence {i} explains one more cache detail." for i in range(60))
    first.ingest("guide.md", long_text.encode())
    chunks_before, version_before = first.chunk_count, first.corpus_version
    first.close()
    smaller = RagEngine.open(tmp_path, retrieval=Retrieval(chunk_size=200, chunk_overlap=40), embedder=embedder)
    assert smaller.document_count == 1
    assert smaller.chunk_count > chunks_before
    assert smaller.corpus_version != version_before
    assert all(len(p.text) <= 200 for p in smaller.retrieve("cache", top_k=50))
    smaller.close()


def test_concurrent_queries_while_ingesting(engine):
    engine.ingest("caching.md", CACHING)
    errors: list[BaseException] = []
    stop = threading.Event()

    def query():
        while not stop.is_set():
            try:
                passages = engine.retrieve("cache levels", top_k=3)
                assert passages and all(p.text for p in passages)
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)
                return

    readers = [threading.Thread(target=query) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(8):
        engine.ingest(f"doc{i}.txt", f"Document number {i} explains topic {i}. It has two sentences.".encode())
    engine.delete(doc_id_for("doc0.txt"))
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert engine.document_count == 8 and engine.chunk_count == 2 + 7


def test_an_index_from_another_embedder_is_rebuilt_not_mixed(tmp_path):
    embedder = load_default_embedder("all-MiniLM-L6-v2")
    first = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=embedder)
    first.ingest("caching.md", CACHING)
    first.ingest("limits.md", LIMITS)
    old_vectors = np.array(first._snap.vectors)
    first.close()
    int8 = OnnxMiniLM(quantized=True)
    assert int8.name != embedder.name and int8.dim == embedder.dim
    reopened = RagEngine.open(tmp_path, retrieval=Retrieval(), embedder=int8)
    assert reopened.document_count == 2 and reopened.chunk_count == 3
    new_vectors = np.array(reopened._snap.vectors)
    # Every vector now comes from the new model (close to the old ones, never identical).
    cosine = (old_vectors * new_vectors).sum(axis=1)
    assert (cosine < 0.99999).all() and (cosine > 0.8).all()
    assert reopened.retrieve("Where does the second cache tier live?", top_k=1)[0].source == "caching.md"
    reopened.close()
    with sqlite3.connect(tmp_path / "rag-index.sqlite3") as db:
        params = json.loads(db.execute("SELECT value FROM meta WHERE key='params'").fetchone()[0])
    assert (params["embedder"], params["dim"]) == (int8.name, 384)


def test_switching_the_local_model_re_embeds_the_index(tmp_path, embedder):
    """The model is recorded with the index (config retrieval.embeddingModel): an index embedded
    with all-MiniLM-L6-v2 and reopened with the multilingual default is re-embedded, not mixed."""
    first = RagEngine.open(tmp_path, retrieval=Retrieval(embedding_model="all-MiniLM-L6-v2"))
    first.ingest("caching.md", CACHING)
    assert first.embedder.name.endswith("all-MiniLM-L6-v2")
    old_vectors = np.array(first._snap.vectors)
    first.close()
    reopened = RagEngine.open(tmp_path, retrieval=Retrieval())
    assert reopened.embedder is embedder and reopened.document_count == 1
    # Two unrelated vector spaces: nothing of the old model's vectors is left.
    assert np.abs((old_vectors * np.array(reopened._snap.vectors)).sum(axis=1)).max() < 0.5
    with sqlite3.connect(tmp_path / "rag-index.sqlite3") as db:
        params = json.loads(db.execute("SELECT value FROM meta WHERE key='params'").fetchone()[0])
    assert params["embedder"] == embedder.name
    assert reopened.retrieve("¿Dónde vive el segundo nivel de la caché?", top_k=1)[0].source == "caching.md"
    reopened.close()


def test_a_configmap_style_corpus_is_indexed_once_by_its_visible_names(tmp_path, embedder):
    # The kubelet mounts a ConfigMap as ..<timestamp>/ files, a ..data symlink to it and
    # top-level symlinks through ..data: only the visible names are documents.
    corpus = tmp_path / "corpus"
    (corpus / "..2026_11_24").mkdir(parents=True)
    (corpus / "..2026_11_24" / "caching.md").write_bytes(CACHING)
    (corpus / "..data").symlink_to("..2026_11_24")
    (corpus / "caching.md").symlink_to("..data/caching.md")
    engine = RagEngine.open(tmp_path / "data", retrieval=Retrieval(), corpus_path=str(corpus), embedder=embedder)
    assert [d.source for d in engine.documents()] == ["caching.md"]
    engine.close()


def test_ingest_many_reports_refusals_and_publishes_once(engine):
    seen = []
    results = engine.ingest_many(
        [("caching.md", CACHING, None), ("bad.docx", b"PK", None), ("limits.md", LIMITS, None)],
        progress=seen.append,
    )
    assert [r.status for r in results] == ["added", "refused", "added"]
    assert "bad.docx" in results[1].reason and seen == results
    assert engine.document_count == 2 and engine.chunk_count == 3
    dense, bm25, sources = engine.score_all("token bucket")
    assert dense.shape == bm25.shape == (3,) and sources[int(bm25.argmax())] == "limits.md"


def test_deferred_corpus_is_not_ready_until_synchronised(tmp_path, embedder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "caching.md").write_bytes(CACHING)
    engine = RagEngine.open(tmp_path / "data", retrieval=Retrieval(), corpus_path=str(corpus), embedder=embedder,
                            defer_corpus=True)
    assert not engine.ready and engine.document_count == 0
    assert [r.status for r in engine.sync_corpus(corpus)] == ["added"]
    assert engine.ready and engine.document_count == 1
    with pytest.raises(DocumentError, match="not a directory"):
        engine.sync_corpus(tmp_path / "missing")
    engine.close()
