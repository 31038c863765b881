"""Every plain manifest is accepted by a real API server (server-side dry run), samples included."""

from __future__ import annotations

import pytest

from tests.fixtures.operator_process import MANIFESTS, install_crd

pytestmark = pytest.mark.integration

FILES = sorted(str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


def test_every_manifest_file_is_listed():
    assert {"crd/bases/kuberag.io_ragservices.yaml", "manager/manager.yaml", "rbac/role.yaml",
            "samples/kuberag.io_v1alpha1_ragservice.yaml"} <= set(FILES)


@pytest.mark.parametrize("path", FILES)
def test_manifest_passes_a_server_side_dry_run(control_plane, path):
    install_crd(control_plane)
    control_plane.kubectl("create", "namespace", "kuberag-system", check=False)
    namespace = ["-n", "default"] if path.startswith("samples/") else []  # the others name their own
    out = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=manifest-test",
                                *namespace, "-f", str(MANIFESTS / path), check=False)
    assert out.returncode == 0, f"{path}: {out.stderr}"
    assert "serverside-applied (server dry run)" in out.stdout, out.stdout


def test_the_whole_install_applies_with_kustomize(control_plane):
    install_crd(control_plane)
    control_plane.kubectl("create", "namespace", "kuberag-system", check=False)
    out = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=manifest-test",
                                "-k", str(MANIFESTS), check=False)
    assert out.returncode == 0, out.stderr
    for obj in ("customresourcedefinition.apiextensions.k8s.io/ragservices.kuberag.io",
                "clusterrole.rbac.authorization.k8s.io/kuberag-operator", "deployment.apps/kuberag-operator",
                "serviceaccount/kuberag-operator", "role.rbac.authorization.k8s.io/kuberag-operator-leader-election"):
        assert obj in out.stdout, out.stdout


def test_kustomizations_build():
    # `kubectl apply -k manifests/rbac` and `-k manifests/samples` must name every file they ship.
    for d in ("rbac", "samples"):
        text = (MANIFESTS / d / "kustomization.yaml").read_text()
        for p in (MANIFESTS / d).glob("*.yaml"):
            if p.name != "kustomization.yaml":
                assert p.name in text, f"manifests/{d}/kustomization.yaml does not list {p.name}"
