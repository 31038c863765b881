"""The local image (hack/image_local.py, no Docker) and the Dockerfile describe the same container:
entrypoint, command, user, exposed ports and kuberag's environment."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from tests.e2e.kind import KIND_CLUSTER
from tests.fixtures.realnode import REPO, build_images


def dockerfile_final_stage() -> dict:
    """ENTRYPOINT, CMD, USER, EXPOSE and ENV of the Dockerfile's last stage."""
    lines, current = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#"):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    stage: dict = {}
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stage = {"env": {}, "ports": []}
        elif instruction in ("ENTRYPOINT", "CMD"):
            stage[instruction.lower()] = json.loads(rest)
        elif instruction == "USER":
            stage["user"] = rest.strip()
        elif instruction == "EXPOSE":
            stage["ports"] += [p if "/" in p else f"{p}/tcp" for p in rest.split()]
        elif instruction == "ENV":
            stage["env"].update(dict(token.split("=", 1) for token in shlex.split(rest)))
    return stage


def image_config(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_text())
    config_digest = manifest["config"]["digest"].split(":", 1)[1]
    return json.loads((layout / "blobs" / "sha256" / config_digest).read_text())["config"]


@pytest.mark.skipif(bool(KIND_CLUSTER), reason="kind runs the Dockerfile's own image")
@pytest.mark.skipif(os.geteuid() != 0, reason="building the local image needs root (debootstrap, chroot)")
def test_local_image_matches_the_dockerfile() -> None:
    docker = dockerfile_final_stage()
    image = image_config(Path(build_images("kuberag")["kuberag"]["layout"]))
    assert image["Entrypoint"] == docker["entrypoint"] == ["kuberag"]
    assert image["Cmd"] == docker["cmd"] == ["serve"]
    assert image["User"] == docker["user"] == "65532:65532"
    assert sorted(image["ExposedPorts"]) == sorted(docker["ports"]) == ["8000/tcp", "9090/tcp"]
    env = dict(e.split("=", 1) for e in image["Env"])
    for name, value in docker["env"].items():
        if name == "PATH":  # the venv first in both; the base images' own PATH differs (Debian vs python:slim)
            assert env["PATH"].split(":")[0] == value.split(":")[0] == "/opt/kuberag/bin"
        else:
            assert env[name] == value, name
