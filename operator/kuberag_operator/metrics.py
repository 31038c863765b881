"""The operator's own Prometheus metrics, served on ``--metrics-port`` by prometheus-client."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # the *_created series only add noise to every counter

RECONCILES = Counter(
    "kuberag_operator_reconciles_total",
    "RagService reconciles by result (success, secret_missing, invalid_spec, name_conflict, error).",
    ["result"],
)
for _result in ("success", "secret_missing", "invalid_spec", "error"):
    RECONCILES.labels(_result)  # from 0: the first errors show in rate(), and the error panel has data
RECONCILE_DURATION = Histogram(
    "kuberag_operator_reconcile_duration_seconds",
    "Time of one RagService reconcile (read, apply every child, write status).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MANAGED_RAGSERVICES = Gauge("kuberag_operator_managed_ragservices", "RagServices this operator reconciles.")
DRIFT_CORRECTIONS = Counter(
    "kuberag_operator_drift_corrections_total",
    "Children re-applied because they were deleted or edited by hand, by kind.",
    ["kind"],
)
LEADER = Gauge("kuberag_operator_leader", "1 while this replica holds the leader Lease and reconciles.")
API_REQUESTS = Counter(
    "kuberag_operator_api_requests_total",
    "Kubernetes API requests sent by the reconcile loop (kopf's own watches and patches excluded), "
    "by HTTP method and resource.",
    ["method", "resource"],
)
# Per RagService, from the status the operator writes (the labels are the RagService's own, so a
# ServiceMonitor for the operator needs honorLabels to keep `namespace`).
_RAGSERVICE = ["namespace", "ragservice"]
DESIRED_REPLICAS = Gauge("kuberag_operator_ragservice_desired_replicas",
                         "API replicas the operator asks for (spec.replicas, or the HPA's current count).", _RAGSERVICE)
READY_REPLICAS = Gauge("kuberag_operator_ragservice_ready_replicas",
                       "Ready API pods of the RagService's Deployment.", _RAGSERVICE)
AVAILABLE = Gauge("kuberag_operator_ragservice_available",
                  "1 while the RagService's Available condition is True, else 0.", _RAGSERVICE)


def observe_ragservice(namespace: str, name: str, *, available: bool, desired: int | None = None,
                       ready: int | None = None) -> None:
    AVAILABLE.labels(namespace, name).set(1 if available else 0)
    if desired is not None:
        DESIRED_REPLICAS.labels(namespace, name).set(desired)
    if ready is not None:
        READY_REPLICAS.labels(namespace, name).set(ready)


def forget_ragservice(namespace: str, name: str) -> None:
    """A deleted RagService leaves no series behind."""
    for gauge in (DESIRED_REPLICAS, READY_REPLICAS, AVAILABLE):
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass
