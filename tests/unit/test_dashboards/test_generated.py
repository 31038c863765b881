"""Every generated copy (CRD, RBAC, dashboards, rules, chart files) matches its one source."""

import pytest

from hack.generate import drifted, render_all

pytestmark = pytest.mark.unit


def test_no_generated_copy_has_drifted():
    stale = drifted()
    assert not stale, f"out of date, run `make generate`: {stale}"


def test_the_copies_include_every_shared_file():
    paths = {str(p) for p in render_all()}
    for expected in ("manifests/crd/bases/kuberag.io_ragservices.yaml", "charts/kuberag/crds/kuberag.io_ragservices.yaml",
                     "manifests/rbac/role.yaml", "manifests/rbac/leader_election_role.yaml",
                     "charts/kuberag/files/rbac/operator-rules.yaml", "dashboards/ragservice-overview.json",
                     "charts/kuberag/files/dashboards/ragservice-overview.json", "dashboards/operator.json",
                     "dashboards/rules/kuberag.rules.yaml", "charts/kuberag/templates/prometheusrule.yaml",
                     "charts/kuberag/README.md"):
        assert expected in paths


def test_generated_files_say_so():
    for path, text in render_all().items():
        if path.name != "README.md":
            assert "do not edit" in text.splitlines()[0] + text[:400], path
