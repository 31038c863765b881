"""``make dashboards-preview``: a PNG of the RagService overview's main panels from real data.

Grafana itself cannot be installed on the machines this project is built on (no package of it is
reachable), so this renders the dashboard's own panel queries with matplotlib instead: a real
``redis-server``, a real ``kuberag serve`` under the monitoring tests' scripted load (misses, hits
of each level, 429s, a Redis outage, config reloads) and a real Prometheus scraping it every
second; every line is a ``query_range`` result, no number is invented.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

PANELS = ("Request rate by status", "POST /query latency", "Cache hit ratio by level", "Cache hits and misses",
          "Rate-limited requests by scope", "Stage timings (p95)", "Dependency health", "Degraded answers by cause")
RATE = "10s"


def _legend(template: str, metric: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), template) or "value"


def main(argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tests.fixtures.monitoring import ApiProcess, scripted_load
    from tests.fixtures.prometheus import PrometheusServer
    from tests.fixtures.redis_server import RedisServer

    out = Path(argv[0] if argv else "dashboards/preview.png")
    board = json.loads((Path(__file__).parent / "ragservice-overview.json").read_text())
    with tempfile.TemporaryDirectory(prefix="kuberag-preview-") as tmp:
        work = Path(tmp)
        redis = RedisServer(work / "redis")
        redis.start()
        api = ApiProcess(work / "api", "demo", "docs-qa", redis.url).start()
        prom = None
        try:
            api.wait_ready()
            prom = PrometheusServer(work / "prometheus", [{"job_name": "kuberag-api", "static_configs": [
                {"targets": [f"127.0.0.1:{api.metrics_port}"], "labels": api.target_labels}]}]).start()
            prom.wait_for('up{job="kuberag-api"}', lambda v: v == 1, what="the API scraped")
            time.sleep(3)
            rec = scripted_load(api, redis, settle=lambda: time.sleep(5))
            time.sleep(12)
            variables = {"namespace": "demo", "ragservice": "docs-qa", "__rate_interval": RATE}
            start, end = rec.started - 5, time.time()
            fig, axes = plt.subplots(4, 2, figsize=(14, 13))
            for ax, title in zip(axes.flat, PANELS, strict=True):
                panel = next(p for p in board["panels"] if p.get("title") == title)
                for target in panel["targets"]:
                    expr = target["expr"]
                    for name, value in variables.items():
                        expr = expr.replace(f"${name}", value)
                    for series in prom.query_range(expr, start, end, step=1):
                        ts = [float(t) - start for t, _ in series["values"]]
                        ax.plot(ts, [float(v) for _, v in series["values"]],
                                label=_legend(target.get("legendFormat", ""), series["metric"]))
                ax.set_title(title, fontsize=11)
                ax.set_xlabel("seconds into the load", fontsize=8)
                unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
                ax.set_ylabel(unit, fontsize=8)
                ax.grid(alpha=0.3)
                if ax.lines:
                    ax.legend(fontsize=7, loc="upper left")
            fig.suptitle("kuberag / RagService overview: panel queries on a real Prometheus scraping kuberag serve "
                         f"({sum(rec.statuses.values())} queries: {dict(rec.levels)}, "
                         f"{rec.statuses[429]} rate limited, a Redis outage)\n"
                         f"rendered by `make dashboards-preview` with matplotlib: Grafana cannot be installed here; "
                         f"rate window {RATE}, scrape every 1 s", fontsize=10)
            fig.tight_layout(rect=(0, 0, 1, 0.95))
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=80)
            print(f"wrote {out}")
        finally:
            if prom is not None:
                prom.stop()
            api.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
