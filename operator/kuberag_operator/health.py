"""The API pods' own view of their dependencies, read from each pod's metrics port.

Readiness cannot carry it: a pod whose Redis sidecar is down, or whose shared limiter fell back to
per-pod limits, rightly stays ready (it still answers, degraded). The pod already exports the
state as ``kuberag_dependency_up{dependency}`` and ``kuberag_rate_limiter_degraded`` on its metrics
port, the port meant to be scraped from other namespaces (the NetworkPolicy child admits every
namespace there); the pods get no API credentials, so they cannot report it themselves. The
operator lists a RagService's pods and reads that port on each pod IP, the way Prometheus does.
"""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from kuberag_contract import METRICS_PORT, PATH_PROM_METRICS, PORT_NAME_METRICS
from prometheus_client.parser import text_string_to_metric_families

K = TypeVar("K")
SCRAPE_TIMEOUT_SECONDS = 2.0
# Reads mostly wait (on a pod, or on the timeout of one that does not answer): many at once.
_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pod-metrics")


@dataclass(frozen=True)
class PodHealth:
    pod: str
    address: str  # ip:port that was read
    error: str | None = None  # the metrics port could not be read
    dependencies: dict[str, bool] = field(default_factory=dict)  # kuberag_dependency_up
    limiter_degraded: bool = False  # kuberag_rate_limiter_degraded


@dataclass(frozen=True)
class DependencyHealth:
    pods: tuple[PodHealth, ...]
    observed_generation: int | None = None  # the RagService generation the pods were listed for
    read_at: float = field(default_factory=time.time)


def parse_pod_metrics(pod: str, address: str, text: str) -> PodHealth:
    deps: dict[str, bool] = {}
    degraded = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kuberag_dependency_up" and "dependency" in sample.labels:
                deps[sample.labels["dependency"]] = sample.value >= 1
            elif sample.name == "kuberag_rate_limiter_degraded":
                degraded = sample.value >= 1
    if not deps:
        return PodHealth(pod, address, error="its metrics have no kuberag_dependency_up")
    return PodHealth(pod, address, dependencies=deps, limiter_degraded=degraded)


def read_pod_health(pod: str, ip: str, port: int, timeout: float = SCRAPE_TIMEOUT_SECONDS) -> PodHealth:
    address = f"{ip}:{port}"
    host = f"[{ip}]" if ":" in ip else ip
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{PATH_PROM_METRICS}", timeout=timeout) as resp:
            text = resp.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except OSError as exc:  # refused, unreachable, timed out, HTTP errors
        return PodHealth(pod, address, error=str(getattr(exc, "reason", None) or exc))
    try:
        return parse_pod_metrics(pod, address, text)
    except ValueError as exc:
        return PodHealth(pod, address, error=f"unreadable metrics: {exc}")


def _metrics_port(pod: dict) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == PORT_NAME_METRICS:
                return int(port["containerPort"])
    return METRICS_PORT


def _targets(pods: list[dict]) -> list[tuple[str, str, int]]:
    targets = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
            continue
        targets.append((meta["name"], status["podIP"], _metrics_port(pod)))
    return targets


def pods_health(pods: list[dict], generation: int | None = None) -> DependencyHealth:
    """Read every running pod's metrics port, concurrently."""
    results = list(_pool.map(lambda t: read_pod_health(*t), _targets(pods)))
    return DependencyHealth(pods=tuple(sorted(results, key=lambda p: p.pod)), observed_generation=generation)


def health_of_each(groups: dict[K, tuple[list[dict], int | None]]) -> dict[K, DependencyHealth]:
    """``pods_health`` of many RagServices (key -> (its pods, its generation)) in one concurrent
    round: one slow RagService does not hold up the others' reads."""
    jobs = [(key, t) for key, (pods, _) in groups.items() for t in _targets(pods)]
    results = list(_pool.map(lambda job: read_pod_health(*job[1]), jobs))
    by_key: dict[K, list[PodHealth]] = {key: [] for key in groups}
    for (key, _), result in zip(jobs, results, strict=True):
        by_key[key].append(result)
    return {key: DependencyHealth(pods=tuple(sorted(found, key=lambda p: p.pod)), observed_generation=groups[key][1])
            for key, found in by_key.items()}
