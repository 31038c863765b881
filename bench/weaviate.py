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
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from kuberag_api.rag import RagEngine
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


if __name__ == "__main__":
    from bench import retrieval

    print(json.dumps(retrieval.run(weaviate=True)["weaviate_fusion"], indent=1))

