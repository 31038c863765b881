"""The control-plane fixture finds its binaries from paths.json, honours KUBEBUILDER_ASSETS, and
names what is missing (no processes are started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.controlplane import ControlPlaneError, ToolPaths, log_tail

pytestmark = pytest.mark.unit


def write_paths(tools: Path) -> None:
    tools.mkdir(parents=True, exist_ok=True)
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm"]
    raw = {name: str(tools / "bin" / name) for name in names}
    raw |= {"kubernetes_version": "v1.35.4", "prometheus_operator_crds": str(tools / "crds")}
    (tools / "paths.json").write_text(json.dumps(raw))


def test_missing_paths_file_says_to_run_make_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERAG_TOOLS_DIR", str(tmp_path / "none"))
    with pytest.raises(ControlPlaneError, match=r"none/paths.json does not exist: run `make tools`"):
        ToolPaths.load()


def test_paths_come_from_the_tools_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERAG_TOOLS_DIR", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    write_paths(tmp_path)
    paths = ToolPaths.load()
    assert paths.kube_apiserver == tmp_path / "bin" / "kube-apiserver"
    assert paths.kwok == tmp_path / "bin" / "kwok"
    assert paths.kubernetes_version == "v1.35.4"


def test_kubebuilder_assets_replace_only_apiserver_and_etcd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERAG_TOOLS_DIR", str(tmp_path))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", "/opt/envtest")
    write_paths(tmp_path)
    paths = ToolPaths.load()
    assert (paths.kube_apiserver, paths.etcd) == (Path("/opt/envtest/kube-apiserver"), Path("/opt/envtest/etcd"))
    assert paths.kube_controller_manager == tmp_path / "bin" / "kube-controller-manager"


def test_require_names_the_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERAG_TOOLS_DIR", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    write_paths(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "etcd").chmod(0o755)
    paths = ToolPaths.load()
    paths.require("etcd")
    with pytest.raises(ControlPlaneError, match=r"kube-scheduler binary .*/bin/kube-scheduler is missing: run `make tools`"):
        paths.require("etcd", "kube_scheduler")


def test_log_tail_keeps_the_last_lines_and_names_a_missing_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, lines=2) == "line 98\nline 99"
    assert log_tail(tmp_path / "absent.log") == f"(no log at {tmp_path / 'absent.log'})"
