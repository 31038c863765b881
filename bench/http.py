"""HTTP benchmark of the API: ``kuberag serve`` (one uvicorn worker) in its own process, a real
redis-server as the sidecar, and ``wrk`` (keep-alive, a Lua script for the POST bodies) as the load
generator in a second process, bounded in time.

Measured, each ``repeats`` times (the median is reported):
- latency p50/p99 at concurrency 1 for an L1 hit, an L2 hit (L1 off), an L3 semantic hit (L1 and
  L2 off; paraphrases of a cached question, so each request embeds its question and searches the
  L3 index) and a cold query (``Cache-Control: no-cache``, a different question each time), at
  1k and 10k chunks;
- throughput at concurrency 1, 8 and 32 (L1 hits over 50 cached questions).

Rate limiting and the Prometheus metrics are ON throughout: the limit is the highest the config
accepts (1,000,000 requests/minute, burst 1,000,000) for the one benchmark user, so requests are
counted and checked but not refused; any non-2xx response fails the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from kuberag_contract.config import (
    ApiConfig,
    Cache,
    Corpus,
    L1Cache,
    L2Cache,
    L3Cache,
    Providers,
    RateLimit,
    VectorStore,
    render_config,
)

from bench.corpora import build_index, index_info, sample_questions

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench-cache"



def _config(l1_entries: int = 10_000, l2: bool = True, l3: bool = True, threshold: float = 0.95,
            vector_store: VectorStore | None = None, corpus: Path | None = None) -> str:
    # Complete files, as the operator writes them: a file that leaves out a setting is refused.
    return render_config(ApiConfig(
        rate_limit=RateLimit(requests_per_minute=1_000_000, burst=1_000_000),
        cache=Cache(l1=L1Cache(max_entries=l1_entries), l2=L2Cache(enabled=l2),
                    l3=L3Cache(enabled=l3, threshold=threshold)),
        providers=Providers(vector_store=vector_store),
        corpus=Corpus(path=str(corpus) if corpus else None)))


CONFIGS = {
    "default": _config(),
    "l2_only": _config(l1_entries=0, l3=False),
    "l3_only": _config(l1_entries=0, l2=False, threshold=0.9),
}
L3_BASE = "How do I read a text file line by line?"
L3_PARAPHRASES = [
    "How can I read a text file line by line?",
    "How do I read a text file one line at a time?",
    "What is the way to read a text file line by line?",
    "How do you read a text file line by line?",
    "How should I read a text file line by line?",
    "How do I read text files line by line?",
]


# /readyz detail (the config hash the bench waits for) needs the admin key.
ADMIN = {"X-API-Key": "bench-admin-key"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench: redis-server is not installed (make system-deps)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(workdir), "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("bench: redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Server:
    """``kuberag serve`` over a prebuilt index; its config file can be swapped while it runs."""

    def __init__(self, index_dir: Path, redis_url: str, workdir: Path, access_log: str = "notable",
                 vector_store: VectorStore | None = None, corpus: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        """``vector_store``: query that shared store (its index built beforehand) instead of
        ``index_dir``; ``corpus``: index that directory at start (as a new pod does)."""
        self.port, self.metrics_port = free_port(), free_port()
        self.config = workdir / "config.yaml"
        self.configs = CONFIGS if vector_store is None and corpus is None else {
            "default": _config(vector_store=vector_store, corpus=corpus)}
        self.config.write_text(self.configs["default"])
        self.started = time.monotonic()
        env = {**os.environ, **(env or {}), "KUBERAG_PORT": str(self.port), "KUBERAG_METRICS_PORT": str(self.metrics_port),
               "KUBERAG_HOST": "127.0.0.1", "KUBERAG_REDIS_URL": redis_url, "KUBERAG_DATA_DIR": str(index_dir),
               "KUBERAG_CONFIG": str(self.config), "KUBERAG_CONFIG_POLL_SECONDS": "0.2",
               "KUBERAG_ACCESS_LOG": access_log, "KUBERAG_LOG_LEVEL": "WARNING",
               "KUBERAG_ADMIN_API_KEY": ADMIN["X-API-Key"]}
        self.log = open(workdir / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "kuberag_api.cli", "serve"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.base, timeout=120)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: kuberag serve exited: {(workdir / 'server.log').read_text()[-2000:]}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("bench: kuberag serve did not become ready in 300 s")

    def use_config(self, name: str) -> None:
        if self.config.read_text() == self.configs[name]:
            return
        before = self.client.get("/readyz", headers=ADMIN).json()["checks"]["config"]["hash"]
        self.config.write_text(self.configs[name])
        deadline = time.monotonic() + 10
        while self.client.get("/readyz", headers=ADMIN).json()["checks"]["config"]["hash"] == before:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: config {name} was not applied")
            time.sleep(0.05)

    def ask(self, question: str, **headers: str) -> dict:
        r = self.client.post("/query", json={"question": question, "user_id": "bench"}, headers=headers)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, bodies: list[str], *, connections: int, duration: float, threads: int = 1,
        headers: dict[str, str] | None = None) -> dict:
    """One wrk run; bodies are sent round-robin. Returns p50/p99 (ms), requests/s, requests."""
    lua_bodies = ",\n".join("  " + json.dumps(b) for b in bodies)
    extra = "".join(f'wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n' for k, v in (headers or {}).items())
    script = (
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n' + extra +
        "local bodies = {\n" + lua_bodies + "\n}\nlocal i = 0\n"
        "request = function()\n  i = i + 1\n  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])\nend\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency", "-s", path,
             "--timeout", "10s", url],
            capture_output=True, text=True, timeout=duration + 60,
        )
    finally:
        os.unlink(path)
    if out.returncode != 0:
        raise SystemExit(f"bench: wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    out = out.stdout
    if "Non-2xx" in out:
        raise SystemExit(f"bench: non-2xx responses during the run:\n{out}")
    dist = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, flags=re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"p50_ms": _ms(dist["50"]), "p99_ms": _ms(dist["99"]), "rps": rps, "requests": requests}


def median_of(runs: list[dict]) -> dict:
    keys = ("p50_ms", "p99_ms", "rps")
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    out["runs"] = [{k: round(r[k], 3) for k in keys} for r in runs]
    out["requests"] = sum(r["requests"] for r in runs)
    return out


def body(question: str) -> str:
    return json.dumps({"question": question, "user_id": "bench"})


def measure_server(server: Server, n_chunks: int, *, duration: float, repeats: int, log,
                   cache_scenarios: bool) -> dict:
    url = server.base + "/query"
    result: dict = {}
    questions = sample_questions(3000)

    def run(bodies, **kw) -> dict:
        return median_of([wrk(url, bodies, duration=duration, **kw) for _ in range(repeats)])

    # Cold: a different question each time and Cache-Control: no-cache (retrieval + answer).
    server.use_config("default")
    cold = run([body(q) for q in questions[200:]], connections=1, headers={"Cache-Control": "no-cache"})
    result["cold"] = cold
    log(f"  {n_chunks} chunks cold: p50 {cold['p50_ms']} ms, p99 {cold['p99_ms']} ms")
    if not cache_scenarios:
        return result

    hot = questions[:50]
    for q in hot:
        server.ask(q)
    assert server.ask(hot[0])["cache_level"] == "l1"
    result["l1_hit"] = run([body(hot[0])], connections=1)
    log(f"  L1 hit: p50 {result['l1_hit']['p50_ms']} ms, p99 {result['l1_hit']['p99_ms']} ms")
    result["throughput"] = {}
    for c in (1, 8, 32):
        result["throughput"][f"c{c}"] = run([body(q) for q in hot], connections=c)
        log(f"  L1 hits at c={c}: {result['throughput'][f'c{c}']['rps']} req/s")

    server.use_config("l2_only")
    server.ask(hot[1])
    time.sleep(0.2)  # the L2 write runs after the answer
    assert server.ask(hot[1])["cache_level"] == "l2"
    result["l2_hit"] = run([body(hot[1])], connections=1)
    log(f"  L2 hit: p50 {result['l2_hit']['p50_ms']} ms, p99 {result['l2_hit']['p99_ms']} ms")

    server.use_config("l3_only")
    server.ask(L3_BASE)
    hits = [p for p in L3_PARAPHRASES if server.ask(p)["cache_level"] == "l3"]
    if hits:
        result["l3_hit"] = run([body(p) for p in hits], connections=1)
        result["l3_hit"]["paraphrases"] = len(hits)
        log(f"  L3 semantic hit: p50 {result['l3_hit']['p50_ms']} ms, p99 {result['l3_hit']['p99_ms']} ms")
    else:
        result["l3_hit"] = {"error": "no paraphrase reached the threshold 0.9"}
    server.use_config("default")
    return result


def run(sizes=(1000, 10000), duration: float = 5.0, repeats: int = 3, log=print) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (make system-deps)")
    results: dict = {
        "server": "kuberag serve: uvicorn, one worker, uvloop + httptools",
        "client": f"wrk 1 thread, keep-alive, {duration:g} s per run, median of {repeats} runs",
        "rate_limiting": "on (perReplica, 1,000,000/min, burst 1,000,000 for the one benchmark user)",
        "metrics": "on (Prometheus exposition served on its own port)",
        "cpus": os.cpu_count(),
        "sizes": {},
    }
    with tempfile.TemporaryDirectory(prefix="kuberag-bench-") as tmp:
        tmp_path = Path(tmp)
        redis = Redis(tmp_path)
        try:
            for n in sizes:
                log(f"index of {n} chunks (built once, cached under {CACHE})")
                index_dir = build_index(CACHE, n, log=log)
                info = index_info(index_dir)
                work = tmp_path / f"srv-{n}"
                work.mkdir()
                # The server writes to its data dir (SQLite WAL); a copy keeps the cached index pristine.
                data = work / "index"
                shutil.copytree(index_dir, data)
                server = Server(data, redis.url, work)
                try:
                    size_result = measure_server(server, n, duration=duration, repeats=repeats, log=log,
                                                 cache_scenarios=(n == sizes[-1]))
                finally:
                    server.stop()
                size_result["index"] = {"chunks": info["chunks"], "documents": info["documents"],
                                        "reopen_seconds": info.get("reopen_seconds")}
                results["sizes"][str(n)] = size_result
        finally:
            redis.stop()
    return results
