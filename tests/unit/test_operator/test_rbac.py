"""The manifests' RBAC covers every (group, resource, verb) the operator code declares, and no more."""

from pathlib import Path

import pytest
import yaml
from kuberag_operator.handlers import KOPF_PERMISSIONS
from kuberag_operator.kube import API_PERMISSIONS
from kuberag_operator.leader import LEASE_PERMISSIONS

pytestmark = pytest.mark.unit

RBAC = Path(__file__).resolve().parents[3] / "manifests/rbac"


def _granted(path: Path) -> set[tuple[str, str, str]]:
    doc = yaml.safe_load(path.read_text())
    return {(g, r, v) for rule in doc["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_cluster_role_covers_what_the_code_uses():
    granted = _granted(RBAC / "role.yaml")
    missing = (API_PERMISSIONS | KOPF_PERMISSIONS) - granted
    assert not missing, f"manifests/rbac/role.yaml lacks {sorted(missing)}"


def test_cluster_role_grants_nothing_the_code_does_not_use():
    granted = _granted(RBAC / "role.yaml")
    extra = granted - (API_PERMISSIONS | KOPF_PERMISSIONS)
    assert not extra, f"manifests/rbac/role.yaml grants unused {sorted(extra)}"
    assert not any("*" in p for p in granted)
    assert {v for g, r, v in granted if r == "secrets"} == {"get"}


def test_leader_election_role_covers_the_lease():
    doc = yaml.safe_load((RBAC / "leader_election_role.yaml").read_text())
    assert doc["kind"] == "Role"  # namespaced: the Lease lives in the operator's namespace
    assert _granted(RBAC / "leader_election_role.yaml") == LEASE_PERMISSIONS


def test_bindings_name_the_service_account_and_roles():
    sa = yaml.safe_load((RBAC / "service_account.yaml").read_text())
    for binding, role in (("role_binding.yaml", "role.yaml"),
                          ("leader_election_role_binding.yaml", "leader_election_role.yaml")):
        b = yaml.safe_load((RBAC / binding).read_text())
        r = yaml.safe_load((RBAC / role).read_text())
        assert b["roleRef"]["name"] == r["metadata"]["name"] and b["roleRef"]["kind"] == r["kind"]
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                  "namespace": sa["metadata"]["namespace"]}]
