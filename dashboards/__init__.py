"""kuberag's monitoring mixin: Grafana dashboards (grafana-foundation-sdk), Prometheus alert and
recording rules and their runbook, kept next to each other.

``make generate`` writes the committed copies (``dashboards/*.json``, ``dashboards/rules/``, the
Helm chart's dashboard files and PrometheusRule template); a unit test fails when one drifts.
"""
