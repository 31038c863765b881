"""The operator <-> API interface end to end, without a kubelet.

``desired_children()`` renders a RagService; the test then does what the kubelet would: runs the
``api`` container's command with exactly its env (Secret and downward-API values filled in;
ports, the config mount and the data volume remapped to this machine), lays the ConfigMap out
as a mounted volume (``..data`` -> timestamped dir, ``config.yaml`` -> ``..data/config.yaml``)
and runs the ``redis`` container's exact command (port remapped) as the sidecar. It hits the
probes, scrapes the metrics port, then swaps the config by an atomic symlink change and sees the
new rate limit applied. No OpenAI service is involved (the embedded offline defaults answer).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from kuberag_contract import (
    CONFIG_FILENAME,
    ENV_CONFIG,
    ENV_DATA_DIR,
    ENV_HOST,
    ENV_METRICS_PORT,
    ENV_PORT,
    ENV_REDIS_URL,
)
from kuberag_contract.config import config_hash
from kuberag_operator.children import desired_children

from tests.fixtures.operator_process import free_port, ragservice, wait_for

pytestmark = pytest.mark.integration

ADMIN_KEY = "interface-test-admin-key"


def _children(spec: dict) -> dict:
    rs = ragservice("iface", "team-a", spec)
    rs["metadata"]["uid"] = "uid-iface"
    return {c["kind"] + "/" + c["metadata"]["name"]: c for c in desired_children(rs)}


def _container(children: dict, name: str) -> dict:
    return next(c for c in children["Deployment/iface"]["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _mount_config(config_dir: Path, text: str, stamp: str) -> None:
    """Write the ConfigMap's file the way the kubelet does: a new timestamped dir, then an atomic ..data swap."""
    data_dir = config_dir / f"..{stamp}"
    data_dir.mkdir()
    (data_dir / CONFIG_FILENAME).write_text(text)
    tmp_link = config_dir / "..data_tmp"
    tmp_link.symlink_to(data_dir.name)
    os.replace(tmp_link, config_dir / "..data")  # rename(2) over the old link: atomic
    if not (config_dir / CONFIG_FILENAME).is_symlink():
        (config_dir / CONFIG_FILENAME).symlink_to(f"..data/{CONFIG_FILENAME}")


def _env(container: dict, overrides: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet resolves it: downward API and Secret values filled in."""
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "fieldRef" in e["valueFrom"]:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.namespace": "team-a"}.get(path, "iface")
        elif "secretKeyRef" in e["valueFrom"]:
            env[e["name"]] = ADMIN_KEY
    env.update(overrides)
    return env


def _get(url: str, timeout: float = 5) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _query(port: int, user: str) -> tuple[int, Message]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/query", method="POST",
                                 data=json.dumps({"question": "What is kuberag?", "user_id": user}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers


def test_rendered_pod_runs_and_reloads_its_config_live(tmp_path):
    spec = {"rateLimit": {"requestsPerMinute": 600, "burst": 50}, "adminKeySecretRef": {"name": "admin"}}
    children = _children(spec)
    api, redis = _container(children, "api"), _container(children, "redis")
    config_text = children["ConfigMap/iface-config"]["data"][CONFIG_FILENAME]

    # The sidecar: the container's exact command, only the port remapped.
    redis_port = free_port()
    redis_cmd = list(redis["command"])
    redis_cmd[redis_cmd.index("--port") + 1] = str(redis_port)
    assert shutil.which(redis_cmd[0]), "redis-server is not installed (make system-deps)"
    sidecar = subprocess.Popen(redis_cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    config_dir = tmp_path / "etc-kuberag"
    config_dir.mkdir()
    _mount_config(config_dir, config_text, "2026_01_01_00_00_00.000000001")
    http_port, metrics_port = free_port(), free_port()
    env = _env(api, {
        ENV_HOST: "127.0.0.1", ENV_PORT: str(http_port), ENV_METRICS_PORT: str(metrics_port),
        ENV_CONFIG: str(config_dir / CONFIG_FILENAME), ENV_DATA_DIR: str(tmp_path / "data"),
        ENV_REDIS_URL: f"redis://127.0.0.1:{redis_port}/0",
    })
    assert set(env) >= {e["name"] for e in api["env"]}
    command = [str(Path(sys.executable).with_name(api["command"][0])), *api["command"][1:]]
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, env={**os.environ, **env}, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        def tail() -> str:
            return "----- kuberag serve log -----\n" + (tmp_path / "api.log").read_text(errors="replace")[-3000:]

        def probe(path: str, port: int = http_port) -> int:
            if server.poll() is not None:
                raise AssertionError(f"kuberag serve exited with {server.returncode}\n{tail()}")
            try:
                return _get(f"http://127.0.0.1:{port}{path}")[0] == 200
            except OSError:
                return False

        wait_for(lambda: probe(api["startupProbe"]["httpGet"]["path"]), timeout=120, what="/healthz", diagnose=tail)
        wait_for(lambda: probe(api["readinessProbe"]["httpGet"]["path"]), timeout=180, what="/readyz", diagnose=tail)
        status, text, _ = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert f'kuberag_config_info{{hash="{config_hash(config_text)}"}} 1.0' in text
        assert "kuberag_redis_up 1.0" in text  # the sidecar, reached through KUBERAG_REDIS_URL

        code, headers = _query(http_port, "alice")
        assert code == 200, (code, headers, tail())
        assert headers["RateLimit-Limit"] == "50"

        # The operator's new ConfigMap after a limits edit, delivered as the kubelet would.
        new_children = _children({**spec, "rateLimit": {"requestsPerMinute": 1, "burst": 2}})
        assert new_children["Deployment/iface"] == children["Deployment/iface"]  # no pod roll
        new_text = new_children["ConfigMap/iface-config"]["data"][CONFIG_FILENAME]
        _mount_config(config_dir, new_text, "2026_01_01_00_01_00.000000002")

        def reloaded() -> bool:
            return f'kuberag_config_info{{hash="{config_hash(new_text)}"}} 1.0' in _get(
                f"http://127.0.0.1:{metrics_port}/metrics")[1]
        wait_for(reloaded, timeout=30, what="the API to report the new config hash", diagnose=tail)
        codes = [_query(http_port, "bob") for _ in range(4)]
        assert codes[0][0] == 200 and codes[0][1]["RateLimit-Limit"] == "2", codes
        assert 429 in [c for c, _ in codes], codes
        limited = next(h for c, h in codes if c == 429)
        assert int(limited["Retry-After"]) >= 1
    finally:
        for proc in (server, sidecar):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
