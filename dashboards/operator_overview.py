"""The operator dashboard: reconciles, their duration, managed RagServices, drift, leader, availability."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from dashboards.panels import RATE, datasource_variable, query_variable, series, single

UID = "kuberag-operator"
JOB = 'job=~"$job"'


def build() -> dashboard.Dashboard:
    return (
        dashboard.Dashboard("kuberag / Operator").uid(UID).tags(["kuberag"])
        .description("The kuberag operator: reconciles, drift corrections, leader election and RagService availability.")
        .refresh("30s").time("now-1h", "now").timezone("browser")
        .with_variable(datasource_variable())
        .with_variable(query_variable("job", "Job", "label_values(kuberag_operator_leader, job)"))
        .with_panel(single("Managed RagServices", "short", f"max(kuberag_operator_managed_ragservices{{{JOB}}})"))
        .with_panel(single("RagServices not Available", "short",
                           f"count(kuberag_operator_ragservice_available{{{JOB}}} == 0) or vector(0)"))
        .with_panel(single("Leaders", "short", f"sum(kuberag_operator_leader{{{JOB}}})",
                           description="Replicas holding the leader Lease: 1 is healthy."))
        .with_panel(single("Reconcile errors/s", "ops",
                           f'sum(rate(kuberag_operator_reconciles_total{{{JOB}, result="error"}}[{RATE}]))'))
        .with_row(dashboard.Row("Reconciles"))
        .with_panel(series("Reconciles by result", "ops",
                           (f"sum by (result) (rate(kuberag_operator_reconciles_total{{{JOB}}}[{RATE}]))", "{{result}}")))
        .with_panel(series("Reconcile duration", "s", *[
            (f"histogram_quantile({q}, sum by (le) (rate(kuberag_operator_reconcile_duration_seconds_bucket{{{JOB}}}[{RATE}])))",
             f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]))
        .with_panel(series("Drift corrections by kind", "ops",
                           (f"sum by (kind) (rate(kuberag_operator_drift_corrections_total{{{JOB}}}[{RATE}]))", "{{kind}}"),
                           description="Children re-applied because they were deleted or edited by hand."))
        .with_panel(series("Leader", "short", (f"kuberag_operator_leader{{{JOB}}}", "{{pod}}{{instance}}"),
                           description="1 for the replica holding the Lease."))
        .with_row(dashboard.Row("RagServices"))
        .with_panel(series("RagServices not Available", "short",
                           (f"kuberag_operator_ragservice_available{{{JOB}}} == 0", "{{namespace}}/{{ragservice}}"),
                           description="Each line is a RagService whose Available condition is False."))
        .with_panel(series("Ready vs desired replicas", "short",
                           (f"sum by (namespace, ragservice) (kuberag_operator_ragservice_ready_replicas{{{JOB}}})",
                            "{{namespace}}/{{ragservice}} ready"),
                           (f"sum by (namespace, ragservice) (kuberag_operator_ragservice_desired_replicas{{{JOB}}})",
                            "{{namespace}}/{{ragservice}} desired")))
    )
