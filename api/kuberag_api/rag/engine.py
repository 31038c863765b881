"""The embedded RAG engine: documents, chunks and vectors persisted in SQLite under the data dir,
searched in memory (dense brute force + BM25, fused).

Writes go through one lock and one SQLite transaction each (WAL, synchronous=FULL), so an
ingest that returned is on disk. Readers never lock: every write publishes a new immutable
``_Snapshot`` (a single reference assignment), so a query sees one consistent version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from kuberag_contract.config import Retrieval

from kuberag_api.rag.bm25 import BM25Index, tokenize
from kuberag_api.rag.chunking import Chunk
from kuberag_api.rag.embedding import Embedder, load_default_embedder
from kuberag_api.rag.fusion import DEFAULT_DENSE_WEIGHT, Ranking, top_indices
from kuberag_api.rag.parsing import ParsedDocument, Section
from kuberag_api.rag.store import (
    ALGORITHM_VERSION,
    PreparedDocument,
    check_source,
    chunk_and_embed,
    corpus_files,
    doc_id_for,
    fingerprint,
    prepare_document,
    refused,
    sections_from_json,
    sections_json,
    unsupported_reason,
)
from kuberag_api.rag.types import DocumentError, DocumentInfo, IngestResult, Passage

log = logging.getLogger("kuberag.rag")

DB_NAME = "rag-index.sqlite3"
SCHEMA_VERSION = "1"


@dataclass(frozen=True, slots=True)
class _ChunkRow:
    doc_id: str
    chunk_id: str
    source: str
    text: str
    heading: str | None
    position: int
    page: int | None
    tokens: tuple[str, ...]


@dataclass(slots=True)
class _Snapshot:
    vectors: np.ndarray  # (n, dim) view; rows past n in the buffer are invisible to readers
    rows: list[_ChunkRow]
    bm25: BM25Index
    documents: dict[str, DocumentInfo] = field(default_factory=dict)
    version: str = ""


class RagEngine:
    """The embedded store (see ``kuberag_api.rag.store.RagStore``)."""
    def __init__(self, data_dir: Path, retrieval: Retrieval, embedder: Embedder,
                 dense_weight: float | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.retrieval = retrieval
        self._embedder = embedder
        # The model's own ranking when it has one (chosen per model on the evaluation set's
        # tuning half, bench/ranking_study.py), else linear fusion at the default weight.
        model_ranking = getattr(embedder, "ranking", None) or Ranking(
            "linear", getattr(embedder, "dense_weight", DEFAULT_DENSE_WEIGHT))
        if dense_weight is not None:
            model_ranking = Ranking(model_ranking.fusion, dense_weight)  # one weight for every language
        self.ranking = model_ranking
        self.dense_weight = model_ranking.dense_weight
        self._write_lock = threading.RLock()
        self._ready = False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.data_dir / DB_NAME, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS documents (
                doc_id TEXT PRIMARY KEY, source TEXT NOT NULL UNIQUE, content_type TEXT NOT NULL,
                bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, added_at TEXT NOT NULL,
                chunks INTEGER NOT NULL, origin TEXT NOT NULL, sections TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS chunks (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, chunk_id TEXT NOT NULL,
                position INTEGER NOT NULL, heading TEXT, page INTEGER, text TEXT NOT NULL,
                tokens TEXT NOT NULL, vector BLOB NOT NULL);
            CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
            """
        )
        self._capacity_buffer = np.zeros((0, embedder.dim), dtype=np.float32)
        self._pending: tuple[list[_ChunkRow], int, dict[str, DocumentInfo]] | None = None
        self._snap = self._empty_snapshot()

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, data_dir: Path, *, retrieval: Retrieval, corpus_path: str | None = None,
             embedder: Embedder | None = None, dense_weight: float | None = None,
             defer_corpus: bool = False) -> RagEngine:
        """Open (or create) the index under ``data_dir``, then index ``corpus_path``.

        With ``defer_corpus`` the corpus is left for ``sync_corpus()`` (``ready`` stays False
        until then), so a server can answer probes while it indexes.
        """
        engine = cls(Path(data_dir), retrieval, embedder or load_default_embedder(retrieval.embedding_model),
                     dense_weight)
        started = time.perf_counter()
        engine._load()
        log.info("rag index opened", extra={"chunks": engine.chunk_count, "documents": engine.document_count,
                                            "seconds": round(time.perf_counter() - started, 3)})
        if corpus_path is None:
            engine._ready = True
        elif not defer_corpus:
            engine.sync_corpus(corpus_path)
        return engine

    def _index_params(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "algorithm": ALGORITHM_VERSION,
            "embedder": self._embedder.name,
            "dim": self._embedder.dim,
            "chunk_size": self.retrieval.chunk_size,
            "chunk_overlap": self.retrieval.chunk_overlap,
        }

    def _load(self) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        params = self._index_params()
        if stored.get("params") and json.loads(stored["params"]) != params:
            # Vectors from another model (or chunks from other parameters) are not comparable
            # with this one's: rebuild every chunk from the stored document text.
            log.warning("rag index was built with %s; rebuilding it for %s", stored["params"], params)
            self._rebuild_chunks()
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('params', ?)", (json.dumps(params, sort_keys=True),))
        documents = {}
        for doc_id, source, ctype, size, sha, added, chunks in self._db.execute(
            "SELECT doc_id, source, content_type, bytes, sha256, added_at, chunks FROM documents"
        ):
            documents[doc_id] = DocumentInfo(doc_id, source, ctype, chunks, size, sha, added)
        (count,) = self._db.execute("SELECT count(*) FROM chunks").fetchone()
        buffer = np.zeros((count, self._embedder.dim), dtype=np.float32)
        rows: list[_ChunkRow] = []
        for i, (doc_id, chunk_id, position, heading, page, text, tokens, vector) in enumerate(self._db.execute(
            "SELECT doc_id, chunk_id, position, heading, page, text, tokens, vector FROM chunks ORDER BY seq"
        )):
            rows.append(_ChunkRow(doc_id, chunk_id, documents[doc_id].source, text, heading, position, page,
                                  tuple(tokens.split())))
            buffer[i] = np.frombuffer(vector, dtype=np.float32)
        self._capacity_buffer = buffer
        self._publish(rows, buffer[: len(rows)], documents)

    def _rebuild_chunks(self) -> None:
        with self._write_lock:
            documents = self._db.execute("SELECT doc_id, source, sections FROM documents").fetchall()
            prepared = []
            for doc_id, source, sections_json in documents:
                prepared.append((doc_id, source, *self._prepare(source, sections_from_json(sections_json))))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM chunks")
                for doc_id, _source, chunks, vectors in prepared:
                    self._insert_chunks(doc_id, chunks, vectors)
                    self._db.execute("UPDATE documents SET chunks=? WHERE doc_id=?", (len(chunks), doc_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------- properties

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def chunk_count(self) -> int:
        return len(self._snap.rows)

    @property
    def document_count(self) -> int:
        return len(self._snap.documents)

    @property
    def corpus_version(self) -> str:
        """Changes on any ingest, replace or delete (and with the model or chunking)."""
        return self._snap.version

    @property
    def retrieval_fingerprint(self) -> str:
        payload = {
            "top_k": self.retrieval.top_k,
            "chunk_size": self.retrieval.chunk_size,
            "chunk_overlap": self.retrieval.chunk_overlap,
            "dense_weight": self.dense_weight,
            "embedder": self._embedder.name,
            "algorithm": ALGORITHM_VERSION,
        }
        if self.ranking != Ranking("linear", self.dense_weight):
            # Not part of the index (no re-embedding), but cached answers were ranked another way.
            payload["ranking"] = self.ranking.describe()
        return fingerprint(payload)

    # ---------------------------------------------------------------- reading

    def retrieve(self, question: str, query_vector: np.ndarray | None = None,
                 top_k: int | None = None) -> list[Passage]:
        snap = self._snap  # one consistent version for the whole query
        k = top_k or self.retrieval.top_k
        if not snap.rows:
            return []
        if query_vector is None:
            query_vector = self._embedder.embed_query(question)
        query_vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if query_vector.shape[0] != snap.vectors.shape[1]:
            raise ValueError(f"query vector has dimension {query_vector.shape[0]}, the index {snap.vectors.shape[1]}")
        dense = snap.vectors @ query_vector
        lexical = snap.bm25.scores(question)
        fused = self.ranking.fuse(question, dense, lexical)
        floor = getattr(self._embedder, "relevance_floor", None)
        passages = []
        for i in top_indices(fused, k):
            row = snap.rows[i]
            metadata = {"heading": row.heading, "position": row.position,
                        "dense_score": float(dense[i]), "bm25_score": float(lexical[i])}
            if floor is not None:
                # Cosine scales differ by model: whether this passage is evidence is the model's call.
                metadata["relevant"] = bool(dense[i] >= floor)
            if row.page is not None:
                metadata["page"] = row.page
            passages.append(Passage(row.doc_id, row.chunk_id, row.source, row.text, float(fused[i]), metadata))
        return passages

    def documents(self) -> list[DocumentInfo]:
        return sorted(self._snap.documents.values(), key=lambda d: d.source)

    def document(self, doc_id: str) -> DocumentInfo | None:
        return self._snap.documents.get(doc_id)

    # ---------------------------------------------------------------- writing

    def _prepare(self, source: str, sections: list[Section]) -> tuple[list[Chunk], np.ndarray]:
        return chunk_and_embed(source, sections, self.retrieval, self._embedder)

    def _insert_chunks(self, doc_id: str, chunks: list[Chunk], vectors: np.ndarray) -> None:
        self._db.executemany(
            "INSERT INTO chunks (doc_id, chunk_id, position, heading, page, text, tokens, vector) VALUES (?,?,?,?,?,?,?,?)",
            [
                (doc_id, f"{doc_id}:{c.position}", c.position, c.heading, c.page, c.text,
                 " ".join(tokenize(f"{c.heading or ''} {c.text}")), np.asarray(v, dtype=np.float32).tobytes())
                for c, v in zip(chunks, vectors, strict=True)
            ],
        )

    def ingest(self, source: str, data: bytes, content_type: str | None = None,
               parsed: ParsedDocument | None = None) -> IngestResult:
        """Index one document (``parsed``: already parsed, e.g. by the parser process). Raises
        UnsupportedDocument / DocumentError for a bad document or source name."""
        return self._ingest(source, data, content_type, origin="api", parsed=parsed)

    def is_unchanged(self, source: str, data: bytes) -> bool:
        """The index holds exactly these bytes under this source already (nothing to parse)."""
        existing = self._current_documents().get(doc_id_for(source.strip()))
        return existing is not None and existing.sha256 == hashlib.sha256(data).hexdigest()

    def _ingest(self, source: str, data: bytes, content_type: str | None, origin: str,
                publish: bool = True, parsed: ParsedDocument | None = None) -> IngestResult:
        source = check_source(source)
        doc_id = doc_id_for(source)
        sha = hashlib.sha256(data).hexdigest()
        existing = self._current_documents().get(doc_id)
        if existing is not None and existing.sha256 == sha:
            return IngestResult(doc_id, source, "unchanged", existing.chunks)
        # The slow part (embedding) runs before the lock so queries and other ingests go on.
        doc = prepare_document(source, data, content_type, self.retrieval, self._embedder, parsed)
        return self._store(doc, origin, publish)

    def _store(self, doc: PreparedDocument, origin: str, publish: bool = True) -> IngestResult:
        """Write a parsed, chunked and embedded document in one transaction."""
        doc_id, chunks = doc.doc_id, doc.chunks
        added_at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._write_lock:
            existing = self._current_documents().get(doc_id)
            if existing is not None and existing.sha256 == doc.sha256:
                return IngestResult(doc_id, doc.source, "unchanged", existing.chunks)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
                self._db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
                self._db.execute(
                    "INSERT INTO documents VALUES (?,?,?,?,?,?,?,?,?)",
                    (doc_id, doc.source, doc.content_type, doc.size, doc.sha256, added_at, len(chunks), origin,
                     sections_json(doc.sections)),
                )
                self._insert_chunks(doc_id, chunks, doc.vectors)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            info = DocumentInfo(doc_id, doc.source, doc.content_type, len(chunks), doc.size, doc.sha256, added_at)
            new_rows = [
                _ChunkRow(doc_id, f"{doc_id}:{c.position}", doc.source, c.text, c.heading, c.position, c.page,
                          tuple(tokenize(f"{c.heading or ''} {c.text}")))
                for c in chunks
            ]
            self._apply(remove=doc_id if existing else None, add_rows=new_rows, add_vectors=doc.vectors,
                        info=info, publish=publish)
        return IngestResult(doc_id, doc.source, "replaced" if existing else "added", len(chunks))

    def ingest_prepared(self, documents: Iterable[PreparedDocument], origin: str = "api") -> list[IngestResult]:
        """Write documents that are already embedded (with this index's model and chunking), e.g.
        exported from another index; the state is published once at the end."""
        with self._write_lock:
            try:
                return [self._store(doc, origin, publish=False) for doc in documents]
            finally:
                self._flush()

    def export_documents(self) -> Iterator[PreparedDocument]:
        """Every document with its chunks and vectors, as stored (another store can take them
        without embedding again, if it uses the same model and chunking)."""
        documents = self._db.execute(
            "SELECT doc_id, source, content_type, bytes, sha256, sections FROM documents ORDER BY source").fetchall()
        for doc_id, source, content_type, size, sha, sections in documents:
            rows = self._db.execute("SELECT position, heading, page, text, vector FROM chunks WHERE doc_id=? "
                                    "ORDER BY position", (doc_id,)).fetchall()
            chunks = [Chunk(text, heading, position, page) for position, heading, page, text, _ in rows]
            vectors = np.array([np.frombuffer(v, dtype=np.float32) for *_, v in rows], dtype=np.float32).reshape(
                len(rows), self._embedder.dim)
            yield PreparedDocument(doc_id, source, content_type, sha, size, sections_from_json(sections), chunks,
                                   vectors)

    def delete(self, doc_id: str) -> bool:
        with self._write_lock:
            if doc_id not in self._current_documents():
                return False
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
                self._db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._apply(remove=doc_id, add_rows=[], add_vectors=None, info=None)
            return True

    def ingest_many(self, documents: Iterable[tuple[str, bytes, str | None]],
                    progress: Callable[[IngestResult], None] | None = None) -> list[IngestResult]:
        """Index several documents, publishing the new state once at the end (BM25 is rebuilt
        once, not per file). A bad document is reported as ``refused`` with the reason."""
        results = []
        with self._write_lock:
            try:
                for source, data, content_type in documents:
                    try:
                        result = self._ingest(source, data, content_type, origin="api", publish=False)
                    except DocumentError as exc:
                        result = refused(source, str(exc))
                    results.append(result)
                    if progress is not None:
                        progress(result)
            finally:
                self._flush()
        return results

    def ranked_sources(self, question: str, dense: np.ndarray, lexical: np.ndarray, depth: int) -> list[str]:
        """Distinct sources in the order ``retrieve`` ranks their chunks, from ``score_all``'s
        scores (for evaluation: the benchmark scores exactly the shipped ranking)."""
        snap = self._snap
        fused = self.ranking.fuse(question, dense, lexical)
        return list(dict.fromkeys(snap.rows[i].source for i in top_indices(fused, fused.size)))[:depth]

    def score_all(self, question: str, query_vector: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Dense and BM25 scores of every chunk with each chunk's source (for evaluation)."""
        snap = self._snap
        if query_vector is None:
            query_vector = self._embedder.embed_query(question)
        return snap.vectors @ np.asarray(query_vector, np.float32), snap.bm25.scores(question), [r.source for r in snap.rows]

    # ------------------------------------------------------------ the corpus

    def sync_corpus(self, corpus_path: str | Path) -> list[IngestResult]:
        """Make the index hold exactly the supported files of ``corpus_path`` (plus documents
        ingested through the API): new or changed files are indexed, removed ones deleted.
        Source names are paths relative to the corpus directory, so replicas agree."""
        root = Path(corpus_path)
        files = corpus_files(root)
        results: list[IngestResult] = []
        seen: set[str] = set()
        with self._write_lock:
            try:
                gone = self._sync_files(root, files, results, seen)
            finally:
                self._flush()  # publish whatever was committed, even if a later file failed
        self._ready = True
        counts = {s: sum(1 for r in results if r.status == s) for s in ("added", "replaced", "unchanged", "refused")}
        log.info("corpus indexed", extra={"corpus": str(root), **counts, "removed": len(gone), "chunks": self.chunk_count})
        return results

    def _sync_files(self, root: Path, files: list[tuple[Path, str]], results: list[IngestResult],
                    seen: set[str]) -> list[str]:
        """Index ``files`` (unpublished) and delete corpus documents no longer present; returns
        the ids deleted. Runs under the write lock."""
        for path, source in files:
            reason = unsupported_reason(path)
            if reason:
                results.append(refused(source, reason))
                continue
            seen.add(doc_id_for(source))
            try:
                results.append(self._ingest(source, path.read_bytes(), None, origin="corpus", publish=False))
            except DocumentError as exc:
                results.append(refused(source, str(exc)))
            except OSError as exc:
                results.append(refused(source, f"cannot read: {exc}"))
        gone = [doc_id for (doc_id,) in self._db.execute("SELECT doc_id FROM documents WHERE origin='corpus'")
                if doc_id not in seen]
        for doc_id in gone:
            self.delete(doc_id)
        return gone

    # ------------------------------------------------------- in-memory state

    def _empty_snapshot(self) -> _Snapshot:
        dim = self._embedder.dim
        return _Snapshot(np.zeros((0, dim), np.float32), [], BM25Index([]), {}, self._version({}))

    def _version(self, documents: dict[str, DocumentInfo]) -> str:
        payload = [self._index_params(), sorted((d.doc_id, d.sha256) for d in documents.values())]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _publish(self, rows: list[_ChunkRow], vectors: np.ndarray, documents: dict[str, DocumentInfo]) -> None:
        bm25 = BM25Index([r.tokens for r in rows])
        self._snap = _Snapshot(vectors, rows, bm25, documents, self._version(documents))

    def _current_documents(self) -> dict[str, DocumentInfo]:
        # During bulk corpus indexing the latest state is the unpublished one.
        return self._pending[2] if self._pending is not None else self._snap.documents

    def _apply(self, remove: str | None, add_rows: list[_ChunkRow], add_vectors: np.ndarray | None,
               info: DocumentInfo | None, publish: bool = True) -> None:
        """Apply one change to the in-memory state; with publish=False, accumulate (bulk indexing
        publishes once at the end instead of rebuilding BM25 after every file)."""
        pending = self._pending
        if pending is None:
            rows, n, documents = list(self._snap.rows), len(self._snap.rows), dict(self._snap.documents)
        else:
            rows, n, documents = pending
        buffer = self._capacity_buffer
        if remove is not None:
            keep = [i for i, r in enumerate(rows) if r.doc_id != remove]
            if len(keep) != len(rows):
                # A fresh buffer: readers of the old snapshot keep their view of the old one.
                buffer = np.array(buffer[:n][keep], dtype=np.float32)
                rows = [rows[i] for i in keep]
                n = len(rows)
            documents.pop(remove, None)
        if add_rows:
            need = n + len(add_rows)
            if need > buffer.shape[0]:
                grown = np.zeros((max(need, 2 * buffer.shape[0], 256), self._embedder.dim), dtype=np.float32)
                grown[:n] = buffer[:n]
                buffer = grown
            # Rows past the published n are not visible to any reader, so writing them in place is safe.
            buffer[n:need] = add_vectors
            rows = rows + add_rows
            n = need
        if info is not None:
            documents[info.doc_id] = info
        self._capacity_buffer = buffer
        if publish:
            self._pending = None
            self._publish(rows, buffer[:n], documents)
        else:
            self._pending = (rows, n, documents)

    def _flush(self) -> None:
        pending = self._pending
        if pending is not None:
            rows, n, documents = pending
            self._pending = None
            self._publish(rows, self._capacity_buffer[:n], documents)

    def close(self) -> None:
        with self._write_lock:
            self._db.close()
