"""``python -m bench``: run every API benchmark, write bench/results/bench.json and bench.png."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def l3_lookup(entries: int = 100_000, dim: int = 384, lookups: int = 2000, log=print) -> dict:
    """SemanticCache.get_similar at ``entries`` cached questions (random unit vectors of the
    embedder's dimension; each lookup is a cached vector plus a little noise)."""
    from kuberag_api.cache.entry import CachedAnswer
    from kuberag_api.cache.semantic import SemanticCache

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((entries, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cache = SemanticCache(entries, 3600, 0.95)
    answer = CachedAnswer("a", (), "m", "q", 0.0)
    started = time.perf_counter()
    for i in range(entries):
        cache.put("scope", f"k{i}", answer, vectors[i], f"question {i}")
        if (i + 1) % 25_000 == 0:
            log(f"  L3 index: {i + 1}/{entries} entries")
    build = time.perf_counter() - started
    picks = rng.integers(0, entries, lookups)
    queries = vectors[picks] + 0.01 * rng.standard_normal((lookups, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    times, hits = [], 0
    for q in queries:
        t = time.perf_counter()
        hit = cache.get_similar("scope", q, "question")
        times.append((time.perf_counter() - t) * 1000)
        hits += hit is not None
    times.sort()
    return {
        "entries": entries, "dim": dim, "lookups": lookups,
        "p50_ms": round(statistics.median(times), 4), "p99_ms": round(times[int(0.99 * len(times)) - 1], 4),
        "hit_rate": round(hits / lookups, 4), "insert_ms_per_entry": round(build / entries * 1000, 4),
        "index": "hnswlib HNSW, cosine, M=16, ef_construction=64, ef=128",
    }


SECTIONS = ("http", "l3_lookup", "retrieval", "embedding_speed", "weaviate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="1k chunks only, short runs (a smoke test)")
    parser.add_argument("--skip-retrieval", action="store_true", help="skip recall@5/MRR and ingestion speed")
    parser.add_argument("--skip-http", action="store_true", help="skip the HTTP and L3 benchmarks")
    parser.add_argument("--hit-path-only", action="store_true",
                        help="only the hit path against a bare Litestar route (bench/results/hitpath.json; a full run writes it too)")
    parser.add_argument("--sizes", default="1000,10000", help="index sizes in chunks (comma separated)")
    parser.add_argument("--skip-weaviate", action="store_true",
                        help="skip the shared store (Weaviate): cold queries at 10k/100k, ingestion, replica start")
    parser.add_argument("--weaviate-only", action="store_true", help="only the shared-store benchmark")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per measurement (median reported)")
    parser.add_argument("--hit-path-rounds", type=int, default=5,
                        help="rounds of the hit-path comparison, every server once per round (median reported)")
    parser.add_argument("--speed-runs", type=int, default=3,
                        help="rounds of the embedding speed comparison (median reported)")
    args = parser.parse_args(argv)

    from bench import hitpath, http, plot

    # The hit path against its floor (issue 8's target), in every run that measures HTTP.
    if args.hit_path_only or not args.skip_http:
        print("hit path: kuberag's L1 hit against a bare Litestar route, side by side")
        hit = hitpath.run(duration=2.0 if args.quick else args.duration, rounds=1 if args.quick else args.hit_path_rounds,
                          n_chunks=100 if args.quick else 1000)
        hit["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "hitpath.json").write_text(json.dumps(hit, indent=2) + "\n")
        print(f"wrote {RESULTS / 'hitpath.json'}")
        if args.hit_path_only:
            return 0

    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                     "python": platform.python_version(), "machine": platform.machine(),
                     "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        sizes = (1000,) if args.quick else tuple(int(x) for x in args.sizes.split(","))
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    duration = 2.0 if args.quick else args.duration
    repeats = 1 if args.quick else args.repeats
    if args.weaviate_only:
        args.skip_http = args.skip_retrieval = True
    if not args.skip_http:
        print("HTTP benchmark")
        results["http"] = http.run(sizes=sizes, duration=duration, repeats=repeats)
        print("L3 semantic cache lookups")
        results["l3_lookup"] = l3_lookup(10_000 if args.quick else 100_000)
        print(f"  p50 {results['l3_lookup']['p50_ms']} ms at {results['l3_lookup']['entries']} entries")
    if not args.skip_retrieval:
        from bench import retrieval

        print("retrieval quality, each local embedding model in this run (held-out half of the questions)")
        compared = retrieval.compare()
        results["retrieval"] = {model: retrieval.summary(r) for model, r in compared.items()}
        for model, r in results["retrieval"].items():
            print(f"  {model}: held-out recall@5 en {r['held-out:recall@5_en']} es {r['held-out:recall@5_es']}, "
                  f"MRR en {r['held-out:mrr_en']} es {r['held-out:mrr_es']}")
        print(f"embedding speed, the models alternating, {args.speed_runs} rounds")
        results["embedding_speed"] = retrieval.speed(runs=1 if args.quick else args.speed_runs)
        for model, r in results["embedding_speed"]["models"].items():
            print(f"  {model}: question embed p50 {r['query_embed_ms_p50']} ms ({r['query_embed_cpu_ms']} CPU-ms), "
                  f"ingestion {r['chunks_per_s']} chunks/s ({r['chunks_per_cpu_s']} per CPU-second) "
                  f"(medians of {results['embedding_speed']['runs']} rounds)")
    if not args.skip_weaviate:
        from bench import weaviate

        started_load = [round(x, 2) for x in os.getloadavg()]
        results["weaviate"] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                               "load_average_at_start": started_load,
                               **weaviate.run(duration=duration, repeats=repeats,
                                              sizes=(10_000,) if args.quick else (10_000, 100_000))}
        results["weaviate"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = RESULTS / "bench.json"
    if out.exists():
        # A partial run updates its sections and keeps the others from the last run, named as such.
        previous = json.loads(out.read_text())
        kept = {k: previous[k] for k in SECTIONS if k in previous and k not in results}
        if kept:
            results = {**results, **kept, "sections_from_an_earlier_run": sorted(kept)}
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    if "http" in results:
        plot.make(results, RESULTS / "bench.png")
    print(f"wrote {out} and {RESULTS / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
