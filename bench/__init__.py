"""Benchmarks (``make bench`` = ``python -m bench``): HTTP latency and throughput, the L3 index,
retrieval quality and ingestion speed. Results: bench/results/bench.json and bench.png."""
