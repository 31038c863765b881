"""`make e2e-kind`: the same end-to-end tests on a kind cluster, on a machine with Docker.

hack/e2e-kind.sh creates the cluster, builds the image with `docker build`, `kind load`s it and
runs pytest with KUBERAG_E2E_KIND (the cluster name), KUBERAG_E2E_KUBECONFIG and
KUBERAG_E2E_IMAGE / KUBERAG_E2E_REDIS_IMAGE set. The fixtures here stand in for the real node's:
nothing to start, images already loaded. Not run on the project's own (Docker-less) machines.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.fixtures.controlplane import ControlPlane, ToolPaths

KIND_CLUSTER = os.environ.get("KUBERAG_E2E_KIND", "")


class ExistingCluster(ControlPlane):
    """A cluster this process did not start: the ControlPlane client methods against its kubeconfig."""

    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.tools = ToolPaths.load()
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.log_dir = workdir
        self.node_ip = None
        self._processes = {}

    def stop(self) -> None:
        """The cluster belongs to hack/e2e-kind.sh, which deletes it."""


class KindNode:
    """The RealNode interface the tests use, on kind's node container."""

    def __init__(self) -> None:
        self.node_container = f"{KIND_CLUSTER}-control-plane"
        self.images = {role: _image(os.environ[var]) for role, var in
                       (("kuberag", "KUBERAG_E2E_IMAGE"), ("redis", "KUBERAG_E2E_REDIS_IMAGE"))}

    def tag_image(self, ref: str, new_ref: str) -> str:
        subprocess.run(["docker", "tag", ref, new_ref], check=True)
        subprocess.run(["kind", "load", "docker-image", "--name", KIND_CLUSTER, new_ref], check=True)
        return new_ref

    def kill_container(self, container_id: str, sig: signal.Signals = signal.SIGKILL) -> None:
        cid = container_id.split("://", 1)[-1]
        pid = subprocess.run(["docker", "exec", self.node_container, "crictl", "inspect", "--output", "go-template",
                              "--template", "{{.info.pid}}", cid], check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(["docker", "exec", self.node_container, "kill", f"-{sig.name.removeprefix('SIG')}", pid], check=True)

    def logs(self) -> str:
        return f"(kind: see `kind export logs --name {KIND_CLUSTER}`)"


def _image(ref: str) -> dict[str, str]:
    name, _, tag = ref.rpartition(":")
    return {"ref": ref, "name": name, "tag": tag}
