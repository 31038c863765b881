"""Plain manifests: the operator Deployment is hardened and every sample renders valid children."""

from pathlib import Path

import pytest
import yaml
from kuberag_contract.config import parse_config
from kuberag_operator.children import desired_children

pytestmark = pytest.mark.unit

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"


def test_operator_deployment_is_two_hardened_replicas_with_leader_election():
    docs = list(yaml.safe_load_all((MANIFESTS / "manager/manager.yaml").read_text()))
    dep = next(d for d in docs if d["kind"] == "Deployment")
    sa = yaml.safe_load((MANIFESTS / "rbac/service_account.yaml").read_text())
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    (ctr,) = pod["containers"]
    assert "--leader-elect" in ctr["command"]
    assert ctr["securityContext"]["readOnlyRootFilesystem"] and ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Service links would set KUBERAG_OPERATOR_METRICS_PORT=tcp://... (from the Service
    # kuberag-operator-metrics) and the operator would exit on start (found on the real node).
    assert pod["enableServiceLinks"] is False


@pytest.mark.parametrize("sample", sorted(p.name for p in (MANIFESTS / "samples").glob("kuberag.io_*.yaml")))
def test_samples_render_children_with_a_valid_config(sample):
    doc = yaml.safe_load((MANIFESTS / "samples" / sample).read_text())
    doc["metadata"].update(namespace="default", uid="u")
    children = desired_children(doc)
    cm = next(ch for ch in children if ch["kind"] == "ConfigMap")
    parse_config(cm["data"]["config.yaml"])
    assert len(list((MANIFESTS / "samples").glob("kuberag.io_*.yaml"))) >= 3
