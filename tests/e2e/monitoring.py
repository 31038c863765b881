"""Prometheus for the end-to-end suite, configured from the cluster's ServiceMonitors as
prometheus-operator configures it, and discovering its targets from the fixture's apiserver.

prometheus-operator itself cannot run here (it deploys Prometheus as a StatefulSet from a
registry image), so `servicemonitor_scrape_config` renders the scrape job it would generate for
a ServiceMonitor: the same role-`endpoints` discovery and relabelling as
`generateServiceMonitorConfig` of prometheus-operator v0.85.0 (pkg/prometheus/promcfg.go, the
version whose CRDs `make tools` installs), for the fields the chart's and the operator's
ServiceMonitors use; any other field is refused by name rather than silently scraped differently.

Prometheus is Debian's (tests/fixtures/prometheus.py), and Debian builds it without the
Kubernetes service discovery ("removed, due to the insane amount of dependencies in their client
library", its NEWS.Debian). `EndpointsDiscovery` stands in for that one piece: an HTTP service
discovery endpoint (Prometheus's `http_sd_configs`, which Debian's build has) that answers each
poll with the target groups Prometheus's `kubernetes_sd_configs` role `endpoints` would produce
at that moment (discovery/kubernetes/endpoints.go: the same `__meta_kubernetes_*` labels, from
the live Endpoints, Services and Pods), read with a ServiceAccount token bound to
prometheus-operator's example ClusterRole for Prometheus. Everything after discovery (the
relabelling, the scrapes of the pod IPs through the node's CNI bridge, the rules) is Prometheus's own.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.fixtures.controlplane import ControlPlane
from tests.fixtures.prometheus import PrometheusServer

# How often Prometheus asks the discovery again (kubernetes_sd is watch-driven: near-instant).
DISCOVERY_REFRESH = "2s"

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


def servicemonitor_scrape_config(sm: dict, index: int, *, discovery: EndpointsDiscovery) -> dict:
    """The scrape job prometheus-operator v0.85.0 generates for endpoint `index` of ServiceMonitor `sm`
    (role endpoints, one shard), its discovery served by `discovery`."""
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
    # prometheus-operator: kubernetes_sd_configs [{role: endpoints, namespaces: {names: [...]}}]
    sd = {"url": discovery.url(namespaces), "refresh_interval": DISCOVERY_REFRESH}
    job: dict[str, Any] = {"job_name": f"serviceMonitor/{meta['namespace']}/{meta['name']}/{index}",
                           "honor_labels": bool(ep.get("honorLabels", False)), "http_sd_configs": [sd]}
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


def prometheus_kubeconfig(plane: ControlPlane, workdir: Path) -> Path:
    """A ServiceAccount `monitoring/prometheus` with Prometheus's ClusterRole; a kubeconfig with its token."""
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
    workdir.mkdir(parents=True, exist_ok=True)
    return plane.write_kubeconfig(workdir / "prometheus.kubeconfig", token=token.status.token,
                                  user=f"system:serviceaccount:{PROMETHEUS_NAMESPACE}:{PROMETHEUS_SERVICE_ACCOUNT}")


# Prometheus's discovery/kubernetes meta label names (role endpoints and the pod labels it attaches).
META = "__meta_kubernetes_"


def _object_meta_labels(prefix: str, meta: dict) -> dict[str, str]:
    """addObjectMetaLabels: <prefix>_label_*, _labelpresent_*, _annotation_*, _annotationpresent_*."""
    out = {}
    for kind, values in (("label", meta.get("labels") or {}), ("annotation", meta.get("annotations") or {})):
        for key, value in values.items():
            out[f"{META}{prefix}_{kind}_{_label(key)}"] = value
            out[f"{META}{prefix}_{kind}present_{_label(key)}"] = "true"
    return out


def _pod_labels(pod: dict) -> dict[str, str]:
    """podLabels of Prometheus's kubernetes discovery."""
    status, meta = pod.get("status", {}), pod["metadata"]
    ready = next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "unknown").lower()
    out = {f"{META}pod_name": meta["name"], f"{META}pod_ip": status.get("podIP", ""), f"{META}pod_ready": ready,
           f"{META}pod_phase": status.get("phase", ""), f"{META}pod_node_name": pod["spec"].get("nodeName", ""),
           f"{META}pod_host_ip": status.get("hostIP", ""), f"{META}pod_uid": meta.get("uid", "")}
    out.update(_object_meta_labels("pod", meta))
    if owner := next((o for o in meta.get("ownerReferences", []) if o.get("controller")), None):
        out[f"{META}pod_controller_kind"] = owner["kind"]
        out[f"{META}pod_controller_name"] = owner["name"]
    return out


def endpoints_target_groups(endpoints: list[dict], services: list[dict], pods: list[dict]) -> list[dict]:
    """What kubernetes_sd role `endpoints` discovers from these objects (buildEndpoints of
    Prometheus's discovery/kubernetes/endpoints.go), one target group per target."""
    services_by_name = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
    pods_by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
    groups = []
    for eps in endpoints:
        meta = eps["metadata"]
        common = {f"{META}namespace": meta["namespace"], f"{META}endpoints_name": meta["name"]}
        if service := services_by_name.get((meta["namespace"], meta["name"])):
            common[f"{META}service_name"] = meta["name"]
            common.update(_object_meta_labels("service", service["metadata"]))
        common.update(_object_meta_labels("endpoints", meta))
        targets: list[dict[str, str]] = []
        seen_pods: dict[str, tuple[dict, set[int]]] = {}
        for subset in eps.get("subsets") or []:
            for port in subset.get("ports") or []:
                for ready, addresses in (("true", subset.get("addresses")), ("false", subset.get("notReadyAddresses"))):
                    for addr in addresses or []:
                        target = {"__address__": f"{addr['ip']}:{port['port']}", f"{META}endpoint_port_name": port.get("name", ""),
                                  f"{META}endpoint_port_protocol": port.get("protocol", "TCP"), f"{META}endpoint_ready": ready}
                        ref = addr.get("targetRef") or {}
                        if ref:
                            target[f"{META}endpoint_address_target_kind"] = ref.get("kind", "")
                            target[f"{META}endpoint_address_target_name"] = ref.get("name", "")
                        if addr.get("nodeName"):
                            target[f"{META}endpoint_node_name"] = addr["nodeName"]
                        if addr.get("hostname"):
                            target[f"{META}endpoint_hostname"] = addr["hostname"]
                        pod = pods_by_name.get((ref.get("namespace", meta["namespace"]), ref.get("name", ""))) \
                            if ref.get("kind") == "Pod" else None
                        if pod is not None:
                            target.update(_pod_labels(pod))
                            for c in pod["spec"]["containers"]:
                                if cport := next((cp for cp in c.get("ports", []) if cp["containerPort"] == port["port"]), None):
                                    target.update({f"{META}pod_container_name": c["name"],
                                                   f"{META}pod_container_image": c.get("image", ""),
                                                   f"{META}pod_container_port_name": cport.get("name", ""),
                                                   f"{META}pod_container_port_number": str(port["port"]),
                                                   f"{META}pod_container_port_protocol": port.get("protocol", "TCP")})
                                    break
                            seen_pods.setdefault(meta["namespace"] + "/" + pod["metadata"]["name"], (pod, set()))[1].add(port["port"])
                        targets.append(target)
        # Container ports of the seen pods that no endpoint port covers: targets of their own.
        for pod, covered in seen_pods.values():
            for c in pod["spec"]["containers"]:
                for cport in c.get("ports", []):
                    if cport["containerPort"] in covered:
                        continue
                    target = {"__address__": f"{pod['status'].get('podIP', '')}:{cport['containerPort']}",
                              f"{META}pod_container_name": c["name"], f"{META}pod_container_image": c.get("image", ""),
                              f"{META}pod_container_port_name": cport.get("name", ""),
                              f"{META}pod_container_port_number": str(cport["containerPort"]),
                              f"{META}pod_container_port_protocol": cport.get("protocol", "TCP"), **_pod_labels(pod)}
                    targets.append(target)
        groups += [{"targets": [t.pop("__address__")], "labels": {**common, **t}} for t in targets]
    return groups


class EndpointsDiscovery:
    """An HTTP service discovery endpoint answering what kubernetes_sd role `endpoints` would see
    now (see the module docstring for why): GET /endpoints?namespace=A&namespace=B (none: all)."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path) -> None:
        self.plane, self.kubeconfig = plane, kubeconfig
        self.errors: list[str] = []
        discovery = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                try:
                    body = json.dumps(discovery.target_groups(query.get("namespace", []))).encode()
                    status = 200
                except Exception as exc:  # noqa: BLE001 - Prometheus keeps its last targets; the test sees it
                    discovery.errors.append(f"{type(exc).__name__}: {exc}")
                    body, status = str(exc).encode(), 500
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="endpoints-discovery", daemon=True)
        self._api = plane.api_client(kubeconfig)

    def url(self, namespaces: list[str]) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/endpoints" + ("?" + urllib.parse.urlencode({"namespace": namespaces}, doseq=True)
                                                   if namespaces else "")

    def _list(self, resource: str, namespace: str | None) -> list[dict]:
        from kubernetes import client

        core = client.CoreV1Api(self._api)
        # Raw JSON (_preload_content=False): the same dicts as kubectl's, no model round trip.
        if namespace:
            response = getattr(core, f"list_namespaced_{resource}")(namespace, _preload_content=False, _request_timeout=20)
        else:
            response = getattr(core, f"list_{resource}_for_all_namespaces")(_preload_content=False, _request_timeout=20)
        return json.loads(response.data)["items"]

    def target_groups(self, namespaces: list[str]) -> list[dict]:
        endpoints, services, pods = [], [], []
        for ns in namespaces or [None]:
            endpoints += self._list("endpoints", ns)
            services += self._list("service", ns)
            pods += self._list("pod", ns)
        return endpoints_target_groups(endpoints, services, pods)

    def start(self) -> EndpointsDiscovery:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._api.close()
        if self.errors:
            print(f"endpoints discovery errors: {self.errors[-5:]}", file=sys.stderr)


class ClusterPrometheus(PrometheusServer):
    """Prometheus with its (stand-in) Kubernetes discovery; `stop` stops both."""

    discovery: EndpointsDiscovery

    def stop(self) -> None:
        super().stop()
        self.discovery.stop()


def cluster_prometheus(plane: ControlPlane, workdir: Path, servicemonitors: list[dict],
                       rule_files: list[Path] | None = None) -> ClusterPrometheus:
    """A started Prometheus scraping what `servicemonitors` select, as prometheus-operator would set it up."""
    discovery = EndpointsDiscovery(plane, prometheus_kubeconfig(plane, workdir)).start()
    try:
        jobs = [servicemonitor_scrape_config(sm, i, discovery=discovery)
                for sm in servicemonitors for i in range(len(sm["spec"]["endpoints"]))]
        prom = ClusterPrometheus(workdir / "prometheus", jobs, rule_files=rule_files)
        prom.discovery = discovery
        return prom.start()  # type: ignore[return-value]
    except BaseException:
        discovery.stop()
        raise
