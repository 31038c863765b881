"""Prometheus for the end-to-end suite, configured from the cluster's ServiceMonitors as
prometheus-operator configures it, and discovering its targets from the fixture's apiserver.

prometheus-operator itself cannot run here (it deploys Prometheus as a StatefulSet from a
registry image), so `servicemonitor_scrape_config` renders the scrape job it would generate for
a ServiceMonitor: the same `kubernetes_sd_configs` (role `endpoints`) and relabelling as
`generateServiceMonitorConfig` of prometheus-operator v0.85.0 (pkg/prometheus/promcfg.go, the
version whose CRDs `make tools` installs), for the fields the chart's and the operator's
ServiceMonitors use; any other field is refused by name rather than silently scraped differently.
Prometheus (Debian's, tests/fixtures/prometheus.py) runs on this host and reaches the pods
through the CNI bridge, the apiserver on the node IP, with a ServiceAccount token bound to
prometheus-operator's example ClusterRole for Prometheus.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.fixtures.controlplane import ControlPlane
from tests.fixtures.prometheus import PrometheusServer

PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_SERVICE_ACCOUNT = "prometheus"
# prometheus-operator's example/rbac/prometheus/prometheus-cluster-role.yaml (v0.85.0).
PROMETHEUS_CLUSTER_ROLE_RULES = [
    {"apiGroups": [""], "resources": ["nodes", "nodes/metrics", "services", "endpoints", "pods"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
    {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
]

_SPEC_FIELDS = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels",
                "selectorMechanism"}
_ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings", "metricRelabelings",
                    "scheme"}


class UnsupportedServiceMonitor(ValueError):
    """A ServiceMonitor field this rendering does not implement (prometheus-operator would honour it)."""


def _label(name: str) -> str:
    """prometheus-operator's sanitizeLabelName: what Prometheus's meta labels make of a label key."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _relabel_configs(configs: list[dict]) -> list[dict]:
    """generateRelabelConfig: the CRD's camelCase relabelling as Prometheus's snake_case."""
    out = []
    for c in configs:
        r: dict[str, Any] = {}
        if c.get("sourceLabels"):
            r["source_labels"] = list(c["sourceLabels"])
        if "separator" in c:
            r["separator"] = c["separator"]
        if c.get("targetLabel"):
            r["target_label"] = c["targetLabel"]
        if c.get("regex"):
            r["regex"] = c["regex"]
        if c.get("modulus"):
            r["modulus"] = c["modulus"]
        if "replacement" in c:
            r["replacement"] = c["replacement"]
        if c.get("action"):
            r["action"] = c["action"].lower()
        out.append(r)
    return out


def servicemonitor_scrape_config(sm: dict, index: int, *, api_server: str, ca_file: Path,
                                 token_file: Path) -> dict:
    """The scrape job prometheus-operator v0.85.0 generates for endpoint `index` of ServiceMonitor `sm`
    (role endpoints, one shard), with the Kubernetes API reached as `api_server`."""
    meta, spec = sm["metadata"], sm["spec"]
    if unknown := set(spec) - _SPEC_FIELDS:
        raise UnsupportedServiceMonitor(f"ServiceMonitor {meta['namespace']}/{meta['name']}: spec.{sorted(unknown)}")
    if spec.get("selectorMechanism", "RelabelConfig") != "RelabelConfig":
        raise UnsupportedServiceMonitor(f"selectorMechanism {spec['selectorMechanism']}")
    ep = spec["endpoints"][index]
    if unknown := set(ep) - _ENDPOINT_FIELDS:
        raise UnsupportedServiceMonitor(f"ServiceMonitor {meta['namespace']}/{meta['name']}: "
                                        f"spec.endpoints[{index}].{sorted(unknown)}")
    if "port" not in ep:
        raise UnsupportedServiceMonitor("an endpoint without `port` (targetPort is not rendered here)")
    nsel = spec.get("namespaceSelector", {})
    namespaces = [] if nsel.get("any") else (nsel.get("matchNames") or [meta["namespace"]])
    sd: dict[str, Any] = {"role": "endpoints"}
    if namespaces:
        sd["namespaces"] = {"names": namespaces}
    sd.update(api_server=api_server, authorization={"credentials_file": str(token_file)},
              tls_config={"ca_file": str(ca_file)})
    job: dict[str, Any] = {"job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
                           "honor_labels": bool(ep.get("honorLabels", False)), "kubernetes_sd_configs": [sd]}
    for key, prom_key in (("interval", "scrape_interval"), ("scrapeTimeout", "scrape_timeout"),
                          ("path", "metrics_path"), ("scheme", "scheme")):
        if ep.get(key):
            job[prom_key] = ep[key]

    relabel: list[dict] = [{"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}]
    selector = spec.get("selector", {})
    for key in sorted(selector.get("matchLabels", {})):
        relabel.append({"action": "keep", "regex": f"({selector['matchLabels'][key]});true", "source_labels": [
            f"__meta_kubernetes_service_label_{_label(key)}", f"__meta_kubernetes_service_labelpresent_{_label(key)}"]})
    for exp in selector.get("matchExpressions", []):
        present = f"__meta_kubernetes_service_labelpresent_{_label(exp['key'])}"
        both = [f"__meta_kubernetes_service_label_{_label(exp['key'])}", present]
        values = f"({'|'.join(exp.get('values', []))});true"
        relabel.append({
            "In": {"action": "keep", "source_labels": both, "regex": values},
            "NotIn": {"action": "drop", "source_labels": both, "regex": values},
            "Exists": {"action": "keep", "source_labels": [present], "regex": "true"},
            "DoesNotExist": {"action": "drop", "source_labels": [present], "regex": "true"},
        }[exp["operator"]])
    relabel.append({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": ep["port"]})
    target = ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"]
    relabel += [
        {"source_labels": target, "separator": ";", "regex": "Node;(.*)", "replacement": "${1}", "target_label": "node"},
        {"source_labels": target, "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
    ]
    for name in spec.get("targetLabels", []):
        relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{_label(name)}"],
                        "target_label": _label(name), "regex": "(.+)", "replacement": "${1}"})
    for name in spec.get("podTargetLabels", []):
        relabel.append({"source_labels": [f"__meta_kubernetes_pod_label_{_label(name)}"],
                        "target_label": _label(name), "regex": "(.+)", "replacement": "${1}"})
    relabel.append({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"})
    if spec.get("jobLabel"):
        relabel.append({"source_labels": [f"__meta_kubernetes_service_label_{_label(spec['jobLabel'])}"],
                        "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    relabel.append({"target_label": "endpoint", "replacement": ep["port"]})
    relabel += _relabel_configs(ep.get("relabelings", []))
    # (prometheus-operator's sharding relabels keep every target with one shard: left out.)
    job["relabel_configs"] = relabel
    if ep.get("metricRelabelings"):
        job["metric_relabel_configs"] = _relabel_configs(ep["metricRelabelings"])
    return job


def prometheus_token(plane: ControlPlane, workdir: Path) -> Path:
    """A ServiceAccount `monitoring/prometheus` with Prometheus's ClusterRole; its token in a file."""
    from kubernetes import client

    plane.kubectl("create", "namespace", PROMETHEUS_NAMESPACE, check=False)
    plane.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": PROMETHEUS_SERVICE_ACCOUNT, "namespace": PROMETHEUS_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "kuberag-e2e-prometheus"}, "rules": PROMETHEUS_CLUSTER_ROLE_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "kuberag-e2e-prometheus"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kuberag-e2e-prometheus"},
         "subjects": [{"kind": "ServiceAccount", "name": PROMETHEUS_SERVICE_ACCOUNT,
                       "namespace": PROMETHEUS_NAMESPACE}]},
    ])
    with plane.api_client() as api:
        token = client.CoreV1Api(api).create_namespaced_service_account_token(
            PROMETHEUS_SERVICE_ACCOUNT, PROMETHEUS_NAMESPACE,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)))
    path = workdir / "prometheus.token"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(token.status.token)
    path.chmod(0o600)
    return path


def cluster_prometheus(plane: ControlPlane, workdir: Path, servicemonitors: list[dict],
                       rule_files: list[Path] | None = None) -> PrometheusServer:
    """A started Prometheus scraping what `servicemonitors` select, as prometheus-operator would set it up."""
    token = prometheus_token(plane, workdir)
    jobs = [servicemonitor_scrape_config(sm, i, api_server=plane.server, ca_file=plane.ca_file, token_file=token)
            for sm in servicemonitors for i in range(len(sm["spec"]["endpoints"]))]
    return PrometheusServer(workdir / "prometheus", jobs, rule_files=rule_files).start()
