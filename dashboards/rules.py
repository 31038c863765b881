"""Prometheus recording and alert rules for kuberag, with the thresholds as parameters.

``rule_groups(DEFAULTS)`` is the rule file promtool checks and tests (``dashboards/rules/``);
``rule_groups(HELM)`` puts the chart's value references in place of the thresholds, so the
chart's PrometheusRule is the same rules with the thresholds its values set.
"""

from __future__ import annotations

from dataclasses import dataclass

RUNBOOK = "https://github.com/kuberag/kuberag/blob/main/dashboards/runbook.md"
BY = "namespace, ragservice"
NOT_PROBES = 'route!~"/healthz|/readyz"'
SLO_WINDOWS = ("5m", "30m", "1h", "6h")


@dataclass(frozen=True)
class Thresholds:
    """Each field is PromQL text: a number for the rule file, a Helm value reference for the chart."""

    error_ratio: str
    slo_objective: str
    slo_threshold_seconds: str
    collapse_factor: str
    collapse_min_qps: str
    rate_limited_ratio: str
    operator_job: str


DEFAULTS = Thresholds(error_ratio="0.05", slo_objective="0.99", slo_threshold_seconds="0.25",
                      collapse_factor="0.5", collapse_min_qps="0.1", rate_limited_ratio="0.1",
                      operator_job="kuberag-operator")
_V = ".Values.prometheusRule"
HELM = Thresholds(
    error_ratio=f"{{{{ {_V}.errorRatio }}}}", slo_objective=f"{{{{ {_V}.latencySLO.objective }}}}",
    slo_threshold_seconds=f"{{{{ {_V}.latencySLO.thresholdSeconds }}}}",
    collapse_factor=f"{{{{ {_V}.cacheHitRatioCollapse.factor }}}}",
    collapse_min_qps=f"{{{{ {_V}.cacheHitRatioCollapse.minQueriesPerSecond }}}}",
    rate_limited_ratio=f"{{{{ {_V}.rateLimitedRatio }}}}",
    operator_job='{{ include "kuberag.name" . }}-operator',
)


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str,
           **labels: str) -> dict:
    return {
        "alert": name, "expr": expr, "for": for_, "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary, "description": description, "runbook_url": f"{RUNBOOK}#{name.lower()}"},
    }


def recording_rules(t: Thresholds) -> list[dict]:
    requests = f"sum by ({BY}) (rate(kuberag_http_requests_total{{{NOT_PROBES}}}[5m]))"
    rules = [
        {"record": "namespace_ragservice:kuberag_http_requests:rate5m", "expr": requests},
        {"record": "namespace_ragservice:kuberag_http_errors:ratio_rate5m",
         # A RagService without any 5xx has no 5xx series: `or` gives it a 0 ratio, not none.
         "expr": f'(\n  sum by ({BY}) (rate(kuberag_http_requests_total{{{NOT_PROBES}, status=~"5.."}}[5m]))\n'
                 f"  or\n  0 * namespace_ragservice:kuberag_http_requests:rate5m\n)\n"
                 f"/\nnamespace_ragservice:kuberag_http_requests:rate5m"},
        {"record": "namespace_ragservice:kuberag_queries:rate5m",
         "expr": f"sum by ({BY}) (rate(kuberag_cache_hits_total[5m]))\n+\n"
                 f"sum by ({BY}) (rate(kuberag_cache_misses_total[5m]))"},
        {"record": "namespace_ragservice:kuberag_cache_hit_ratio:rate5m",
         "expr": f"sum by ({BY}) (rate(kuberag_cache_hits_total[5m]))\n/\nnamespace_ragservice:kuberag_queries:rate5m"},
        {"record": "namespace_ragservice:kuberag_rate_limited:ratio_rate5m",
         "expr": f"sum by ({BY}) (rate(kuberag_rate_limited_requests_total[5m]))\n/\n"
                 f"namespace_ragservice:kuberag_http_requests:rate5m"},
    ]
    # The share of POST /query slower than the SLO's bound: the SLO's error ratio per window.
    for w in SLO_WINDOWS:
        rules.append({
            "record": f"namespace_ragservice:kuberag_query_latency_slo_errors:ratio_rate{w}",
            "expr": f'1 - (\n  sum by ({BY}) (rate(kuberag_http_request_duration_seconds_bucket{{route="/query", '
                    f'le="{t.slo_threshold_seconds}"}}[{w}]))\n  /\n'
                    f'  sum by ({BY}) (rate(kuberag_http_request_duration_seconds_count{{route="/query"}}[{w}]))\n)',
        })
    return rules


def alert_rules(t: Thresholds) -> list[dict]:
    rs = "{{ $labels.namespace }}/{{ $labels.ragservice }}"
    pod = "{{ $labels.namespace }}/{{ $labels.pod }}"
    budget = f"(1 - {t.slo_objective})"
    slo = "namespace_ragservice:kuberag_query_latency_slo_errors:ratio_rate"
    return [
        _alert("KuberagErrorRatioHigh",
               f"namespace_ragservice:kuberag_http_errors:ratio_rate5m > {t.error_ratio}", "5m", "warning",
               f"RagService {rs} answers too many requests with 5xx.",
               f"{{{{ $value | humanizePercentage }}}} of the requests of {rs} failed with a 5xx over 5 minutes "
               f"(threshold {t.error_ratio})."),
        _alert("KuberagLatencyBudgetBurn",
               f"{slo}1h > (14.4 * {budget})\nand\n{slo}5m > (14.4 * {budget})", "2m", "critical",
               f"RagService {rs} burns its latency error budget fast.",
               f"POST /query of {rs} is slower than {t.slo_threshold_seconds}s for {{{{ $value | humanizePercentage }}}} "
               f"of requests over 5 minutes and over 1 hour: at this rate (14.4x) the 30-day budget of the "
               f"{t.slo_objective} objective is gone in 2 days.",
               long_window="1h"),
        _alert("KuberagLatencyBudgetBurn",
               f"{slo}6h > (6 * {budget})\nand\n{slo}30m > (6 * {budget})", "15m", "warning",
               f"RagService {rs} burns its latency error budget.",
               f"POST /query of {rs} is slower than {t.slo_threshold_seconds}s for {{{{ $value | humanizePercentage }}}} "
               f"of requests over 30 minutes and over 6 hours: at this rate (6x) the 30-day budget of the "
               f"{t.slo_objective} objective is gone in 5 days.",
               long_window="6h"),
        _alert("KuberagCacheHitRatioCollapse",
               f"namespace_ragservice:kuberag_cache_hit_ratio:rate5m\n<\n"
               f"{t.collapse_factor} * avg_over_time(namespace_ragservice:kuberag_cache_hit_ratio:rate5m[6h] offset 15m)\n"
               f"and\nnamespace_ragservice:kuberag_queries:rate5m > {t.collapse_min_qps}", "15m", "warning",
               f"The cache hit ratio of RagService {rs} collapsed.",
               f"{rs} answers {{{{ $value | humanizePercentage }}}} of queries from its caches, less than "
               f"{t.collapse_factor} of its average over the previous 6 hours."),
        _alert("KuberagRedisSidecarDown", 'kuberag_dependency_up{dependency="redis"} == 0', "5m", "warning",
               f"The Redis sidecar (L2 cache) of pod {pod} is down.",
               f"Pod {pod} of RagService {rs} skips its L2 cache (circuit open) and answers are marked degraded."),
        _alert("KuberagRateLimiterDegraded", "kuberag_rate_limiter_degraded == 1", "5m", "warning",
               f"Pod {pod} limits per replica instead of shared.",
               f"The shared rate limiter Redis of {rs} is unavailable: pod {pod} fell back to per-replica limits, "
               f"so clients may get up to N times their limit across N pods."),
        _alert("KuberagRateLimitingSpike",
               f"namespace_ragservice:kuberag_rate_limited:ratio_rate5m > {t.rate_limited_ratio}", "10m", "info",
               f"RagService {rs} refuses many requests with 429.",
               f"{{{{ $value | humanizePercentage }}}} of the requests of {rs} were rate limited over 5 minutes "
               f"(threshold {t.rate_limited_ratio})."),
        _alert("KuberagConfigReloadFailing", "kuberag_config_last_reload_successful == 0", "5m", "warning",
               f"Pod {pod} refused its new config file.",
               f"The last config file of {rs} was refused by pod {pod}; it keeps running with the last good config. "
               f"/readyz shows the error."),
        _alert("KuberagIndexNotReady", 'kuberag_dependency_up{dependency="index"} == 0', "10m", "critical",
               f"The index of pod {pod} is not ready.",
               f"Pod {pod} of RagService {rs} has not loaded its index for 10 minutes: it is not ready and "
               f"serves no queries."),
        _alert("KuberagOperatorReconcileErrors",
               'sum by (job) (rate(kuberag_operator_reconciles_total{result="error"}[5m])) > 0', "15m", "warning",
               "The kuberag operator fails to reconcile.",
               "Reconciles of the kuberag operator ({{ $labels.job }}) have failed for 15 minutes "
               "({{ $value | humanize }}/s); RagServices may not follow their specs."),
        _alert("KuberagServiceNotAvailable", "max by (namespace, ragservice) (kuberag_operator_ragservice_available) == 0",
               "10m", "warning", f"RagService {rs} is not Available.",
               f"RagService {rs} has not been Available for 10 minutes: see `kubectl describe rag` for its conditions."),
        _alert("KuberagOperatorAbsent", f'absent(up{{job="{t.operator_job}"}} == 1)', "15m", "critical",
               "The kuberag operator is not running.",
               f"Prometheus has scraped no kuberag operator (job {t.operator_job}) for 15 minutes: "
               f"RagServices are not reconciled."),
        _alert("KuberagOperatorNoLeader", "sum by (job) (kuberag_operator_leader) < 1", "5m", "warning",
               "No kuberag operator replica holds the leader Lease.",
               "The kuberag operator replicas of {{ $labels.job }} run but none has held the leader Lease for 5 "
               "minutes: RagServices are not reconciled."),
    ]


def rule_groups(t: Thresholds) -> dict:
    return {"groups": [
        {"name": "kuberag.rules", "rules": recording_rules(t)},
        {"name": "kuberag.alerts", "rules": alert_rules(t)},
    ]}


def alert_names() -> list[str]:
    return list(dict.fromkeys(r["alert"] for r in alert_rules(DEFAULTS)))
