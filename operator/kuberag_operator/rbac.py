"""RBAC rules built from the permissions the code declares next to its calls.

``kube.API_PERMISSIONS`` and ``handlers.KOPF_PERMISSIONS`` (the cluster-wide ClusterRole) and
``leader.LEASE_PERMISSIONS`` (the namespaced leader-election Role) are the one source: ``make
generate`` writes ``manifests/rbac/`` and the Helm chart's rule files from these functions, and a
test fails when a copy drifts. The user-facing roles aggregated into admin/edit/view are declared here.
"""

from __future__ import annotations

from collections.abc import Iterable

from kuberag_contract import GROUP, PLURAL

from kuberag_operator.handlers import KOPF_PERMISSIONS
from kuberag_operator.kube import API_PERMISSIONS
from kuberag_operator.leader import LEASE_PERMISSIONS

_VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "*")


def rules(permissions: Iterable[tuple[str, str, str]]) -> list[dict]:
    """Minimal rules granting exactly ``permissions``: resources of one group with the same verbs share a rule."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in permissions:
        verbs.setdefault((group, resource), set()).add(verb)
    merged: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), vs in sorted(verbs.items()):
        key = (group, tuple(sorted(vs, key=_VERB_ORDER.index)))
        merged.setdefault(key, []).append(resource)
    return [{"apiGroups": [group], "resources": resources, "verbs": list(vs)}
            for (group, vs), resources in merged.items()]


def operator_rules() -> list[dict]:
    """The operator's ClusterRole: RagServices, their children, Secret existence, events, the ServiceMonitor CRD."""
    return rules(API_PERMISSIONS | KOPF_PERMISSIONS)


def leader_election_rules() -> list[dict]:
    """The namespaced Role for the leader Lease."""
    return rules(LEASE_PERMISSIONS)


_EDIT = ("get", "list", "watch", "create", "update", "patch", "delete")
# Roles for the people who use RagServices, aggregated into the built-in ClusterRoles:
# name suffix -> (aggregate-to label, what it grants, rules).
USER_ROLES: dict[str, tuple[str, str, list[dict]]] = {
    "admin": ("admin", "full control of RagServices (delegated to namespace admins)", [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["*"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/scale"], "verbs": ["get", "update", "patch"]},
    ]),
    "editor": ("edit", "create and edit RagServices", [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": list(_EDIT)},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/scale"], "verbs": ["get", "update", "patch"]},
    ]),
    "viewer": ("view", "read-only access to RagServices", [
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get"]},
    ]),
}
