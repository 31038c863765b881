"""The manifests' RBAC is enough: the operator runs with exactly its ServiceAccount's token."""

from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import client

from tests.fixtures.operator_process import MANIFESTS, OperatorProcess, install_crd, ragservice, wait_for

pytestmark = pytest.mark.integration

RBAC_FILES = ("service_account.yaml", "role.yaml", "role_binding.yaml", "leader_election_role.yaml",
              "leader_election_role_binding.yaml", "ragservice_admin_role.yaml", "ragservice_editor_role.yaml",
              "ragservice_viewer_role.yaml")


def test_operator_reconciles_everything_with_only_the_manifests_rbac(control_plane, tmp_path):
    install_crd(control_plane)
    control_plane.install_servicemonitor_crd()
    with control_plane.api_client() as api:
        core = client.CoreV1Api(api)
        try:
            control_plane.create_namespace("kuberag-system")
        except client.ApiException as exc:
            assert exc.status == 409  # already there from an earlier test
        control_plane.apply([yaml.safe_load((MANIFESTS / "rbac" / f).read_text()) for f in RBAC_FILES])
        kubeconfig = control_plane.service_account_kubeconfig("kuberag-system", "kuberag-operator")
        op = OperatorProcess(kubeconfig, tmp_path / "operator.log", ["--leader-elect"]).start()
        try:
            ns = control_plane.create_namespace(f"rbac-{uuid.uuid4().hex[:8]}")
            core.create_namespaced_secret(ns, client.V1Secret(metadata=client.V1ObjectMeta(name="admin"),
                                                              string_data={"apiKey": "k"}))
            spec = {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}, "adminKeySecretRef": {"name": "admin"},
                    "monitoring": {"serviceMonitor": {"enabled": True}}, "networkPolicy": {"enabled": True}}
            custom = client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices",
                                                   ragservice("rbac", ns, spec))

            def condition(ctype):
                for c in (custom.get_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", "rbac")
                          .get("status") or {}).get("conditions") or []:
                    if c["type"] == ctype:
                        return c
                return {}

            wait_for(lambda: condition("Available").get("status") == "True", timeout=60,
                     what="Available=True under the ServiceAccount's RBAC", diagnose=op.log_tail)
            assert condition("Degraded")["status"] == "False"
            assert condition("MonitoringReady")["status"] == "True"
            kinds = {
                "HorizontalPodAutoscaler": lambda: client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("rbac", ns),
                "PodDisruptionBudget": lambda: client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("rbac", ns),
                "NetworkPolicy": lambda: client.NetworkingV1Api(api).read_namespaced_network_policy("rbac", ns),
                "ServiceMonitor": lambda: custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", ns,
                                                                              "servicemonitors", "rbac"),
            }
            for read in kinds.values():
                read()
            # Drift correction needs the watches (list/watch) to work under this role too.
            old = core.read_namespaced_config_map("rbac-config", ns).metadata.uid
            core.delete_namespaced_config_map("rbac-config", ns)

            def restored():
                try:
                    return core.read_namespaced_config_map("rbac-config", ns).metadata.uid != old
                except client.ApiException as exc:
                    assert exc.status == 404
                    return False
            wait_for(restored, timeout=15, what="the deleted ConfigMap to be restored", diagnose=op.log_tail)
            log = (tmp_path / "operator.log").read_text()
            assert "Forbidden" not in log and "forbidden" not in log, op.log_tail()
        finally:
            op.stop()
