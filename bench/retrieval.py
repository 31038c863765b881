"""Retrieval quality and embedding speed on the evaluation set in bench/data.

Corpus: 76 pages of the Python 3.11 documentation (PSF licence, bench/data/pydoc-LICENSE.md) and
six Spanish coreutils manual pages (GPL-3+, bench/data/manpages-es-LICENSE.md). Questions, each
labelled with the page(s) that answer it: 53 English ones paraphrased away from the pages'
wording, a Spanish translation of each (``set: translation``, committed before any model was
measured on them), 17 Spanish originals, and 6 questions about the Spanish pages in each language;
8 questions the corpus cannot answer (for the relevance floor).

The questions are split in two halves (``split_of``, fixed before the split was first used): a
*tuning* half on which ranking parameters may be chosen and a *held-out* half on which they are
only reported. The split is by page (a question goes with the first page it is labelled with), so
a question and its translation, and all questions about one page, fall in the same half.

``run()`` returns, per embedding model, recall@5 and MRR (all questions and each half, per
language, per question set) for the shipped ranking (``shipped``: ``RagEngine.ranking``, exactly
as ``retrieve`` ranks), dense, BM25 and hybrid fusions at several weights, and the question-embedding
latency of that pass. ``compare()`` runs several models in one process, side by side. ``speed()``
measures question embedding and ingestion, the models alternating over several rounds. The evaluation indexes
are kept under ``.bench-cache/`` (the engine's own persistence: unchanged pages are not re-embedded).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from kuberag_api.rag import RagEngine, load_default_embedder
from kuberag_api.rag.embedding import LOCAL_MODELS, Embedder
from kuberag_api.rag.fusion import linear_fusion, rrf_fusion
from kuberag_api.rag.generation import RELEVANCE_FLOOR
from kuberag_contract.config import Retrieval

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "pydoc"
CORPORA = (DATA / "pydoc", DATA / "manpages-es")
QUESTIONS = DATA / "questions.json"
CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"
WEIGHTS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 1.0)
K = 5


def load_questions() -> dict:
    return json.loads(QUESTIONS.read_text(encoding="utf-8"))


TUNING, HELD_OUT = "tuning", "held-out"


def _alternate(keys) -> dict[str, str]:
    """Keys in the order of their sha256, alternately tuning and held-out (deterministic, balanced,
    unrelated to any result)."""
    ordered = sorted(set(keys), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    return {k: TUNING if i % 2 == 0 else HELD_OUT for i, k in enumerate(ordered)}


def split_of(data: dict) -> tuple[list[str], list[str]]:
    """The half of every question and of every unanswerable question, in file order."""
    pages = _alternate(q["relevant"][0] for q in data["questions"])
    unanswerable = _alternate(data["unanswerable"])
    return [pages[q["relevant"][0]] for q in data["questions"]], [unanswerable[q] for q in data["unanswerable"]]


def corpus_files() -> list[Path]:
    return [f for root in CORPORA for f in sorted(root.glob("*.md"))]


def _ranked_sources(scores: np.ndarray, sources: list[str], depth: int = 50) -> list[str]:
    """Distinct sources (file names: labels do not name the corpus folder) in order of their best chunk."""
    sources = [s.rsplit("/", 1)[-1] for s in sources]
    order = np.argsort(-scores, kind="stable")[: depth * 4]
    seen: list[str] = []
    for i in order:
        if sources[i] not in seen:
            seen.append(sources[i])
            if len(seen) >= depth:
                break
    return seen


def _metrics(ranked: list[str], relevant: list[str]) -> tuple[float, float]:
    top = ranked[:K]
    recall = len(set(top) & set(relevant)) / len(relevant)
    mrr = next((1.0 / (i + 1) for i, s in enumerate(ranked) if s in relevant), 0.0)
    return recall, mrr


SHIPPED = "shipped"  # the engine's own ranking (RagEngine.ranking), exactly as retrieve() ranks


def evaluate(engine: RagEngine, weights=WEIGHTS) -> dict:
    data = load_questions()
    halves, unanswerable_halves = split_of(data)
    floor = getattr(engine.embedder, "relevance_floor", None) or RELEVANCE_FLOOR
    methods: dict[str, list[tuple[float, float, str, str, str]]] = {}
    best_dense_answerable = []
    latencies = []
    for item, half in zip(data["questions"], halves, strict=True):
        started = time.perf_counter()
        vector = engine.embedder.embed_query(item["question"])
        latencies.append(time.perf_counter() - started)
        dense, bm25, sources = engine.score_all(item["question"], vector)
        best_dense_answerable.append((float(dense.max()), half))
        runs = {"dense": dense, "bm25": bm25}
        for w in weights:
            runs[f"linear@{w}"] = linear_fusion(dense, bm25, w)
            runs[f"rrf@{w}"] = rrf_fusion(dense, bm25, w)
        ranked = {name: _ranked_sources(scores, sources) for name, scores in runs.items()}
        ranked[SHIPPED] = [s.rsplit("/", 1)[-1] for s in engine.ranked_sources(item["question"], dense, bm25, 50)]
        for name, pages in ranked.items():
            recall, mrr = _metrics(pages, item["relevant"])
            methods.setdefault(name, []).append((recall, mrr, item["lang"], item.get("set", "original"), half))
    best_dense_unanswerable = []
    for question, half in zip(data["unanswerable"], unanswerable_halves, strict=True):
        dense, _, _ = engine.score_all(question)
        best_dense_unanswerable.append((float(dense.max()), half))
    retrieve_latencies = []
    for item in data["questions"]:
        started = time.perf_counter()
        engine.retrieve(item["question"])  # embedding included, as a cold query pays it
        retrieve_latencies.append(time.perf_counter() - started)
    table = {}
    for name, rows in methods.items():
        # Keys without a prefix: every question; "tuning:" / "held-out:" one half of them.
        entry = {}
        for prefix, picked_rows in (("", rows), *((f"{h}:", [r for r in rows if r[4] == h]) for h in (TUNING, HELD_OUT))):
            entry[f"{prefix}recall@5"] = _mean(r[0] for r in picked_rows)
            entry[f"{prefix}mrr"] = _mean(r[1] for r in picked_rows)
            for lang in ("en", "es"):
                entry[f"{prefix}recall@5_{lang}"] = _mean(r[0] for r in picked_rows if r[2] == lang)
                entry[f"{prefix}mrr_{lang}"] = _mean(r[1] for r in picked_rows if r[2] == lang)
            for subset in sorted({r[3] for r in picked_rows}):
                for lang in ("en", "es"):
                    picked = [r for r in picked_rows if r[2] == lang and r[3] == subset]
                    if picked:
                        entry[f"{prefix}recall@5_{lang}_{subset}"] = _mean(r[0] for r in picked)
                        entry[f"{prefix}mrr_{lang}_{subset}"] = _mean(r[1] for r in picked)
        table[name] = entry
    answerable = [s for s, _ in best_dense_answerable]
    unanswerable = [s for s, _ in best_dense_unanswerable]
    return {
        "questions": len(data["questions"]),
        "spanish_questions": sum(1 for q in data["questions"] if q["lang"] == "es"),
        "halves": {h: halves.count(h) for h in (TUNING, HELD_OUT)},
        "methods": table,
        "query_embed_ms_p50": 1000 * statistics.median(latencies),
        "query_embed_ms_p99": 1000 * float(np.percentile(latencies, 99)),
        "retrieve_ms_p50": 1000 * statistics.median(retrieve_latencies),
        "retrieve_ms_p99": 1000 * float(np.percentile(retrieve_latencies, 99)),
        # The extractive answer says "not found" when no passage reaches the floor.
        "relevance_floor": {
            "floor": floor,
            "answerable_above": _mean(s >= floor for s in answerable),
            "unanswerable_below": _mean(s < floor for s in unanswerable),
            "held-out:answerable_above": _mean(s >= floor for s, h in best_dense_answerable if h == HELD_OUT),
            "held-out:unanswerable_below": _mean(s < floor for s, h in best_dense_unanswerable if h == HELD_OUT),
        },
        "best_dense_score": {
            "answerable_min": min(answerable),
            "answerable_p10": float(np.percentile(answerable, 10)),
            "answerable_median": statistics.median(answerable),
            "unanswerable_max": max(unanswerable),
            "unanswerable_median": statistics.median(unanswerable),
        },
    }


def _mean(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0


def ingestion_speed(embedder: Embedder, pages: int = 8) -> dict:
    """Chunks/s of a cold ingest (parse, chunk, embed, persist) of a few pages into a new index."""
    files = sorted(CORPUS.glob("*.md"))[:pages]
    embedder.embed(["warm up"])  # the first run of a session allocates its buffers
    with tempfile.TemporaryDirectory(prefix="kuberag-bench-") as tmp:
        engine = RagEngine.open(Path(tmp), retrieval=Retrieval(), embedder=embedder)
        started = time.perf_counter()
        results = engine.ingest_many((f.name, f.read_bytes(), None) for f in files)
        elapsed = time.perf_counter() - started
        engine.close()
    chunks = sum(r.chunks for r in results)
    return {"chunks": chunks, "seconds": round(elapsed, 2), "chunks_per_s": round(chunks / elapsed, 1)}


def _variants(models: tuple[str, ...]) -> dict[str, Embedder]:
    """The local models, plus the default one on a single ONNX Runtime thread (on a shared
    2-core machine a second intra-op thread may cost more in contention than it gains)."""
    embedders = {m: load_default_embedder(m) for m in models}
    if "multilingual-e5-small" in models:
        from kuberag_api.rag.e5 import OnnxE5

        embedders["multilingual-e5-small (1 thread)"] = OnnxE5(threads=1)
    return embedders


def speed(models: tuple[str, ...] = tuple(LOCAL_MODELS), runs: int = 3, pages: int = 3, log=print) -> dict:
    """Question-embedding latency (p50 over the evaluation questions) and ingestion chunks/s of
    each model, the models alternating within each of ``runs`` rounds in one process (so a ratio
    compares runs under the same load), the 1-minute load average noted before each; medians of
    the rounds. CPU time per question and chunks per CPU-second are reported too: on a shared
    machine they say what the model costs, where wall time mostly says how busy the others were."""
    questions = [q["question"] for q in load_questions()["questions"]]
    embedders = _variants(models)
    per_run: dict[str, list[dict]] = {name: [] for name in embedders}
    for round_ in range(runs):
        for name, embedder in embedders.items():
            load = round(os.getloadavg()[0], 2)
            embedder.embed_query("warm up")
            latencies = []
            cpu = time.process_time()
            for question in questions:
                started = time.perf_counter()
                embedder.embed_query(question)
                latencies.append(time.perf_counter() - started)
            # CPU time (all of the process's threads) depends far less on other tenants than wall time.
            question_cpu = (time.process_time() - cpu) / len(questions)
            cpu = time.process_time()
            ingest = ingestion_speed(embedder, pages)
            ingest_cpu = time.process_time() - cpu
            per_run[name].append({"load_1min": load, "query_embed_ms_p50": round(1000 * statistics.median(latencies), 2),
                                  "query_embed_cpu_ms": round(1000 * question_cpu, 2),
                                  "chunks_per_s": ingest["chunks_per_s"], "chunks": ingest["chunks"],
                                  "chunks_per_cpu_s": round(ingest["chunks"] / ingest_cpu, 2)})
            log(f"  round {round_ + 1}/{runs} {name}: load {load}, question p50 "
                f"{per_run[name][-1]['query_embed_ms_p50']} ms, {ingest['chunks_per_s']} chunks/s")
    out: dict = {"runs": runs, "pages": pages, "questions": len(questions), "models": {}}
    for name, rows in per_run.items():
        out["models"][name] = {
            "embedder": embedders[name].name,
            "query_embed_ms_p50": statistics.median(r["query_embed_ms_p50"] for r in rows),
            "chunks_per_s": statistics.median(r["chunks_per_s"] for r in rows),
            "query_embed_cpu_ms": statistics.median(r["query_embed_cpu_ms"] for r in rows),
            "chunks_per_cpu_s": statistics.median(r["chunks_per_cpu_s"] for r in rows),
            "per_run": rows,
        }
    base = "all-MiniLM-L6-v2"
    if base in per_run:
        # Same-round ratios to MiniLM (the previous default), then their median.
        for name, rows in per_run.items():
            if name == base:
                continue
            ratios = [{"query_embed": round(r["query_embed_ms_p50"] / b["query_embed_ms_p50"], 2),
                       "ingestion": round(r["chunks_per_s"] / b["chunks_per_s"], 2)}
                      for r, b in zip(rows, per_run[base], strict=True)]
            out["models"][name]["vs_minilm_per_run"] = ratios
            out["models"][name]["vs_minilm_median"] = {k: statistics.median(x[k] for x in ratios)
                                                       for k in ("query_embed", "ingestion")}
    return out


def open_eval_index(embedder: Embedder, cache_dir: Path = CACHE) -> RagEngine:
    index_dir = cache_dir / ("eval-" + embedder.name.replace("/", "_").replace(":", "_").replace("@", "_"))
    engine = RagEngine.open(index_dir, retrieval=Retrieval(), embedder=embedder)
    # Both corpus folders in one index (unchanged pages are skipped by their sha256).
    engine.ingest_many((f"{f.parent.name}/{f.name}", f.read_bytes(), None) for f in corpus_files())
    return engine


def _passage_sources(passages) -> list[str]:
    """Distinct sources of ranked passages, as file names (like ``_ranked_sources``)."""
    return list(dict.fromkeys(p.source.rsplit("/", 1)[-1] for p in passages))


def run(embedder: Embedder | None = None, cache_dir: Path = CACHE, weaviate: bool = False) -> dict:
    embedder = embedder or load_default_embedder()
    started = time.perf_counter()
    engine = open_eval_index(embedder, cache_dir)
    build_seconds = time.perf_counter() - started
    result = {
        "embedder": embedder.name,
        "dim": embedder.dim,
        "corpus": {"documents": engine.document_count, "chunks": engine.chunk_count,
                   "open_or_build_seconds": round(build_seconds, 2)},
        "shipped_ranking": engine.ranking.describe(),
        **evaluate(engine),
    }
    if weaviate:
        from bench.weaviate import fusion_weights

        # The shared store's hybrid ranks with Weaviate's own BM25 and fusion: its weight is
        # measured on the same questions, not carried over from the embedded store.
        result["weaviate_fusion"] = fusion_weights(engine, WEIGHTS, load_questions()["questions"], _metrics,
                                                   _passage_sources)
    result.update(result["methods"][SHIPPED])
    engine.close()
    return result


def compare(models: tuple[str, ...] = tuple(LOCAL_MODELS), log=print) -> dict:
    """Every local model on the same questions in one process (one after the other)."""
    out = {}
    for model in models:
        log(f"  {model}")
        out[model] = run(load_default_embedder(model))
    return out


QUALITY_KEYS = tuple(f"{prefix}{metric}" for prefix in (f"{HELD_OUT}:", f"{TUNING}:", "")
                     for metric in ("recall@5_en", "recall@5_es", "mrr_en", "mrr_es", "recall@5_es_translation",
                                    "mrr_es_translation", "recall@5_es_original", "recall@5_en_spanish-docs",
                                    "recall@5_es_spanish-docs"))


def summary(result: dict) -> dict:
    """The figures the README table and bench.json report for one model: the shipped ranking's
    recall@5 and MRR on the held-out half first (the honest figures), then the tuning half and all."""
    return {"embedder": result["embedder"], "ranking": result["shipped_ranking"], "halves": result["halves"],
            **{k: round(result[k], 4) for k in QUALITY_KEYS if k in result},
            "query_embed_ms_p50": round(result["query_embed_ms_p50"], 2),
            "retrieve_ms_p50": round(result["retrieve_ms_p50"], 2),
            "corpus": result["corpus"], "questions": result["questions"],
            "relevance_floor": result["relevance_floor"], "best_dense_score": result["best_dense_score"]}


if __name__ == "__main__":
    import sys

    if "--int8" in sys.argv:
        from kuberag_api.rag.embedding import OnnxMiniLM

        print(json.dumps(run(OnnxMiniLM(quantized=True)), indent=1))
    else:
        models = tuple(a for a in sys.argv[1:] if not a.startswith("-")) or tuple(LOCAL_MODELS)
        print(json.dumps(compare(models), indent=1, ensure_ascii=False))
