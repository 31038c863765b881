"""Benchmarks of the shared store (Weaviate), run by ``python -m bench`` (or alone:
``python -m bench.weaviate``): the hybrid fusion weight on the evaluation set, cold-query
latency at 10k and 100k chunks beside the embedded store, ingestion chunks/s into Weaviate, and a
replica's start-to-ready time with a shared store against the embedded one.

The Weaviate is the real ``weaviate-server`` of ``make tools``, started on free loopback ports
(the test fixture's class). Vectors: the 10k index is the HTTP benchmark's cached index (real
embeddings of real text, computed once and kept under ``.bench-cache/``); the 100k index is those
10k chunks ten times over, each copy's vector the real one plus Gaussian noise (sigma 0.05 per
dimension, renormalised) and its text suffixed with the copy number: synthetic vectors of the
model's dimension, since embedding 100k chunks here takes hours.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from kuberag_api.rag import RagEngine, load_default_embedder
from kuberag_api.rag.store import PreparedDocument
from kuberag_api.rag.weaviate_store import ServiceRef, WeaviateStore
from kuberag_contract.config import Retrieval, VectorStore, VectorStoreTimeouts

from tests.fixtures.weaviate_server import WeaviateServer

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"


@contextlib.contextmanager
def weaviate_server() -> Iterator[WeaviateServer]:
    with tempfile.TemporaryDirectory(prefix="kuberag-bench-weaviate-") as tmp:
        server = WeaviateServer(Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def store_for(server: WeaviateServer, name: str, engine_or_embedder, dense_weight: float | None = None) -> WeaviateStore:
    embedder = getattr(engine_or_embedder, "embedder", engine_or_embedder)
    config = VectorStore(url=server.url, grpc_port=server.grpc_port,
                         timeouts=VectorStoreTimeouts(query_seconds=60, insert_seconds=600))
    kwargs = {} if dense_weight is None else {"dense_weight": dense_weight}
    store = WeaviateStore(config, ServiceRef("bench", name), Retrieval(), embedder, api_key=server.api_key, **kwargs)
    store.connect()
    store.refresh()
    return store


def fusion_weights(engine: RagEngine, weights, questions: list[dict], metrics, ranked_sources) -> dict:
    """recall@5 / MRR of Weaviate's hybrid (relativeScoreFusion) at each alpha, on the evaluation
    index's own chunks and vectors (exported, not embedded again)."""
    table: dict[str, dict] = {}
    with weaviate_server() as server:
        store = store_for(server, "eval", engine)
        try:
            store.build_index(engine.export_documents(), origin="corpus", switch_grace_seconds=0)
            vectors = [engine.embedder.embed_query(q["question"]) for q in questions]
            for w in weights:
                store.dense_weight = w
                rows = []
                for item, vector in zip(questions, vectors, strict=True):
                    passages = store.retrieve(item["question"], vector, top_k=50)
                    ranked = ranked_sources(passages)
                    rows.append((*metrics(ranked, item["relevant"]), item["lang"]))
                entry = {"recall@5": _mean(r for r, _, _ in rows), "mrr": _mean(m for _, m, _ in rows)}
                for lang in ("en", "es"):
                    entry[f"recall@5_{lang}"] = _mean(r for r, _, la in rows if la == lang)
                table[f"weaviate@{w}"] = entry
        finally:
            store.close()
    return table


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0


# --- synthetic 100k ------------------------------------------------------------------------------
def multiplied(documents: list[PreparedDocument], copies: int, sigma: float = 0.05,
               seed: int = 11) -> Iterator[PreparedDocument]:
    """``copies`` of every document: copy 0 as is, the others with noisy vectors (see the module doc)."""
    from dataclasses import replace

    from kuberag_api.rag.store import doc_id_for

    rng = np.random.default_rng(seed)
    for n in range(copies):
        for doc in documents:
            if n == 0:
                yield doc
                continue
            vectors = doc.vectors + sigma * rng.standard_normal(doc.vectors.shape).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            source = f"copy{n}/{doc.source}"
            chunks = [replace(c, text=f"{c.text} (copy {n})") for c in doc.chunks]
            yield replace(doc, doc_id=doc_id_for(source), source=source, chunks=chunks, vectors=vectors,
                          sha256=f"{doc.sha256[:48]}{n:016x}")



# --- latency, ingestion, start ---------------------------------------------------------------------
def _embedded_index(docs: list[PreparedDocument], directory: Path) -> Path:
    """An embedded index of ``docs`` (their own vectors, no embedding) under ``directory``."""
    engine = RagEngine.open(directory, retrieval=Retrieval(), embedder=load_default_embedder())
    engine.ingest_prepared(docs, origin="corpus")
    engine.close()
    return directory


def _shared_index(server: WeaviateServer, name: str, docs: list[PreparedDocument]) -> dict:
    """Write ``docs`` into a new index version of RagService bench/``name``; the write rate."""
    store = store_for(server, name, load_default_embedder())
    try:
        started = time.perf_counter()
        results = store.build_index(iter(docs), origin="corpus", switch_grace_seconds=0)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    refused = [r for r in results if r.status == "refused"]
    if refused:
        raise SystemExit(f"bench: Weaviate refused {len(refused)} documents, e.g. {refused[0].reason}")
    chunks = sum(r.chunks for r in results)
    return {"chunks": chunks, "seconds": round(seconds, 1), "chunks_per_s": round(chunks / seconds, 1)}


def _serve_env(server: WeaviateServer, name: str) -> dict[str, str]:
    return {"KUBERAG_SERVICE_NAME": name, "KUBERAG_NAMESPACE": "bench", **server.connection_env()}


def _vector_store(server: WeaviateServer) -> VectorStore:
    return VectorStore(url=server.url, grpc_port=server.grpc_port)


def _real_documents(log=print) -> list[PreparedDocument]:
    """The evaluation index's documents with their real vectors (embedded once, cached in
    ``.bench-cache/``; building it the first time takes the retrieval benchmark's hour)."""
    from bench.retrieval import open_eval_index

    engine = open_eval_index(load_default_embedder())
    try:
        docs = list(engine.export_documents())
    finally:
        engine.close()
    log(f"  real vectors: {len(docs)} documents, {sum(len(d.chunks) for d in docs)} chunks (the evaluation index)")
    return docs


def cold_queries(sizes=(10_000, 100_000), duration: float = 5.0, repeats: int = 3, log=print) -> dict:
    """Cold-query p50/p99 (``Cache-Control: no-cache``, a new question each time, through ``kuberag
    serve`` and wrk, as the HTTP benchmark measures them) on the embedded store and on Weaviate,
    over the same chunks and vectors; Weaviate's write rate for them (batches, no embedding); and
    how long each server took from start to ready on an index that already exists."""
    from bench.http import Redis, Server, measure_server

    real = _real_documents(log)
    base_chunks = sum(len(d.chunks) for d in real)
    out: dict = {"vectors": f"the evaluation index's {base_chunks} chunks with their real embeddings, copied "
                            "until the size is reached: each copy's vectors are the real ones plus Gaussian noise "
                            "(sigma 0.05, renormalised) and its text is suffixed with the copy number (synthetic "
                            "vectors of the model's dimension; embedding 10k chunks here takes hours)",
                 "embedder": load_default_embedder().name}
    with tempfile.TemporaryDirectory(prefix="kuberag-bench-stores-") as tmp, weaviate_server() as server:
        work = Path(tmp)
        redis = Redis(work)
        try:
            for n in sizes:
                copies = max(1, round(n / base_chunks))
                docs = list(multiplied(real, copies))
                label = f"{n // 1000}k"
                log(f"stores at {label} chunks: embedded index")
                index_dir = _embedded_index(docs, work / f"data-{n}")
                (work / f"e{n}").mkdir()
                replica = Server(index_dir, redis.url, work / f"e{n}", access_log="off")
                try:
                    embedded = measure_server(replica, n, duration=duration, repeats=repeats, log=log,
                                              cache_scenarios=False)["cold"]
                    embedded_ready = round(replica.ready_seconds, 2)
                finally:
                    replica.stop()
                shutil.rmtree(index_dir, ignore_errors=True)
                log(f"stores at {label} chunks: Weaviate index")
                write = _shared_index(server, f"cold{n}", docs)
                log(f"  Weaviate write: {write['chunks_per_s']} chunks/s ({write['chunks']} in {write['seconds']} s)")
                (work / f"w{n}").mkdir()
                replica = Server(work / f"w{n}" / "data", redis.url, work / f"w{n}", access_log="off",
                                 vector_store=_vector_store(server), env=_serve_env(server, f"cold{n}"))
                try:
                    shared = measure_server(replica, n, duration=duration, repeats=repeats, log=log,
                                            cache_scenarios=False)["cold"]
                    shared_ready = round(replica.ready_seconds, 2)
                finally:
                    replica.stop()
                out[label] = {"chunks": write["chunks"], "documents": len(docs), "embedded_cold": embedded,
                              "weaviate_cold": shared, "weaviate_write": write,
                              "ready_seconds": {"embedded_index_on_disk": embedded_ready, "weaviate": shared_ready}}
                log(f"  start to ready on an existing index: embedded {embedded_ready} s, Weaviate {shared_ready} s")
        finally:
            redis.stop()
    return out


def _pages(count: int) -> list[Path]:
    from bench.retrieval import CORPUS

    return sorted(CORPUS.glob("*.md"))[:count]


def ingestion(pages: int = 2, log=print) -> dict:
    """Ingestion end to end (parse, chunk, embed, write) of the same pages into the embedded store
    and into Weaviate: chunks/s. Embedding dominates both; the write alone is ``weaviate_write``
    of the cold-query section."""
    files = _pages(pages)
    embedder = load_default_embedder()
    embedder.embed(["warm up"])
    out = {"pages": [f.name for f in files]}
    with tempfile.TemporaryDirectory(prefix="kuberag-bench-ingest-") as tmp, weaviate_server() as server:
        engine = RagEngine.open(Path(tmp) / "embedded", retrieval=Retrieval(), embedder=embedder)
        started = time.perf_counter()
        results = engine.ingest_many((f.name, f.read_bytes(), None) for f in files)
        seconds = time.perf_counter() - started
        engine.close()
        chunks = sum(r.chunks for r in results)
        out["embedded"] = {"chunks": chunks, "seconds": round(seconds, 1), "chunks_per_s": round(chunks / seconds, 2)}
        store = store_for(server, "ingest", embedder)
        try:
            started = time.perf_counter()
            results = store.build_index(((f.name, f.read_bytes(), None) for f in files), origin="corpus",
                                        switch_grace_seconds=0)
            seconds = time.perf_counter() - started
        finally:
            store.close()
        chunks = sum(r.chunks for r in results)
        out["weaviate"] = {"chunks": chunks, "seconds": round(seconds, 1), "chunks_per_s": round(chunks / seconds, 2)}
    log(f"  ingestion: embedded {out['embedded']['chunks_per_s']} chunks/s, Weaviate {out['weaviate']['chunks_per_s']}"
        f" chunks/s ({chunks} chunks)")
    return out


def replica_start(pages: int = 2, log=print) -> dict:
    """Start-to-ready of a new ``kuberag serve`` replica over the same few pages: with a shared
    store (the index exists in Weaviate) against the embedded store with an empty data dir (a new
    pod's emptyDir: it embeds the corpus at start, so its time grows with the corpus while the
    shared store's does not; the cold-query section has the shared store's time at 10k/100k)."""
    from bench.http import Redis, Server

    out = {}
    with tempfile.TemporaryDirectory(prefix="kuberag-bench-start-") as tmp, weaviate_server() as server:
        work = Path(tmp)
        corpus = work / "corpus"
        corpus.mkdir()
        for f in _pages(pages):
            shutil.copy(f, corpus / f.name)
        redis = Redis(work)
        try:
            store = store_for(server, "start", load_default_embedder())
            try:
                store.sync_corpus(corpus, switch_grace_seconds=0)
                chunks = store.chunk_count
            finally:
                store.close()
            for label, kwargs in (("shared", {"vector_store": _vector_store(server), "env": _serve_env(server, "start")}),
                                  ("embedded", {"corpus": corpus})):
                (work / label).mkdir()
                replica = Server(work / label / "data", redis.url, work / label, access_log="off", **kwargs)
                replica.stop()
                out[label] = {"ready_seconds": round(replica.ready_seconds, 2), "chunks": chunks}
                log(f"  replica start-to-ready, {label} store: {out[label]['ready_seconds']} s ({chunks} chunks)")
        finally:
            redis.stop()
    return out


def run(duration: float = 5.0, repeats: int = 3, sizes=(10_000, 100_000), log=print) -> dict:
    log("shared store (Weaviate): cold queries beside the embedded store")
    result = {"cold_queries": cold_queries(sizes, duration, repeats, log)}
    log("shared store: ingestion")
    result["ingestion"] = ingestion(log=log)
    log("shared store: replica start-to-ready")
    result["replica_start"] = replica_start(log=log)
    return result


if __name__ == "__main__":
    import sys

    if "--fusion" in sys.argv:  # the hybrid weight on the evaluation set
        from bench import retrieval

        print(json.dumps(retrieval.run(weaviate=True)["weaviate_fusion"], indent=1))
    else:
        print(json.dumps(run(), indent=1))

