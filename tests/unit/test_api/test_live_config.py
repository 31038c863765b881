"""Live config: edits and the kubelet's atomic symlink swap are applied, bad files refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kuberag_api.live_config import LiveConfig
from kuberag_api.settings import Settings, SettingsError
from kuberag_contract.config import ConfigError

from tests.fixtures.api_app import kubelet_dir

pytestmark = pytest.mark.unit

HEADER = "apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n"


def test_atomic_symlink_swap_is_applied(tmp_path: Path):
    kubelet_dir(tmp_path, "v1", "rateLimit: {requestsPerMinute: 60, burst: 10}\n")
    live = LiveConfig.from_file(tmp_path / "config.yaml")
    seen = []
    live.subscribe(lambda old, new: seen.append((old.rate_limit.burst, new.rate_limit.burst)))
    first_hash = live.hash
    assert not live.check()
    kubelet_dir(tmp_path, "v2", "rateLimit: {requestsPerMinute: 60, burst: 3}\ncache: {l3: {threshold: 0.9}}\n")
    assert live.check()
    assert live.config.rate_limit.burst == 3 and live.config.cache.l3.threshold == 0.9
    assert seen == [(10, 3)] and live.hash != first_hash and live.reloads == 1
    assert not live.restart_needed


def test_invalid_file_keeps_the_last_good_config(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(HEADER + "rateLimit: {burst: 4}\n")
    live = LiveConfig.from_file(path)
    for bad, word in (("rateLimit: {burst: 0}\n", "burst"), ("cache: {l3: {threshold: 0}}\n", "threshold"),
                      ("rateLimits: {}\n", "rateLimits"), ("rateLimit: [\n", "YAML")):
        path.write_text(HEADER + bad)
        os.utime(path, ns=(os.stat(path).st_mtime_ns + 1_000_000,) * 2)
        assert not live.check()
        assert live.config.rate_limit.burst == 4
        assert word in live.last_error and "last good" in live.last_error
    path.write_text(HEADER + "rateLimit: {burst: 5}\n")
    assert live.check() and live.config.rate_limit.burst == 5 and live.last_error is None


def test_static_change_is_flagged_for_restart(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(HEADER)
    live = LiveConfig.from_file(path)
    path.write_text(HEADER + "retrieval: {topK: 3}\n")
    assert live.check() and live.restart_needed


def test_bad_file_at_start_is_an_error(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(HEADER + "cache: {l1: {maxEntries: -1}}\n")
    with pytest.raises(ConfigError, match="maxEntries"):
        LiveConfig.from_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        LiveConfig.from_file(tmp_path / "missing.yaml")


def test_settings_from_env():
    s = Settings.from_env({"KUBERAG_PORT": "8123", "KUBERAG_METRICS_PORT": "off", "KUBERAG_REDIS_URL": "",
                           "KUBERAG_ADMIN_API_KEY": "k", "KUBERAG_SERVICE_NAME": "docs"})
    assert s.server.port == 8123 and s.server.metrics_port is None and s.server.host == "127.0.0.1"
    assert s.redis.url is None and s.admin.api_key == "k" and s.service.name == "docs"
    assert "k" not in repr(s.admin)
    d = Settings.from_env({})
    assert d.redis.url == "redis://127.0.0.1:6379/0" and d.server.metrics_port == 9090
    with pytest.raises(SettingsError, match="KUBERAG_PORT"):
        Settings.from_env({"KUBERAG_PORT": "eighty"})
    with pytest.raises(SettingsError, match="KUBERAG_METRICS_PORT"):
        Settings.from_env({"KUBERAG_METRICS_PORT": "70000"})


def _touch(path: Path) -> None:
    os.utime(path, ns=(os.stat(path).st_mtime_ns + 1_000_000,) * 2)


FULL = HEADER + "rateLimit: {enabled: false, burst: 4}\ncorpus: {path: /srv/corpus}\n"


@pytest.mark.parametrize(("content", "word"), [
    ("", "empty"),
    ("# nothing but a comment\n", "empty"),
    ("apiVersion: kuberag.io/v1alpha1\n", "kind"),
    (HEADER + "rateLimit: {burst: 4}\n", "corpus"),  # a truncated or partial write
    (HEADER + "rateLimit: {enabled: false}\ncorpus: {path: /srv/corpus}\n", "rateLimit.burst"),
])
def test_empty_or_partial_file_is_refused_while_serving(tmp_path: Path, content, word):
    """The defect: an empty config.yaml reset every setting to its default (limits back on, the
    corpus path dropped) without an error."""
    path = tmp_path / "config.yaml"
    path.write_text(FULL)
    live = LiveConfig.from_file(path)
    path.write_text(content)
    _touch(path)
    assert not live.check()
    assert word in live.last_error and "last good" in live.last_error
    assert live.config.rate_limit.enabled is False and live.config.corpus.path == "/srv/corpus"
    assert not live.restart_needed
    # explicit values are deliberate changes, not omissions
    path.write_text(HEADER + "rateLimit: {enabled: true, burst: 4}\ncorpus: {path: null}\n")
    assert live.check() and live.config.rate_limit.enabled and live.restart_needed


def test_empty_file_at_start_is_an_error(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        LiveConfig.from_file(path)


def test_restart_flag_clears_when_the_static_part_is_back(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(FULL)
    live = LiveConfig.from_file(path)
    path.write_text(FULL.replace("/srv/corpus", "/srv/other"))
    assert live.check() and live.restart_needed
    path.write_text(FULL + "cache: {l1: {ttlSeconds: 30}}\n")  # the static part as at start, a live edit
    assert live.check() and not live.restart_needed
    assert live.config.cache.l1.ttl_seconds == 30
