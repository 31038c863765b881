"""The RagService overview dashboard: traffic, latency, caches, limits, pipeline, corpus, health.

The API's own metrics carry no RagService label: the ServiceMonitor the operator creates for a
RagService relabels the pods' ``app.kubernetes.io/instance`` to ``ragservice`` and Prometheus adds
``namespace``; the operator's per-RagService series carry both labels themselves.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards.panels import NOT_PROBES, RATE, datasource_variable, query_variable, series, single

UID = "kuberag-ragservice-overview"
SEL = 'namespace="$namespace", ragservice="$ragservice"'
# No 5xx series exists until the first 5xx: `or vector(0)` shows a 0 ratio instead of no data.
ERROR_RATIO = (f'(sum(rate(kuberag_http_requests_total{{{SEL}, {NOT_PROBES}, status=~"5.."}}[{RATE}])) or vector(0)) '
               f"/ sum(rate(kuberag_http_requests_total{{{SEL}, {NOT_PROBES}}}[{RATE}]))")


def _quantiles(metric: str, labels: str, by: str = "") -> list[tuple[str, str]]:
    group = f"{by}, le" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{labels}}}[{RATE}])))",
             f"{prefix}p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]


def build() -> dashboard.Dashboard:
    lookups = (f"(sum(rate(kuberag_cache_hits_total{{{SEL}}}[{RATE}])) "
               f"+ sum(rate(kuberag_cache_misses_total{{{SEL}}}[{RATE}])))")
    d = (
        dashboard.Dashboard("kuberag / RagService overview").uid(UID).tags(["kuberag"])
        .description("One RagService: traffic, latency, caches, rate limits, pipeline stages, corpus and health.")
        .refresh("30s").time("now-1h", "now").timezone("browser")
        .with_variable(datasource_variable())
        .with_variable(query_variable("namespace", "Namespace", "label_values(kuberag_http_requests_total, namespace)"))
        .with_variable(query_variable("ragservice", "RagService",
                                      'label_values(kuberag_http_requests_total{namespace="$namespace"}, ragservice)'))
        # --- headline -------------------------------------------------------------------------
        .with_panel(single("Requests/s", "reqps", f"sum(rate(kuberag_http_requests_total{{{SEL}, {NOT_PROBES}}}[{RATE}]))"))
        .with_panel(single("Error ratio", "percentunit", ERROR_RATIO))
        .with_panel(single("p99 /query", "s",
                           f'histogram_quantile(0.99, sum by (le) (rate(kuberag_http_request_duration_seconds_bucket{{{SEL}, route="/query"}}[{RATE}])))'))
        .with_panel(single("Cache hit ratio", "percentunit",
                           f"sum(rate(kuberag_cache_hits_total{{{SEL}}}[{RATE}])) / {lookups}"))
        .with_panel(single("Ready / desired replicas", "none",
                           f"max(kuberag_operator_ragservice_ready_replicas{{{SEL}}}) "
                           f"/ max(kuberag_operator_ragservice_desired_replicas{{{SEL}}})",
                           description="From the operator: ready pods over the replicas it asked for."))
        .with_panel(single("Available", "bool_yes_no", f"max(kuberag_operator_ragservice_available{{{SEL}}})",
                           description="The RagService's Available condition, as the operator reports it."))
        # --- traffic ----------------------------------------------------------------------------
        .with_row(dashboard.Row("Traffic and latency"))
        .with_panel(series("Request rate by status", "reqps",
                           (f"sum by (status) (rate(kuberag_http_requests_total{{{SEL}, {NOT_PROBES}}}[{RATE}]))", "{{status}}")))
        .with_panel(series("Error ratio (5xx)", "percentunit", (ERROR_RATIO, "5xx ratio")))
        .with_panel(series("POST /query latency", "s",
                           *_quantiles("kuberag_http_request_duration_seconds", f'{SEL}, route="/query"'),
                           description="Quantiles from the request duration histogram."))
        .with_panel(series("Stage timings (p95)", "s",
                           (f"histogram_quantile(0.95, sum by (stage, le) (rate(kuberag_stage_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                            "{{stage}}"),
                           description="embed, l3_lookup, retrieve, generate."))
        # --- caches -----------------------------------------------------------------------------
        .with_row(dashboard.Row("Caches"))
        .with_panel(series("Cache hit ratio by level", "percentunit",
                           (f"sum by (level) (rate(kuberag_cache_hits_total{{{SEL}}}[{RATE}])) / ignoring(level) group_left() {lookups}",
                            "{{level}}"),
                           description="Hits of each level (l1 in-process, l2 Redis sidecar, l3 semantic) over all lookups."))
        .with_panel(series("Cache hits and misses", "ops",
                           (f"sum by (level) (rate(kuberag_cache_hits_total{{{SEL}}}[{RATE}]))", "hit {{level}}"),
                           (f"sum(rate(kuberag_cache_misses_total{{{SEL}}}[{RATE}]))", "miss"),
                           (f"sum(rate(kuberag_singleflight_shared_total{{{SEL}}}[{RATE}]))", "shared computation")))
        .with_panel(series("Cache entries", "short",
                           (f"sum by (level) (kuberag_cache_entries{{{SEL}}})", "{{level}}"),
                           description="Entries of the in-process caches, summed over pods."))
        .with_panel(series("Cache backend errors", "ops",
                           (f"sum by (tier, op) (rate(kuberag_cache_errors_total{{{SEL}}}[{RATE}]))", "{{tier}} {{op}}")))
        # --- rate limits ------------------------------------------------------------------------
        .with_row(dashboard.Row("Rate limiting"))
        .with_panel(series("Rate-limited requests by scope", "reqps",
                           (f"sum by (scope) (rate(kuberag_rate_limited_requests_total{{{SEL}}}[{RATE}]))", "{{scope}}")))
        .with_panel(series("Shared limiter fallback", "short",
                           (f"max(kuberag_rate_limiter_degraded{{{SEL}}})", "degraded (limits per replica)"),
                           (f"sum(rate(kuberag_rate_limiter_fallbacks_total{{{SEL}}}[{RATE}]))", "fallback decisions/s"),
                           description="1 while the shared scope's Redis fails and each pod limits on its own."))
        # --- answers ----------------------------------------------------------------------------
        .with_row(dashboard.Row("Answers"))
        .with_panel(series("Degraded answers by cause", "ops",
                           (f"sum by (cause) (rate(kuberag_degraded_answers_total{{{SEL}}}[{RATE}]))", "{{cause}}"),
                           description="Answers given with a part of the pipeline skipped: l2 (Redis sidecar down), "
                                       "limiter (shared limiter fell back), llm (extractive fallback)."))
        .with_panel(series("LLM tokens", "short",
                           (f"sum by (model, kind) (rate(kuberag_llm_tokens_total{{{SEL}}}[{RATE}]))", "{{model}} {{kind}}"),
                           description="Tokens per second by model and kind (prompt, completion)."))
        .with_panel(series("LLM estimated cost", "short",
                           (f"sum by (model) (increase(kuberag_llm_estimated_cost_total{{{SEL}}}[1h]))", "{{model}} per hour"),
                           description="From the configured prices, in their currency."))
        .with_panel(series("LLM fallbacks and retries", "ops",
                           (f"sum by (reason) (rate(kuberag_llm_fallbacks_total{{{SEL}}}[{RATE}]))", "fallback {{reason}}"),
                           (f"sum by (reason) (rate(kuberag_llm_retries_total{{{SEL}}}[{RATE}]))", "retry {{reason}}"),
                           (f"max(kuberag_llm_circuit_open{{{SEL}}})", "circuit open"),
                           description="Answers that fell back to the extractive generator, retried calls, the LLM circuit breaker."))
        .with_panel(series("Errors by kind", "ops",
                           (f"sum by (kind) (rate(kuberag_errors_total{{{SEL}}}[{RATE}]))", "{{kind}}")))
        .with_panel(series("Corpus", "short",
                           (f"max(kuberag_corpus_documents{{{SEL}}})", "documents"),
                           (f"max(kuberag_corpus_chunks{{{SEL}}})", "chunks")))
        # --- health -----------------------------------------------------------------------------
        .with_row(dashboard.Row("Health and configuration"))
        .with_panel(series("Dependency health", "short",
                           (f"min by (dependency) (kuberag_dependency_up{{{SEL}}})", "{{dependency}}"),
                           (f"min(kuberag_redis_up{{{SEL}}})", "redis sidecar (L2)"),
                           description="1 up, 0 down, for the worst pod: redis (L2 sidecar), index, limiter_redis."))
        .with_panel(series("Config reloads", "short",
                           (f"sum(increase(kuberag_config_reloads_total{{{SEL}}}[{RATE}]))", "reloads"),
                           (f"sum(increase(kuberag_config_reload_errors_total{{{SEL}}}[{RATE}]))", "refused files"),
                           (f"min(kuberag_config_last_reload_successful{{{SEL}}})", "last reload ok"),
                           description="Live config changes applied and refused (a refused file keeps the last good config)."))
        .with_panel(series("Replicas: ready vs desired", "short",
                           (f"max(kuberag_operator_ragservice_ready_replicas{{{SEL}}})", "ready"),
                           (f"max(kuberag_operator_ragservice_desired_replicas{{{SEL}}})", "desired"),
                           (f'count(kuberag_dependency_up{{{SEL}, dependency="index"}})', "pods scraped")))
        .with_panel(series("Config in use", "short",
                           (f"count by (hash) (kuberag_config_info{{{SEL}}})", "{{hash}}"),
                           description="Pods per config file hash: more than one line during a rollout or a stuck reload."))
    )
    return d
