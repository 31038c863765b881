"""The benchmark's PNG: latency by cache level and size, throughput by concurrency."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt  # noqa: E402


def make(results: dict, path: Path) -> None:
    http = results["http"]
    sizes = http["sizes"]
    largest = sizes[max(sizes, key=int)]
    labels, p50, p99 = [], [], []
    for level in ("l1_hit", "l2_hit", "l3_hit"):
        m = largest.get(level)
        if m and "p50_ms" in m:
            labels.append(level.replace("_hit", " hit").upper().replace(" HIT", " hit"))
            p50.append(m["p50_ms"])
            p99.append(m["p99_ms"])
    for n, r in sorted(sizes.items(), key=lambda kv: int(kv[0])):
        labels.append(f"cold {int(n) // 1000}k chunks")
        p50.append(r["cold"]["p50_ms"])
        p99.append(r["cold"]["p99_ms"])

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(labels))
    ax1.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    ax1.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    ax1.set_yscale("log")
    ax1.set_xticks(list(x), labels, rotation=20)
    ax1.set_ylabel("latency over HTTP (ms, log scale)")
    ax1.set_title("POST /query latency, concurrency 1")
    ax1.legend()
    for i, v in enumerate(p50):
        ax1.annotate(f"{v:.2f}", (i - 0.2, v), ha="center", va="bottom", fontsize=8)

    tp = largest.get("throughput", {})
    if tp:
        cs = sorted(tp, key=lambda k: int(k[1:]))
        ax2.bar([c[1:] for c in cs], [tp[c]["rps"] for c in cs], color="tab:green")
        ax2.axhline(2500, color="grey", linestyle="--", label="target 2,500 req/s")
        for i, c in enumerate(cs):
            ax2.annotate(f"{tp[c]['rps']:.0f}", (i, tp[c]["rps"]), ha="center", va="bottom", fontsize=9)
        ax2.set_xlabel("concurrent connections")
        ax2.set_ylabel("requests/s")
        ax2.set_title("L1 hits, one worker, rate limiting + metrics on")
        ax2.legend()
    fig.suptitle(f"kuberag API on {http.get('cpus')} CPUs ({http.get('server')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
