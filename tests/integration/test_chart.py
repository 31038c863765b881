"""The Helm chart with the real ``helm`` against the real control plane.

``helm lint --strict`` and ``helm template`` -> server-side dry run for every ``ci/*-values.yaml``;
the chart renders what ``manifests/`` installs; a real ``helm install`` (CRD, RBAC, Deployment with
the values given), a bad value refused naming the key, the operator running with the installed
ServiceAccount's token reconciling the chart's sample RagService, ``helm upgrade`` and ``helm uninstall``.
(``helm test`` needs real pods: the real-node suite runs it.)
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kuberag_operator.rbac import leader_election_rules, operator_rules
from kubernetes import client

from tests.fixtures.operator_process import MANIFESTS, OperatorProcess, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/kuberag"
CI_VALUES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
CRD_NAME = "ragservices.kuberag.io"


class Helm:
    def __init__(self, control_plane, home: Path) -> None:
        control_plane.tools.require("helm")
        self.binary, self.kubeconfig = str(control_plane.tools.helm), str(control_plane.kubeconfig)
        self.env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                    "HELM_DATA_HOME": str(home / "data")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([self.binary, f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True,
                             env=self.env, timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def template(self, *args: str) -> list[dict]:
        return [d for d in yaml.safe_load_all(self("template", *args).stdout) if d]


@pytest.fixture(scope="module")
def helm(control_plane, tmp_path_factory) -> Helm:
    return Helm(control_plane, tmp_path_factory.mktemp("helm-home"))


@pytest.mark.parametrize("values", CI_VALUES)
def test_lint_strict(helm, values):
    out = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", CI_VALUES)
def test_template_passes_a_server_side_dry_run(helm, control_plane, values, tmp_path):
    control_plane.install_servicemonitor_crd()
    # The CRD the rendered sample needs, from the chart itself.
    control_plane.kubectl("apply", "--server-side", "--field-manager=chart-test", "-f", str(CHART / "crds"))
    control_plane.kubectl("create", "namespace", "kuberag-system", check=False)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(helm("template", "kuberag", str(CHART), "-n", "kuberag-system",
                             "-f", str(CHART / "ci" / values)).stdout)
    out = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=chart-test",
                                "-f", str(rendered), check=False)
    assert out.returncode == 0, out.stderr
    kinds = {line.split("/")[0].split(".")[0] for line in out.stdout.splitlines()}
    assert {"deployment", "clusterrole", "clusterrolebinding", "role", "rolebinding", "serviceaccount",
            "service", "pod"} <= kinds, out.stdout
    if values == "all-enabled-values.yaml":
        assert {"servicemonitor", "prometheusrule", "configmap", "ragservice"} <= kinds, out.stdout


def _by_kind_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_the_chart_installs_what_the_manifests_install(helm):
    """Release `kuberag` in kuberag-system with two replicas = `kubectl apply -k manifests/`."""
    chart = _by_kind_name(helm.template("kuberag", str(CHART), "-n", "kuberag-system", "--include-crds",
                                        "--skip-tests", "--set", "operator.replicas=2"))
    manifest_docs = []
    for path in ("crd/bases/kuberag.io_ragservices.yaml", "manager/manager.yaml",
                 *(f"rbac/{f}" for f in yaml.safe_load((MANIFESTS / "rbac/kustomization.yaml").read_text())["resources"])):
        manifest_docs += [d for d in yaml.safe_load_all((MANIFESTS / path).read_text()) if d]
    manifests = _by_kind_name([d for d in manifest_docs if d["kind"] != "Namespace"])  # helm's --create-namespace
    assert set(chart) == set(manifests), (sorted(set(chart) - set(manifests)), sorted(set(manifests) - set(chart)))
    for key, want in manifests.items():
        got = chart[key]
        if "rules" in want:
            assert got["rules"] == want["rules"], key
        if key[0] == "CustomResourceDefinition":
            assert got["spec"] == want["spec"]
        if key[0] in ("ClusterRoleBinding", "RoleBinding"):
            assert got["roleRef"] == want["roleRef"] and got["subjects"] == want["subjects"], key
        if key[0] == "Service":
            assert got["spec"]["ports"] == want["spec"]["ports"]
    assert chart[("ClusterRole", "kuberag-operator")]["rules"] == operator_rules()
    assert chart[("Role", "kuberag-operator-leader-election")]["rules"] == leader_election_rules()
    got = chart[("Deployment", "kuberag-operator")]["spec"]
    want = manifests[("Deployment", "kuberag-operator")]["spec"]
    assert got["replicas"] == want["replicas"] == 2
    gpod, wpod = dict(got["template"]["spec"]), dict(want["template"]["spec"])
    (gc,), (wc,) = gpod.pop("containers"), wpod.pop("containers")
    assert gpod == wpod  # service account, security context, volumes, grace period, ...
    # The same container (probes, resources, hardening, env, ports, mounts); the chart names its Lease.
    assert gc["command"][:2] == wc["command"] == ["kuberag-operator", "--leader-elect"]
    assert {k: v for k, v in gc.items() if k != "command"} == {k: v for k, v in wc.items() if k != "command"}


def test_values_change_the_rendered_objects(helm):
    docs = _by_kind_name(helm.template("my-rag", str(CHART), "-n", "ops", "--set", "prometheusRule.enabled=true",
                                       "--set", "prometheusRule.errorRatio=0.2", "--set", "image.tag=dev",
                                       "--set", "prometheusRule.latencySLO.thresholdSeconds=0.5"))
    dep = docs[("Deployment", "my-rag-kuberag-operator")]
    (ctr,) = dep["spec"]["template"]["spec"]["containers"]
    assert ctr["image"] == "ghcr.io/kuberag/kuberag:dev"
    assert "--leader-elect" not in ctr["command"] and dep["spec"]["strategy"] == {"type": "Recreate"}
    rule = docs[("PrometheusRule", "my-rag-kuberag")]
    exprs = {r.get("alert") or r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert exprs["KuberagErrorRatioHigh"].endswith("> 0.2")
    assert 'le="0.5"' in exprs["namespace_ragservice:kuberag_query_latency_slo_errors:ratio_rate1h"]
    # With the defaults, the chart's rules are exactly dashboards/rules/kuberag.rules.yaml (what promtool tests).
    default = _by_kind_name(helm.template("kuberag", str(CHART), "--set", "prometheusRule.enabled=true"))
    tested = yaml.safe_load((ROOT / "dashboards/rules/kuberag.rules.yaml").read_text())
    assert default[("PrometheusRule", "kuberag")]["spec"] == tested
    # The longest release name Helm allows (53) still gives valid names: Services, Deployments and
    # label values at most 63 characters (truncated), other names at most 253.
    long = helm.template("r" * 53, str(CHART), "--set", "dashboards.enabled=true", "--set", "samples.enabled=true")
    for d in long:
        limit = 63 if d["kind"] in ("Service", "Deployment", "Pod", "RagService") else 253
        assert len(d["metadata"]["name"]) <= limit, d["metadata"]["name"]
        assert all(len(v) <= 63 for v in d["metadata"].get("labels", {}).values()), d["metadata"]["labels"]
    sample = next(d for d in long if d["kind"] == "RagService")
    # No finalizer on RagServices: helm uninstall deletes the sample with the operator, nothing hangs.
    assert "helm.sh/resource-policy" not in (sample["metadata"].get("annotations") or {})
    assert sample["spec"]["adminKeySecretRef"] == {"name": "docs-qa-admin", "key": "apiKey"}
    assert sample["spec"]["corpus"] == {"configMap": {"name": "docs-qa-corpus"}}


@pytest.mark.parametrize(("flag", "key"), [("operator.replicaCount=2", "replicaCount"),
                                          ("serviceMonitor.enable=true", "enable"),
                                          ("operator.replicas=0", "replicas"),
                                          ("prometheusRule.latencySLO.thresholdSeconds=0.3", "thresholdSeconds")])
def test_a_bad_value_is_refused_naming_the_key(helm, flag, key):
    out = helm("install", "bad", str(CHART), "-n", "default", "--dry-run=client", "--set", flag, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert key in out.stderr, out.stderr


@pytest.fixture(scope="module")
def release(helm, control_plane):
    """`helm install` of every optional object (ci/all-enabled-values.yaml) into a fresh namespace."""
    control_plane.install_servicemonitor_crd()
    with control_plane.api_client() as api:
        ext = client.ApiextensionsV1Api(api)
        crd_existed = bool(ext.list_custom_resource_definition(field_selector=f"metadata.name={CRD_NAME}").items)
    namespace = f"chart-{uuid.uuid4().hex[:6]}"
    out = helm("install", "rel", str(CHART), "-n", namespace, "--create-namespace",
               "-f", str(CHART / "ci/all-enabled-values.yaml"), "--set", "image.tag=test")
    if not crd_existed:
        # The garbage collector learns new types only every 30 s (see install_crd).
        control_plane.restart_controller_manager()
    yield {"namespace": namespace, "crd_existed": crd_existed, "notes": out.stdout}
    helm("uninstall", "rel", "-n", namespace, check=False)
    with control_plane.api_client() as api:
        client.CoreV1Api(api).delete_namespace(namespace)


def test_install_creates_the_crd_rbac_and_operator(release, control_plane):
    ns = release["namespace"]
    with control_plane.api_client() as api:
        crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
        chart_crd = yaml.safe_load((CHART / "crds/kuberag.io_ragservices.yaml").read_text())
        assert crd.spec.versions[0].name == chart_crd["spec"]["versions"][0]["name"]
        rbac = client.RbacAuthorizationV1Api(api)
        role = rbac.read_cluster_role("rel-kuberag-operator")
        granted = {(g, r, v) for rule in role.rules for g in rule.api_groups for r in rule.resources for v in rule.verbs}
        assert granted == {(g, r, v) for rule in operator_rules() for g in rule["apiGroups"]
                           for r in rule["resources"] for v in rule["verbs"]}
        rbac.read_namespaced_role("rel-kuberag-operator-leader-election", ns)
        dep = client.AppsV1Api(api).read_namespaced_deployment("rel-kuberag-operator", ns)
        assert dep.spec.template.spec.containers[0].image == "ghcr.io/kuberag/kuberag:test"
        assert dep.spec.template.spec.service_account_name == "rel-kuberag-operator"
        client.CoreV1Api(api).read_namespaced_service("rel-kuberag-operator-metrics", ns)
        custom = client.CustomObjectsApi(api)
        for plural in ("servicemonitors", "prometheusrules"):
            custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", ns, plural,
                                                "rel-kuberag-operator" if plural == "servicemonitors" else "rel-kuberag")
        dashboards = client.CoreV1Api(api).list_namespaced_config_map(ns, label_selector="grafana_dashboard=1").items
        assert sorted(c.metadata.name for c in dashboards) == ["rel-kuberag-dashboard-operator",
                                                               "rel-kuberag-dashboard-ragservice-overview"]
        assert all(c.metadata.annotations["grafana_folder"] == "kuberag" for c in dashboards)
        board = json.loads(next(iter(dashboards[1].data.values())))
        assert board["uid"] in ("kuberag-operator", "kuberag-ragservice-overview")
    assert "create secret generic docs-qa-admin" in release["notes"]


@pytest.fixture(scope="module")
def operator(release, control_plane, tmp_path_factory):
    """The operator with the token of the ServiceAccount the chart created (the Deployment's pods
    cannot run without a kubelet: this process stands in for them, with exactly their RBAC)."""
    ns = release["namespace"]
    kubeconfig = control_plane.service_account_kubeconfig(ns, "rel-kuberag-operator")
    op = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("chart-operator") / "operator.log",
                         ["--leader-elect", "--lease-namespace", ns, "--lease-name", "rel-kuberag-operator"]).start()
    yield op
    op.stop()


def test_the_installed_service_account_reconciles_the_sample(release, operator, control_plane):
    """The operator runs with the token of the ServiceAccount the chart created: its RBAC is enough."""
    ns, op = release["namespace"], operator
    with control_plane.api_client() as api:
        custom = client.CustomObjectsApi(api)

        def condition(ctype: str) -> dict:
            rs = custom.get_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", "docs-qa")
            return next((c for c in (rs.get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})

        # The sample says which Secret it needs and stays Degraded until it exists.
        wait_for(lambda: condition("Degraded").get("reason") == "SecretMissing", timeout=60,
                 what="the sample Degraded (SecretMissing)", diagnose=op.log_tail)
        assert "docs-qa-admin" in condition("Degraded")["message"]
        client.CoreV1Api(api).create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="docs-qa-admin"), string_data={"apiKey": "k"}))
        wait_for(lambda: condition("Available").get("status") == "True", timeout=90,
                 what="the sample Available under the chart's RBAC", diagnose=op.log_tail)
        dep = client.AppsV1Api(api).read_namespaced_deployment("docs-qa", ns)
        assert dep.spec.template.spec.containers[0].image == "ghcr.io/kuberag/kuberag:test"
    log = op.log_path.read_text()
    assert "Forbidden" not in log and "forbidden" not in log, op.log_tail()


def test_upgrade_with_changed_values(release, helm, control_plane):
    ns = release["namespace"]
    helm("upgrade", "rel", str(CHART), "-n", ns, "-f", str(CHART / "ci/all-enabled-values.yaml"),
         "--set", "image.tag=test", "--set", "operator.replicas=2", "--set", "dashboards.enabled=false")
    with control_plane.api_client() as api:
        dep = client.AppsV1Api(api).read_namespaced_deployment("rel-kuberag-operator", ns)
        assert dep.spec.replicas == 2
        assert "--leader-elect" in dep.spec.template.spec.containers[0].command
        assert not client.CoreV1Api(api).list_namespaced_config_map(ns, label_selector="grafana_dashboard=1").items
    status = json.loads(helm("status", "rel", "-n", ns, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"


def test_uninstall_removes_the_release_but_keeps_the_crd(release, operator, helm, control_plane):
    # The sample first (RagServices carry no finalizer: deleting one never waits for the operator),
    # then the release, whose uninstall also removes the operator's RBAC.
    ns = release["namespace"]
    with control_plane.api_client() as api:
        custom = client.CustomObjectsApi(api)
        custom.delete_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", "docs-qa")

        def gone(read) -> bool:
            try:
                read()
            except client.ApiException as exc:
                assert exc.status == 404
                return True
            return False

        def leftovers() -> str:
            items = custom.list_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices")["items"]
            return "RagServices left: " + str([(i["metadata"]["name"], i["metadata"].get("finalizers")) for i in items])

        wait_for(lambda: gone(lambda: custom.get_namespaced_custom_object(
            "kuberag.io", "v1alpha1", ns, "ragservices", "docs-qa")), timeout=60, what="the sample deleted",
            diagnose=lambda: leftovers() + "\n" + operator.log_tail())
        out = helm("uninstall", "rel", "-n", ns)
        assert 'release "rel" uninstalled' in out.stdout
        for what, read in (
                ("the operator Deployment", lambda: client.AppsV1Api(api).read_namespaced_deployment("rel-kuberag-operator", ns)),
                ("the ClusterRole", lambda: client.RbacAuthorizationV1Api(api).read_cluster_role("rel-kuberag-operator")),
                ("the ServiceAccount", lambda: client.CoreV1Api(api).read_namespaced_service_account(
                    "rel-kuberag-operator", ns))):
            wait_for(lambda read=read: gone(read), timeout=60, what=f"{what} deleted", diagnose=leftovers)
        # Helm never deletes crds/: RagServices survive an uninstall.
        client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
