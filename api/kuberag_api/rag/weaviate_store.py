"""The shared store: every replica queries one Weaviate (weaviate-client v4), indexed once.

Layout in Weaviate
------------------
One *index version* per RagService and index parameters (embedding model, dimension, chunking)
is a pair of collections, ``Kuberag_<namespace>_<name>_<hash>_<params>_<build>`` (the chunks, with
kuberag's own vectors, no vectorizer module) and the same name plus ``_Docs`` (one record per
document: sha256, size, origin and the parsed sections, so another model can rebuild it). We use
a collection per RagService version rather than multi-tenancy: a new embedding model needs a new
vector index (another dimension, never mixed vectors), a re-index must be built beside the one
serving and swapped when complete (a collection is created and dropped whole), and a Weaviate
holds tens of RagServices, not the thousands of tenants multi-tenancy is made for.

The collection ``KuberagMeta`` (created by whichever pod or Job connects first) holds small
objects with deterministic ids: per RagService and parameters a *pointer* to the index version
in service, per index version its *corpus token* (changed by every write), per RagService the
*cache epoch*. Every pod reads its three objects every ``pollSeconds`` (REST GETs by id), so a
change made through any replica reaches all of them within one poll; cache hits never wait for
Weaviate (the version and epoch they key on are in memory).

Writes a reader never sees half-done
------------------------------------
Chunk ids are ``uuid5(doc id, content sha256, position)``. An ingest writes the new chunks (every
object's result checked; any failure deletes what was written and fails that document with the
reason), then replaces the document's record (one object: the switch), then bumps the corpus
token. Readers keep only chunks whose sha256 is their document's current record, so during a
replace they see the old version or the new one, never a mix. Superseded chunks are deleted after
a grace period (readers polling an older view may still rank them meanwhile). Deleting a
document writes a tombstone record the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from kuberag_contract.config import ApiConfig, Retrieval, VectorStore

from kuberag_api.rag.embedding import Embedder, build_embedder
from kuberag_api.rag.parsing import ParsedDocument
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

log = logging.getLogger("kuberag.weaviate")

META_COLLECTION = "KuberagMeta"
DOCS_SUFFIX = "_Docs"
# Fixed namespace of every deterministic id kuberag writes.
ID_NAMESPACE = uuid.UUID("0b5e6c8e-4a57-5d2f-8a0e-6b7572616701")
# Weight of the vector search in Weaviate's hybrid (relativeScoreFusion) ranking per embedding
# model, measured on the evaluation set (python -m bench.weaviate --fusion; README "Retrieval engine").
# e5: 0.9-1.0 tie on recall@5 (0.867), BM25 only hurts (Spanish questions over English pages), 0.9
# keeps exact tokens (codes, names) findable. MiniLM: 0.6-1.0 tie (0.879), 0.8 has the best MRR.
DENSE_WEIGHTS = {"intfloat/multilingual-e5-small": 0.9, "sentence-transformers/all-MiniLM-L6-v2": 0.8}
DEFAULT_DENSE_WEIGHT = 0.9  # a model not measured here (an OpenAI-compatible endpoint)


def dense_weight_for(embedder_name: str) -> float:
    return next((w for model, w in DENSE_WEIGHTS.items() if embedder_name.startswith(model)), DEFAULT_DENSE_WEIGHT)
BATCH_SIZE = 200
# Superseded chunks stay this long: a replica polling an older view may still rank them.
SWEEP_GRACE_SECONDS = 30.0
# After a re-index switches, the old version keeps answering in-flight queries this long.
SWITCH_GRACE_SECONDS = 15.0
# Replicas say which index parameters they serve this often; an index of other parameters (a
# previous embedding model) that no replica has served for RETIRE_AFTER_SECONDS is removed.
SEEN_EVERY_SECONDS = 60.0
RETIRE_AFTER_SECONDS = 900.0
# Incremental reloads re-read document records updated this long before the newest one seen
# (server clock), so a record committed while a reload ran is never missed.
RELOAD_OVERLAP_MS = 30_000
RECORD_PROPERTIES = ["docId", "source", "contentType", "bytes", "sha256", "addedAt", "chunks", "origin", "deleted"]
CHUNK_PROPERTIES = ["text", "heading", "source", "docId", "chunkId", "position", "page", "docSha"]
PAGE_NONE = -1


class VectorStoreUnavailable(RuntimeError):
    """Weaviate cannot be reached or did not answer in time (the API answers 503 + Retry-After)."""


class StoreWriteError(RuntimeError):
    """Weaviate refused objects of a document; the document was not changed. The message says why."""


class IndexMissing(RuntimeError):
    """No index exists yet for this RagService and these index parameters."""


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def collection_prefix(self) -> str:
        """``Kuberag_<ns>_<name>_<hash>``: readable, and the hash keeps ``a-b/c`` and ``a/b-c`` apart."""
        slug = "".join(ch if ch.isalnum() else "_" for ch in f"{self.namespace}_{self.name}")
        return f"Kuberag_{slug}_{hashlib.sha256(self.key.encode()).hexdigest()[:6]}"


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, ":".join(parts)))


def chunk_uuid(doc_id: str, sha256: str, position: int) -> str:
    return _uuid("chunk", doc_id, sha256, str(position))


def record_uuid(doc_id: str) -> str:
    return _uuid("doc", doc_id)


def shard_of(source: str, shards: int) -> int:
    """The shard (0..shards-1) that indexes a source: stable across pods and runs."""
    return int(hashlib.sha256(source.encode()).hexdigest()[:8], 16) % max(1, shards)


def new_build_id() -> str:
    # Starts with the time, so leftovers of crashed builds can be told apart by age.
    return f"b{int(time.time())}{secrets.token_hex(2)}"


def _build_time(collection: str) -> int | None:
    tail = collection.rsplit("_", 1)[-1]
    if tail.startswith("b") and tail[1:11].isdigit():
        return int(tail[1:11])
    return None


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    info: DocumentInfo
    origin: str
    deleted: bool

    @property
    def sha256(self) -> str:
        return self.info.sha256


@dataclass(frozen=True, slots=True)
class _View:
    """What a pod serves, replaced as a whole (one reference assignment) by each refresh."""

    collection: str | None = None
    token: str = ""
    records: dict[str, DocumentRecord] = field(default_factory=dict)  # live documents only
    newest_update_ms: int = 0
    revision: str | None = None
    chunks: int = 0


def _record(props: dict, doc_id: str | None = None) -> DocumentRecord:
    info = DocumentInfo(doc_id or props["docId"], props.get("source") or "", props.get("contentType") or "",
                        int(props.get("chunks") or 0), int(props.get("bytes") or 0), props.get("sha256") or "",
                        props.get("addedAt") or "")
    return DocumentRecord(info, props.get("origin") or "api", bool(props.get("deleted")))


def _store_error(exc: BaseException) -> bool:
    """An error of Weaviate or of the way to it (not of kuberag's own code)."""
    import grpc
    from weaviate.exceptions import WeaviateBaseError

    return isinstance(exc, WeaviateBaseError | httpx.HTTPError | grpc.RpcError | OSError)


class WeaviateStore:
    """The shared store (see ``kuberag_api.rag.store.RagStore`` and this module's docstring).

    Nothing touches the network in the constructor: ``start()`` connects in a background thread
    that also polls the shared state; until a first index exists ``ready`` is False.
    """

    def __init__(self, config: VectorStore, service: ServiceRef, retrieval: Retrieval, embedder: Embedder, *,
                 api_key: str | None = None, dense_weight: float | None = None,
                 sweep_grace_seconds: float = SWEEP_GRACE_SECONDS) -> None:
        self.config = config
        self.service = service
        self.retrieval = retrieval
        self._embedder = embedder
        self.dense_weight = dense_weight_for(embedder.name) if dense_weight is None else dense_weight
        self.sweep_grace_seconds = sweep_grace_seconds
        self._api_key = api_key
        self.params = {"embedder": embedder.name, "dim": embedder.dim, "chunk_size": retrieval.chunk_size,
                       "chunk_overlap": retrieval.chunk_overlap, "algorithm": ALGORITHM_VERSION}
        self.params_key = fingerprint(self.params)[:12]
        self._fingerprint = fingerprint({"top_k": retrieval.top_k, "dense_weight": self.dense_weight,
                                         "store": "weaviate-hybrid-relative", **self.params})
        url = urlsplit(config.url)
        self._http_host = url.hostname or "localhost"
        self._http_secure = url.scheme == "https"
        self._http_port = url.port or (443 if self._http_secure else 80)
        self._grpc_host = config.grpc_host or self._http_host
        self._grpc_secure = self._http_secure if config.grpc_secure is None else config.grpc_secure
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._poll_timeout = min(config.timeouts.query_seconds, 5.0)
        # The poll reads three objects by id over REST on its own short timeout: the client's
        # gRPC reads retry an unreachable server with backoff for about a minute, and an outage
        # (and the recovery) must show within a poll or two.
        self._http = httpx.Client(base_url=config.url.rstrip("/"), headers=headers, timeout=self._poll_timeout)
        # Weaviate calls run here with a deadline, so a hung server costs a request at most the
        # configured timeout (the client's own retries may keep a thread busy longer).
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="kuberag-weaviate")
        self._view = _View()
        self._epoch = 0
        self._polled = False
        self._failures = 0
        self.last_error: str | None = None
        self.last_poll_ok: float | None = None  # time.monotonic() of the last good poll
        self._sweeps: list[tuple[float, str, str]] = []
        self._sweeps_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: ApiConfig, service: ServiceRef, *, api_key: str | None = None,
                    embeddings_api_key: str | None = None, embedder: Embedder | None = None) -> WeaviateStore:
        """The store ``providers.vectorStore`` names, embedding with ``providers.embeddings`` (or
        the local model). Loads the embedder; no network yet."""
        if config.providers.vector_store is None:
            raise ValueError("providers.vectorStore is not set")
        if embedder is None:
            embedder = build_embedder(config.providers, embeddings_api_key, config.retrieval.embedding_model)
        return cls(config.providers.vector_store, service, config.retrieval, embedder, api_key=api_key)

    # ----------------------------------------------------------------- naming

    def index_name(self, build: str) -> str:
        return f"{self.service.collection_prefix()}_{self.params_key}_{build}"

    def _pointer_id(self, params_key: str | None = None) -> str:
        return _uuid("pointer", self.service.key, params_key or self.params_key)

    def _epoch_id(self) -> str:
        return _uuid("epoch", self.service.key)

    @staticmethod
    def _token_id(collection: str) -> str:
        return _uuid("token", collection)

    def _seen_id(self, params_key: str) -> str:
        return _uuid("seen", self.service.key, params_key)

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Connect and poll in a background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name="kuberag-weaviate-poll", daemon=True)
            self._thread.start()

    def connect(self) -> None:
        """Connect now (raises VectorStoreUnavailable) and create the metadata collection if missing."""
        self._ensure_client()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._client_lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # closing a dead connection is not worth a trace
                    pass
                self._client = None
        self._http.close()
        self._io.shutdown(wait=False, cancel_futures=True)

    def _ensure_client(self) -> Any:
        with self._client_lock:
            if self._client is not None:
                return self._client
            import weaviate
            from weaviate.classes.init import AdditionalConfig, Auth, GrpcConfig, Timeout

            t = self.config.timeouts
            try:
                client = weaviate.connect_to_custom(
                    http_host=self._http_host, http_port=self._http_port, http_secure=self._http_secure,
                    grpc_host=self._grpc_host, grpc_port=self.config.grpc_port, grpc_secure=self._grpc_secure,
                    auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
                    # The client's init checks also GET pypi.org for its latest version on every
                    # connect (a pod without egress waits out the init timeout for it, and replicas
                    # should not call the internet): skipped; the server's version is still checked
                    # and gRPC is checked below with one read.
                    skip_init_checks=True,
                    additional_config=AdditionalConfig(
                        timeout=Timeout(init=t.init_seconds, query=t.query_seconds, insert=t.insert_seconds),
                        # gRPC's default reconnect backoff grows to two minutes: recover within a second.
                        grpc_config=GrpcConfig(channel_options=[
                            ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                            ("grpc.max_reconnect_backoff_ms", 1000)]),
                    ),
                )
            except Exception as exc:
                raise VectorStoreUnavailable(f"cannot connect to Weaviate at {self.config.url} "
                                             f"(gRPC {self._grpc_host}:{self.config.grpc_port}): {exc}") from None
            try:
                self._ensure_meta_collection(client)
            except Exception as exc:
                client.close()
                raise VectorStoreUnavailable(f"cannot create the {META_COLLECTION} collection: {exc}") from None
            grpc_check = self._io.submit(
                lambda: client.collections.use(META_COLLECTION).query.fetch_objects(limit=1))
            try:
                grpc_check.result(timeout=t.init_seconds)
            except Exception as exc:
                client.close()
                reason = "no answer" if isinstance(exc, FutureTimeout) else str(exc)[:300]
                raise VectorStoreUnavailable(f"Weaviate's gRPC API at {self._grpc_host}:{self.config.grpc_port} "
                                             f"is not usable: {reason}") from None
            self._client = client
            return client

    # ---------------------------------------------------------------- schema

    @staticmethod
    def _create_collection(client: Any, name: str, properties: list, vector: bool) -> None:
        from weaviate.classes.config import Configure, VectorDistances

        if client.collections.exists(name):
            return
        vector_config = Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)) if vector \
            else Configure.Vectors.self_provided()
        try:
            client.collections.create(
                name, properties=properties, vector_config=vector_config,
                inverted_index_config=Configure.inverted_index(index_timestamps=True),
            )
        except Exception:
            # Another pod or shard created it first: fine; anything else is raised.
            if not client.collections.exists(name):
                raise

    def _ensure_meta_collection(self, client: Any) -> None:
        from weaviate.classes.config import DataType, Property, Tokenization

        def key(name: str) -> Property:
            return Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                            index_searchable=False)

        def opaque(name: str) -> Property:
            return Property(name=name, data_type=DataType.TEXT, index_searchable=False, index_filterable=False)

        def number(name: str) -> Property:
            return Property(name=name, data_type=DataType.INT)

        self._create_collection(client, META_COLLECTION, [
            key("kind"), key("service"), key("paramsKey"), key("collection"), opaque("params"), opaque("token"),
            opaque("revision"), opaque("indexedAt"), number("epoch"), number("shard"), number("shards"),
            number("documents"), number("chunks"), number("seenAt"),
        ], vector=False)

    def _ensure_index(self, collection: str) -> None:
        from weaviate.classes.config import DataType, Property, Tokenization

        def key(name: str) -> Property:
            return Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                            index_searchable=False)

        def stored(name: str, data_type: Any = DataType.TEXT) -> Property:
            return Property(name=name, data_type=data_type, index_searchable=False, index_filterable=False)

        client = self._ensure_client()
        self._create_collection(client, collection, [
            Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            Property(name="heading", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
            key("source"), key("docId"), key("chunkId"), key("docSha"), key("corpusVersion"),
            stored("position", DataType.INT), stored("page", DataType.INT),
        ], vector=True)
        self._create_collection(client, collection + DOCS_SUFFIX, [
            key("docId"), key("source"), key("origin"), key("sha256"), stored("contentType"), stored("addedAt"),
            stored("bytes", DataType.INT), stored("chunks", DataType.INT), stored("sections"),
            Property(name="deleted", data_type=DataType.BOOL),
        ], vector=False)

    # ----------------------------------------------------- calls with a deadline

    def _call(self, fn: Callable[[Any], Any], timeout: float | None = None, what: str = "query") -> Any:
        """Run ``fn(client)`` with a deadline; connection problems raise VectorStoreUnavailable."""
        client = self._ensure_client()
        timeout = timeout or self.config.timeouts.query_seconds
        future = self._io.submit(fn, client)
        try:
            return future.result(timeout=timeout + 1.0)
        except FutureTimeout:
            self._note_failure(f"{what}: no answer from Weaviate within {timeout:g}s")
            raise VectorStoreUnavailable(f"Weaviate did not answer the {what} within {timeout:g}s") from None
        except (VectorStoreUnavailable, StoreWriteError, DocumentError, IndexMissing):
            raise
        except Exception as exc:
            # Unreachable, shutting down ("shard not found", "context canceled"), overloaded: to a
            # caller all of these are the store being unavailable (503, retry), never a 500.
            if _store_error(exc):
                self._note_failure(f"{what}: {exc}")
                log.warning("weaviate call failed", extra={"what": what, "error": str(exc)[:300]})
                raise VectorStoreUnavailable(f"Weaviate {what} failed: {exc}") from None
            raise

    def _note_failure(self, message: str) -> None:
        self._failures += 1
        self.last_error = message[:500]

    def _get_meta(self, object_id: str) -> dict | None:
        r = self._http.get(f"/v1/objects/{META_COLLECTION}/{object_id}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json().get("properties") or {}

    def _upsert(self, collection: str, objects: list, what: str) -> list[str]:
        """Write objects (batch = insert or replace by id); the error message of every refused one."""
        def write(client: Any) -> list[str]:
            coll = client.collections.use(collection)
            errors: list[str] = []
            for start in range(0, len(objects), BATCH_SIZE):
                result = coll.data.insert_many(objects[start:start + BATCH_SIZE])
                errors.extend(e.message for e in result.errors.values())
            return errors

        return self._call(write, self.config.timeouts.insert_seconds, what)

    def _put_meta(self, object_id: str, properties: dict) -> None:
        from weaviate.classes.data import DataObject

        errors = self._upsert(META_COLLECTION, [DataObject(properties=properties, uuid=object_id)], "metadata write")
        if errors:
            raise StoreWriteError(f"Weaviate refused the {properties.get('kind')} metadata: {errors[0]}")

    # ----------------------------------------------------------------- polling

    def _poll_loop(self) -> None:
        backoff = self.config.poll_seconds
        next_seen = time.monotonic()
        while not self._stop.is_set():
            try:
                self.refresh()
                backoff = self.config.poll_seconds
                self._run_due_sweeps()
                if self._view.collection is not None and time.monotonic() >= next_seen:
                    next_seen = time.monotonic() + SEEN_EVERY_SECONDS
                    self._housekeeping()
            except Exception as exc:
                if not self._stop.is_set():
                    level = logging.WARNING if self._failures <= 1 else logging.DEBUG
                    log.log(level, "weaviate poll failed", extra={"error": str(exc)[:300]})
                self._note_failure(f"poll: {exc}")
                backoff = min(max(backoff * 2, self.config.poll_seconds), 2.0)
            self._stop.wait(backoff)

    def refresh(self) -> None:
        """Read the pointer, corpus token and cache epoch; reload document records if they moved."""
        with self._refresh_lock:
            self._ensure_client()
            pointer = self._get_meta(self._pointer_id())
            epoch = self._get_meta(self._epoch_id())
            view = self._view
            if pointer is None and view.collection is not None:
                # A shutting-down Weaviate answers 404 for objects it holds: keep serving what we
                # had rather than dropping the index (a real removal needs a restart to show).
                raise RuntimeError(f"the index pointer of {self.service.key} is missing; keeping {view.collection}")
            if pointer is None:
                new = _View()
            else:
                collection = pointer["collection"]
                token_object = self._get_meta(self._token_id(collection))
                if token_object is None:
                    raise RuntimeError(f"the corpus token of {collection} is missing (Weaviate starting or stopping?)")
                token = token_object.get("token", "")
                if collection != view.collection:
                    new = self._load_view(collection, token, None, pointer.get("revision"))
                elif token != view.token:
                    new = self._load_view(collection, token, view, pointer.get("revision"))
                else:
                    new = view
            self._view = new
            self._epoch = int((epoch or {}).get("epoch") or 0)
            self._polled = True
            self._failures = 0
            self.last_error = None
            self.last_poll_ok = time.monotonic()

    def _load_view(self, collection: str, token: str, base: _View | None, revision: str | None) -> _View:
        """Document records of ``collection``: all of them, or (with ``base``) those updated since."""
        from weaviate.classes.query import Filter, MetadataQuery

        def load(client: Any) -> tuple[dict[str, DocumentRecord], int]:
            docs = client.collections.use(collection + DOCS_SUFFIX)
            records: dict[str, DocumentRecord] = dict(base.records) if base else {}
            newest = base.newest_update_ms if base else 0
            if base is None:
                rows = docs.iterator(return_properties=RECORD_PROPERTIES,
                                     return_metadata=MetadataQuery(last_update_time=True))
            else:
                since = datetime.fromtimestamp(max(0, newest - RELOAD_OVERLAP_MS) / 1000, UTC)
                rows = docs.query.fetch_objects(filters=Filter.by_update_time().greater_or_equal(since),
                                                limit=10_000, return_properties=RECORD_PROPERTIES,
                                                return_metadata=MetadataQuery(last_update_time=True)).objects
            for o in rows:
                rec = _record(o.properties)
                if rec.deleted:
                    records.pop(rec.info.doc_id, None)
                else:
                    records[rec.info.doc_id] = rec
                updated = o.metadata.last_update_time
                if updated is not None:
                    newest = max(newest, int(updated.timestamp() * 1000))
            return records, newest

        records, newest = self._call(load, what="document reload")
        return _View(collection, token, records, newest, revision, sum(r.info.chunks for r in records.values()))

    # ------------------------------------------------------------- properties

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def ready(self) -> bool:
        return self._view.collection is not None

    @property
    def available(self) -> bool:
        """False after two failed polls in a row (one slow answer on a loaded node is not an outage)."""
        return self._polled and self._failures < 2

    @property
    def cache_epoch(self) -> int:
        return self._epoch

    @property
    def collection(self) -> str | None:
        return self._view.collection

    @property
    def revision(self) -> str | None:
        return self._view.revision

    @property
    def chunk_count(self) -> int:
        return self._view.chunks

    @property
    def document_count(self) -> int:
        return len(self._view.records)

    @property
    def corpus_version(self) -> str:
        view = self._view
        return f"{view.collection}:{view.token}" if view.collection else ""

    @property
    def retrieval_fingerprint(self) -> str:
        return self._fingerprint

    def status(self) -> dict:
        """The store's state for /readyz."""
        view = self._view
        state: dict[str, Any] = {"type": "weaviate", "url": self.config.url, "service": self.service.key,
                                 "params": self.params_key}
        if not self._polled:
            state["status"] = f"connecting: {self.last_error}" if self.last_error else "connecting"
        elif not self.available:
            state["status"] = f"unreachable: {self.last_error}"
        elif view.collection is None:
            state["status"] = "no index yet: the indexing Job (kuberag ingest --sync) has not completed"
        else:
            state["status"] = "up"
        if self.last_poll_ok is not None:
            state["last_poll_seconds_ago"] = round(time.monotonic() - self.last_poll_ok, 3)
        if view.collection:
            state.update(collection=view.collection, documents=len(view.records), chunks=view.chunks,
                         revision=view.revision)
        return state

    def not_ready_reason(self) -> str:
        return self.status()["status"]

    # ---------------------------------------------------------------- reading

    def _require_available(self) -> _View:
        if not self.available:
            raise VectorStoreUnavailable(f"Weaviate at {self.config.url} is unreachable: {self.last_error}")
        view = self._view
        if view.collection is None:
            raise IndexMissing("no index exists yet for this RagService: run the indexing Job "
                               "(kuberag ingest --sync)")
        return view

    def retrieve(self, question: str, query_vector: np.ndarray | None = None,
                 top_k: int | None = None) -> list[Passage]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        view = self._require_available()
        k = top_k or self.retrieval.top_k
        if not view.records:
            return []
        if query_vector is None:
            query_vector = self._embedder.embed_query(question)
        vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self._embedder.dim:
            raise ValueError(f"query vector has dimension {vector.shape[0]}, the index {self._embedder.dim}")

        def search(client: Any) -> Any:
            # Extra candidates: a document being replaced may hold both versions for a moment.
            return client.collections.use(view.collection).query.hybrid(
                query=question, vector=vector.tolist(), alpha=self.dense_weight, limit=2 * k + 4,
                fusion_type=HybridFusion.RELATIVE_SCORE, query_properties=["text", "heading"],
                return_properties=CHUNK_PROPERTIES, return_metadata=MetadataQuery(score=True), include_vector=True,
            )

        result = self._call(search, what="search")
        passages: list[Passage] = []
        for o in result.objects:
            p = o.properties
            record = view.records.get(p["docId"])
            if record is None or record.sha256 != p["docSha"]:
                continue  # a superseded version, or one whose switch this view has not seen
            dense = float(np.asarray(o.vector["default"], dtype=np.float32) @ vector)
            metadata: dict[str, Any] = {"heading": p.get("heading") or None, "position": p["position"],
                                        "dense_score": dense}
            if p.get("page") not in (None, PAGE_NONE):
                metadata["page"] = p["page"]
            passages.append(Passage(p["docId"], p["chunkId"], p["source"], p["text"],
                                    float(o.metadata.score or 0.0), metadata))
            if len(passages) == k:
                break
        return passages

    def documents(self) -> list[DocumentInfo]:
        return sorted((r.info for r in self._view.records.values()), key=lambda d: d.source)

    def document(self, doc_id: str) -> DocumentInfo | None:
        record = self._view.records.get(doc_id)
        return record.info if record else None

    def _fetch_record(self, collection: str, doc_id: str, sections: bool = False) -> tuple[DocumentRecord, dict] | None:
        def fetch(client: Any) -> Any:
            props = RECORD_PROPERTIES + (["sections"] if sections else [])
            return client.collections.use(collection + DOCS_SUFFIX).query.fetch_object_by_id(
                record_uuid(doc_id), return_properties=props)

        obj = self._call(fetch, what="document read")
        if obj is None:
            return None
        return _record(obj.properties, doc_id), obj.properties

    # ---------------------------------------------------------------- writing

    def _active_collection(self) -> str:
        """The index version in service now (read fresh: a write must never go to a retired one)."""
        try:
            pointer = self._get_meta(self._pointer_id())
        except httpx.HTTPError as exc:
            self._note_failure(f"pointer read: {exc}")
            raise VectorStoreUnavailable(f"cannot read the index pointer from Weaviate: {exc}") from None
        if pointer is None:
            raise IndexMissing("no index exists yet for this RagService: run the indexing Job "
                               "(kuberag ingest --sync) first")
        return pointer["collection"]

    def _chunk_objects(self, doc: PreparedDocument, version: str) -> list:
        from weaviate.classes.data import DataObject

        return [
            DataObject(
                properties={"text": c.text, "heading": c.heading or "", "source": doc.source, "docId": doc.doc_id,
                            "chunkId": f"{doc.doc_id}:{c.position}", "position": c.position,
                            "page": PAGE_NONE if c.page is None else c.page, "docSha": doc.sha256,
                            "corpusVersion": version},
                uuid=chunk_uuid(doc.doc_id, doc.sha256, c.position),
                vector=np.asarray(v, dtype=np.float32).tolist(),
            )
            for c, v in zip(doc.chunks, doc.vectors, strict=True)
        ]

    def _record_object(self, doc: PreparedDocument, origin: str, sections: str, added_at: str) -> Any:
        from weaviate.classes.data import DataObject

        return DataObject(properties={
            "docId": doc.doc_id, "source": doc.source, "contentType": doc.content_type, "bytes": doc.size,
            "sha256": doc.sha256, "addedAt": added_at, "chunks": len(doc.chunks), "origin": origin,
            "sections": sections, "deleted": False,
        }, uuid=record_uuid(doc.doc_id))

    def _write_document(self, collection: str, doc: PreparedDocument, origin: str, version: str,
                        chunk_objects: list | None = None) -> None:
        """New chunks, then the record (the switch). Any refused object: roll back, raise."""
        objects = chunk_objects if chunk_objects is not None else self._chunk_objects(doc, version)
        errors = self._upsert(collection, objects, "chunk write")
        if errors:
            self._discard([str(o.uuid) for o in objects], collection)
            raise StoreWriteError(f"{doc.source}: Weaviate refused {len(errors)} of {len(objects)} chunks "
                                  f"(the document was not changed): {errors[0]}")
        added_at = datetime.now(UTC).isoformat(timespec="seconds")
        record = self._record_object(doc, origin, sections_json(doc.sections), added_at)
        errors = self._upsert(collection + DOCS_SUFFIX, [record], "document record write")
        if errors:
            self._discard([str(o.uuid) for o in objects], collection)
            raise StoreWriteError(f"{doc.source}: Weaviate refused the document record "
                                  f"(the document was not changed): {errors[0]}")
        self._schedule_sweep(collection, doc.doc_id)

    def _discard(self, ids: list[str], collection: str) -> None:
        """Best-effort rollback: the chunks are invisible anyway (no record points at them)."""
        from weaviate.classes.query import Filter

        try:
            for start in range(0, len(ids), BATCH_SIZE):
                batch = ids[start:start + BATCH_SIZE]
                self._call(lambda c, b=batch: c.collections.use(collection).data.delete_many(
                    where=Filter.by_id().contains_any(b)), what="rollback")
        except Exception as exc:
            log.warning("rollback of refused chunks failed; the sweep removes them later",
                        extra={"error": str(exc)[:300]})

    def _bump_token(self, collection: str) -> str:
        token = secrets.token_hex(8)
        self._put_meta(self._token_id(collection), {"kind": "token", "service": self.service.key,
                                                    "collection": collection, "token": token})
        return token

    def ingest(self, source: str, data: bytes, content_type: str | None = None,
               parsed: ParsedDocument | None = None) -> IngestResult:
        """Add or replace one document in the index in service (``parsed``: already parsed by the
        parser process). Raises UnsupportedDocument / DocumentError (bad document), StoreWriteError
        (refused by Weaviate), VectorStoreUnavailable."""
        result = self._ingest_one(check_source(source), data, content_type, parsed)
        if result.status != "unchanged":
            self.refresh()  # read-your-writes: this replica answers from the new version at once
        return result

    def is_unchanged(self, source: str, data: bytes) -> bool:
        """From this replica's view (no round trip); ``ingest`` checks again against Weaviate."""
        record = self._view.records.get(doc_id_for(source.strip()))
        return record is not None and record.sha256 == hashlib.sha256(data).hexdigest()

    def _ingest_one(self, source: str, data: bytes, content_type: str | None,
                    parsed: ParsedDocument | None = None) -> IngestResult:
        doc_id = doc_id_for(source)
        sha = hashlib.sha256(data).hexdigest()
        collection = self._active_collection()
        existing = self._fetch_record(collection, doc_id)
        if existing is not None and not existing[0].deleted and existing[0].sha256 == sha:
            return IngestResult(doc_id, source, "unchanged", existing[0].info.chunks)
        doc = prepare_document(source, data, content_type, self.retrieval, self._embedder, parsed)
        # Embedding may take long: read the pointer again, so a re-index that switched meanwhile
        # gets this document (the switch copies uploads that raced it within its grace period).
        latest = self._active_collection()
        if latest != collection:
            collection, existing = latest, self._fetch_record(latest, doc_id)
        live = existing is not None and not existing[0].deleted
        self._write_document(collection, doc, "api", collection)
        self._bump_token(collection)
        return IngestResult(doc_id, source, "replaced" if live else "added", len(doc.chunks))

    def delete(self, doc_id: str) -> bool:
        from weaviate.classes.data import DataObject

        collection = self._active_collection()
        existing = self._fetch_record(collection, doc_id)
        if existing is None or existing[0].deleted:
            return False
        props = {**existing[1], "deleted": True, "chunks": 0, "sha256": "", "sections": "[]"}
        errors = self._upsert(collection + DOCS_SUFFIX, [DataObject(properties=props, uuid=record_uuid(doc_id))],
                              "document delete")
        if errors:
            raise StoreWriteError(f"Weaviate refused the deletion of {doc_id}: {errors[0]}")
        self._bump_token(collection)
        self._schedule_sweep(collection, doc_id)
        self.refresh()
        return True

    def ingest_many(self, documents: Iterable[tuple[str, bytes, str | None]],
                    progress: Callable[[IngestResult], None] | None = None) -> list[IngestResult]:
        """Add or replace documents in the index in service, one at a time (each one atomic for
        readers); a bad or refused document is reported as ``refused`` with the reason."""
        try:
            self._active_collection()
        except IndexMissing:
            # The first documents of a RagService without an index: they make its first version.
            return self.build_index(documents, origin="api", progress=progress, switch_grace_seconds=0)
        results = []
        changed = False
        for source, data, content_type in documents:
            try:
                result = self._ingest_one(check_source(source), data, content_type)
            except (DocumentError, StoreWriteError) as exc:
                result = refused(source, str(exc))
            changed = changed or result.status in ("added", "replaced")
            results.append(result)
            if progress is not None:
                progress(result)
        if changed:
            self.refresh()
        return results

    # ---------------------------------------------------------------- sweeping

    def _schedule_sweep(self, collection: str, doc_id: str, delay: float | None = None) -> None:
        due = time.monotonic() + (self.sweep_grace_seconds if delay is None else delay)
        with self._sweeps_lock:
            self._sweeps.append((due, collection, doc_id))

    def _run_due_sweeps(self) -> None:
        now = time.monotonic()
        with self._sweeps_lock:
            due = [s for s in self._sweeps if s[0] <= now]
            self._sweeps = [s for s in self._sweeps if s[0] > now]
        for _, collection, doc_id in due:
            try:
                self.sweep(collection, doc_id)
            except Exception as exc:
                if not self._call(lambda c, n=collection: c.collections.exists(n), what="collection check"):
                    continue  # the index version was dropped (a re-index switched): nothing to sweep
                log.warning("sweep of superseded chunks failed; retried later",
                            extra={"doc_id": doc_id, "error": str(exc)[:300]})
                self._schedule_sweep(collection, doc_id)

    def sweep(self, collection: str, doc_id: str) -> int:
        """Delete the document's chunks no record points at, older than the grace period (newer
        ones may belong to a write in flight on another replica). Returns how many went."""
        from weaviate.classes.query import Filter

        existing = self._fetch_record(collection, doc_id)
        keep = existing[0].sha256 if existing is not None and not existing[0].deleted else None
        cutoff = datetime.now(UTC) - timedelta(seconds=self.sweep_grace_seconds)
        stale = Filter.by_property("docId").equal(doc_id)
        if keep:
            stale = stale & Filter.by_property("docSha").not_equal(keep)
        old = stale & Filter.by_creation_time().less_than(cutoff)

        def delete(client: Any) -> tuple[int, int]:
            coll = client.collections.use(collection)
            deleted = coll.data.delete_many(where=old).successful
            left = coll.aggregate.over_all(filters=stale, total_count=True).total_count or 0
            return deleted, left

        deleted, left = self._call(delete, what="sweep")
        if left:
            self._schedule_sweep(collection, doc_id)
        return deleted

    # ------------------------------------------------------------ housekeeping

    def _housekeeping(self) -> None:
        """Say these parameters are served, and retire other parameters' indexes nobody serves."""
        try:
            self._put_meta(self._seen_id(self.params_key), {
                "kind": "seen", "service": self.service.key, "paramsKey": self.params_key,
                "seenAt": int(time.time() * 1000)})
            self.retire_unserved_indexes()
        except (VectorStoreUnavailable, StoreWriteError, httpx.HTTPError) as exc:
            log.warning("index housekeeping failed; retried later", extra={"error": str(exc)[:300]})

    def retire_unserved_indexes(self, idle_seconds: float = RETIRE_AFTER_SECONDS) -> list[str]:
        """Drop the indexes of this RagService built for other parameters (a previous embedding
        model or chunking) that no replica has served for ``idle_seconds``: after a model change
        the old index serves the old pods until the rollout ends, then goes. Returns what went."""
        from weaviate.classes.query import Filter

        def pointers(client: Any) -> Any:
            return client.collections.use(META_COLLECTION).query.fetch_objects(
                filters=Filter.by_property("kind").equal("pointer") & Filter.by_property("service").equal(self.service.key),
                limit=100, return_properties=["collection", "paramsKey", "indexedAt"]).objects

        retired = []
        now = time.time()
        for obj in self._call(pointers, what="pointer list"):
            p = obj.properties
            if p.get("paramsKey") == self.params_key:
                continue
            seen = self._get_meta(self._seen_id(p["paramsKey"])) or {}
            last = (seen.get("seenAt") or 0) / 1000
            if not last and p.get("indexedAt"):
                last = datetime.fromisoformat(p["indexedAt"]).timestamp()
            if now - last < idle_seconds:
                continue
            self.drop_index(p["collection"])
            gone = [str(obj.uuid), self._seen_id(p["paramsKey"])]
            self._call(lambda c, ids=gone: c.collections.use(META_COLLECTION).data.delete_many(
                where=Filter.by_id().contains_any(ids)), what="pointer removal")
            log.info("index of other parameters retired (no replica serves it)",
                     extra={"collection": p["collection"], "params": p["paramsKey"]})
            retired.append(p["collection"])
        return retired

    # ------------------------------------------------------------- cache epoch

    def bump_epoch(self) -> int:
        """A new cache epoch for every replica of this RagService (DELETE /cache on any of them)."""
        try:
            current = int((self._get_meta(self._epoch_id()) or {}).get("epoch") or 0)
        except httpx.HTTPError as exc:
            self._note_failure(f"epoch read: {exc}")
            raise VectorStoreUnavailable(f"cannot read the cache epoch from Weaviate: {exc}") from None
        # A time in ms: two clears on two replicas at different moments never write the same value.
        epoch = max(current + 1, int(time.time() * 1000))
        self._put_meta(self._epoch_id(), {"kind": "epoch", "service": self.service.key, "epoch": epoch})
        self._epoch = epoch
        return epoch

    # ---------------------------------------------------------- building an index

    def sync_corpus(self, corpus_path: str | Path, *, build_id: str | None = None, shard: int = 0, shards: int = 1,
                    revision: str | None = None, switch_grace_seconds: float = SWITCH_GRACE_SECONDS,
                    progress: Callable[[IngestResult], None] | None = None) -> list[IngestResult]:
        """Build a new index version holding exactly the files of ``corpus_path`` (this shard's
        share of them) plus the documents uploaded through the API, and switch every replica to it
        once every shard has finished. Unchanged documents keep their vectors (copied, not
        re-embedded) when the model and chunking are the same."""
        mine = [(p, s) for p, s in corpus_files(Path(corpus_path)) if shard_of(s, shards) == shard]

        def documents() -> Iterable[tuple[str, bytes, str | None] | IngestResult]:
            for path, source in mine:
                reason = unsupported_reason(path)
                if reason:
                    yield refused(source, reason)
                    continue
                try:
                    yield source, path.read_bytes(), None
                except OSError as exc:
                    yield refused(source, f"cannot read: {exc}")

        return self.build_index(documents(), origin="corpus", build_id=build_id, shard=shard, shards=shards,
                                revision=revision, switch_grace_seconds=switch_grace_seconds, progress=progress)

    def build_index(self, documents: Iterable[tuple[str, bytes, str | None] | IngestResult | PreparedDocument], *,
                    origin: str, build_id: str | None = None, shard: int = 0, shards: int = 1,
                    revision: str | None = None, switch_grace_seconds: float = SWITCH_GRACE_SECONDS,
                    progress: Callable[[IngestResult], None] | None = None) -> list[IngestResult]:
        """Write ``documents`` into a new index version; switch to it when every shard has marked
        itself done. An item is (source, bytes, content type), an IngestResult (refused before
        reading) or a PreparedDocument (already embedded with this store's model and chunking)."""
        build = build_id or new_build_id()
        target = self.index_name(build)
        self._ensure_index(target)
        try:
            current = self._active_collection()
        except IndexMissing:
            current = None
        results: list[IngestResult] = []
        for item in documents:
            if isinstance(item, IngestResult):
                result = item
            elif isinstance(item, PreparedDocument):
                try:
                    self._write_document(target, item, origin, target)
                    result = IngestResult(item.doc_id, item.source, "added", len(item.chunks))
                except StoreWriteError as exc:
                    result = refused(item.source, str(exc))
            else:
                source, data, content_type = item
                try:
                    result = self._build_one(target, current, check_source(source), data, content_type, origin)
                except (DocumentError, StoreWriteError) as exc:
                    result = refused(source, str(exc))
            results.append(result)
            if progress is not None:
                progress(result)
        self._put_meta(_uuid("shard", target, str(shard)), {
            "kind": "shard", "service": self.service.key, "collection": target, "shard": shard, "shards": shards,
            "documents": sum(1 for r in results if r.status != "refused"), "chunks": sum(r.chunks for r in results)})
        if self._shards_done(target) >= shards:
            self._switch(target, current, revision, switch_grace_seconds)
        else:
            log.info("shard indexed; the last shard to finish switches the index",
                     extra={"collection": target, "shard": shard, "shards": shards})
        return results

    def _build_one(self, target: str, current: str | None, source: str, data: bytes, content_type: str | None,
                   origin: str) -> IngestResult:
        doc_id = doc_id_for(source)
        sha = hashlib.sha256(data).hexdigest()
        done = self._fetch_record(target, doc_id)
        if done is not None and done[0].sha256 == sha and not done[0].deleted:
            return IngestResult(doc_id, source, "unchanged", done[0].info.chunks)  # a retried shard
        before = self._fetch_record(current, doc_id) if current else None
        existed = before is not None and not before[0].deleted
        if existed and before[0].sha256 == sha and before[0].origin == origin:
            copied = self._copy_document(current, target, before)
            if copied is not None:
                return IngestResult(doc_id, source, "unchanged", copied)
        doc = prepare_document(source, data, content_type, self.retrieval, self._embedder)
        self._write_document(target, doc, origin, target)
        return IngestResult(doc_id, source, "replaced" if existed else "added", len(doc.chunks))

    def _copy_document(self, source_collection: str, target: str, record: tuple[DocumentRecord, dict]) -> int | None:
        """Copy a document's chunks with their vectors (same model and chunking); None if the
        source holds an incomplete set (then the caller re-embeds)."""
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter

        info = record[0].info

        def fetch(client: Any) -> Any:
            return client.collections.use(source_collection).query.fetch_objects(
                filters=Filter.by_property("docId").equal(info.doc_id) & Filter.by_property("docSha").equal(info.sha256),
                limit=max(info.chunks, 1) + 1, include_vector=True, return_properties=CHUNK_PROPERTIES + ["corpusVersion"])

        objects = self._call(fetch, what="document copy").objects
        if len(objects) != info.chunks:
            return None
        copies = [DataObject(properties=o.properties, uuid=o.uuid, vector=o.vector["default"]) for o in objects]
        errors = self._upsert(target, copies, "chunk copy")
        if errors:
            self._discard([str(o.uuid) for o in copies], target)
            raise StoreWriteError(f"{info.source}: Weaviate refused {len(errors)} of {len(copies)} copied chunks: "
                                  f"{errors[0]}")
        props = {k: v for k, v in record[1].items() if k in RECORD_PROPERTIES}
        full = self._fetch_record(source_collection, info.doc_id, sections=True)
        props["sections"] = full[1].get("sections", "[]") if full else "[]"
        errors = self._upsert(target + DOCS_SUFFIX, [DataObject(properties=props, uuid=record_uuid(info.doc_id))],
                              "document record copy")
        if errors:
            raise StoreWriteError(f"{info.source}: Weaviate refused the copied record: {errors[0]}")
        return info.chunks

    def _shards_done(self, target: str) -> int:
        from weaviate.classes.query import Filter

        def count(client: Any) -> int:
            res = client.collections.use(META_COLLECTION).query.fetch_objects(
                filters=Filter.by_property("kind").equal("shard") & Filter.by_property("collection").equal(target),
                limit=10_000, return_properties=["shard"])
            return len({o.properties["shard"] for o in res.objects})

        return self._call(count, what="shard count")

    def _api_records(self, collection: str, since: datetime | None = None) -> list[tuple[DocumentRecord, dict]]:
        from weaviate.classes.query import Filter, MetadataQuery

        def fetch(client: Any) -> Any:
            where = Filter.by_property("origin").equal("api")
            if since is not None:
                where = where & Filter.by_update_time().greater_or_equal(since)
            return client.collections.use(collection + DOCS_SUFFIX).query.fetch_objects(
                filters=where, limit=10_000, return_properties=RECORD_PROPERTIES + ["sections"],
                return_metadata=MetadataQuery(last_update_time=True)).objects

        return [(_record(o.properties), o.properties) for o in self._call(fetch, what="API document read")]

    def _carry_api_documents(self, source: str, target: str, since: datetime | None = None) -> int:
        """Documents uploaded through the API live beside the corpus: bring them along (copied with
        their vectors, or re-chunked and re-embedded from their sections for new parameters)."""
        from weaviate.classes.data import DataObject

        carried = 0
        same_params = source.startswith(self.index_name(""))
        for record, props in self._api_records(source, since):
            doc_id = record.info.doc_id
            if record.deleted:
                existing = self._fetch_record(target, doc_id)
                if existing is not None and existing[0].origin == "api" and not existing[0].deleted:
                    self._upsert(target + DOCS_SUFFIX, [DataObject(properties={**existing[1], "deleted": True,
                                 "chunks": 0, "sha256": "", "sections": "[]"}, uuid=record_uuid(doc_id))], "tombstone")
                continue
            existing = self._fetch_record(target, doc_id)
            if existing is not None and existing[0].sha256 == record.sha256 and not existing[0].deleted:
                continue
            if same_params and self._copy_document(source, target, (record, props)) is not None:
                carried += 1
                continue
            sections = sections_from_json(props.get("sections") or "[]")
            chunks, vectors = chunk_and_embed(record.info.source, sections, self.retrieval, self._embedder)
            doc = PreparedDocument(doc_id, record.info.source, record.info.content_type, record.sha256,
                                   record.info.bytes, sections, chunks, vectors)
            self._write_document(target, doc, "api", target)
            carried += 1
        return carried

    def _switch(self, target: str, current: str | None, revision: str | None, grace: float) -> None:
        carry_from = current or self._latest_other_index()
        started = datetime.now(UTC) - timedelta(seconds=5)
        if carry_from:
            self._carry_api_documents(carry_from, target)
        token = self._bump_token(target)
        view = self._load_view(target, token, None, revision)
        self._put_meta(self._pointer_id(), {
            "kind": "pointer", "service": self.service.key, "paramsKey": self.params_key,
            "params": json.dumps(self.params, sort_keys=True), "collection": target, "revision": revision or "",
            "indexedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "documents": len(view.records), "chunks": view.chunks})
        log.info("index switched", extra={"collection": target, "previous": current, "documents": len(view.records),
                                          "chunks": view.chunks, "revision": revision})
        self.refresh()
        if current and current != target:
            # Replicas move to the new version within a poll; in-flight queries finish on the old.
            self._stop.wait(grace)
            self._carry_api_documents(current, target, since=started)  # uploads that raced the switch
            self._bump_token(target)
            self.drop_index(current)
        self._drop_leftover_builds(keep={target})

    def _latest_other_index(self) -> str | None:
        """The index of this RagService under other parameters (a previous model), newest first."""
        from weaviate.classes.query import Filter

        def fetch(client: Any) -> Any:
            return client.collections.use(META_COLLECTION).query.fetch_objects(
                filters=Filter.by_property("kind").equal("pointer") & Filter.by_property("service").equal(self.service.key),
                limit=100, return_properties=["collection", "indexedAt", "paramsKey"]).objects

        pointers = [o.properties for o in self._call(fetch, what="pointer list")
                    if o.properties.get("paramsKey") != self.params_key]
        pointers.sort(key=lambda p: p.get("indexedAt") or "", reverse=True)
        return pointers[0]["collection"] if pointers else None

    def drop_index(self, collection: str) -> None:
        def drop(client: Any) -> None:
            for name in (collection, collection + DOCS_SUFFIX):
                if client.collections.exists(name):
                    client.collections.delete(name)
            client.collections.use(META_COLLECTION).data.delete_many(
                where=_collection_filter(collection))

        self._call(drop, what="index drop")
        log.info("index version removed", extra={"collection": collection})

    def _drop_leftover_builds(self, keep: set[str], min_age_seconds: float = 6 * 3600) -> None:
        """Remove index versions of this RagService that no pointer names and whose build started
        long ago (a crashed Job's), never one that another Job may still be writing."""
        from weaviate.classes.query import Filter

        prefix = self.service.collection_prefix() + "_"

        def find(client: Any) -> tuple[list[str], set[str]]:
            names = [n for n in client.collections.list_all(simple=True) if n.startswith(prefix)
                     and not n.endswith(DOCS_SUFFIX)]
            pointers = client.collections.use(META_COLLECTION).query.fetch_objects(
                filters=Filter.by_property("kind").equal("pointer") & Filter.by_property("service").equal(self.service.key),
                limit=100, return_properties=["collection"]).objects
            return names, {o.properties["collection"] for o in pointers}

        names, referenced = self._call(find, what="index list")
        now = time.time()
        for name in names:
            built = _build_time(name)
            if name in keep or name in referenced or built is None or now - built < min_age_seconds:
                continue
            self.drop_index(name)


def _collection_filter(collection: str) -> Any:
    from weaviate.classes.query import Filter

    return Filter.by_property("collection").equal(collection)
