"""Process settings: read once from the environment at start, then injected (app state / DI).

Handlers never read ``os.environ``. The live part of the configuration (rate limits, cache sizes,
TTLs, threshold) comes from the config file instead, see ``live_config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import kuberag_contract as contract


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _opt(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    raw = env.get(name)
    if raw is None:
        return default
    raw = raw.strip()
    return raw or None


def _access_log(raw: str) -> str:
    value = raw.strip().lower() or "notable"
    aliases = {"1": "all", "true": "all", "yes": "all", "on": "all", "0": "off", "false": "off", "no": "off"}
    value = aliases.get(value, value)
    if value not in ("all", "notable", "off"):
        raise SettingsError(f"KUBERAG_ACCESS_LOG must be all, notable or off, got {raw!r}")
    return value


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use; the message names it."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = contract.DEFAULT_HOST_LOCAL
    """KUBERAG_HOST: address the HTTP server binds (0.0.0.0 in a pod)."""
    port: int = contract.HTTP_PORT
    """KUBERAG_PORT: public HTTP port."""
    metrics_port: int | None = contract.METRICS_PORT
    """KUBERAG_METRICS_PORT: Prometheus exposition port; 0 picks a free port; "off" disables it."""
    log_level: str = "INFO"
    """KUBERAG_LOG_LEVEL."""
    access_log: str = "notable"
    """KUBERAG_ACCESS_LOG: ``all`` (a JSON line per request), ``notable`` (errors and requests slower
    than 250 ms; computed answers are logged by the query service anyway) or ``off``. ``notable``
    by default: a line per cache hit costs about as much as the hit itself (measured)."""
    shutdown_seconds: float = contract.SHUTDOWN_SECONDS
    """KUBERAG_SHUTDOWN_SECONDS: after SIGTERM, how long requests in flight may go on (see
    ``shutdown``); uvicorn's own timeout is 5 s longer. Keep it under the pod's grace period."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerSettings:
        metrics_raw = env.get(contract.ENV_METRICS_PORT, "").strip().lower()
        metrics_port: int | None
        if metrics_raw in ("off", "none", "disabled", "-1"):
            metrics_port = None
        else:
            metrics_port = _int(env, contract.ENV_METRICS_PORT, contract.METRICS_PORT)
        port = _int(env, contract.ENV_PORT, contract.HTTP_PORT)
        for name, value in ((contract.ENV_PORT, port), (contract.ENV_METRICS_PORT, metrics_port)):
            if value is not None and not 0 <= value <= 65535:
                raise SettingsError(f"{name} must be a port number 0..65535, got {value}")
        return cls(
            host=_opt(env, contract.ENV_HOST, contract.DEFAULT_HOST_LOCAL) or contract.DEFAULT_HOST_LOCAL,
            port=port,
            metrics_port=metrics_port,
            log_level=(_opt(env, "KUBERAG_LOG_LEVEL", "INFO") or "INFO").upper(),
            access_log=_access_log(env.get("KUBERAG_ACCESS_LOG", "notable")),
            shutdown_seconds=max(0.0, _float(env, "KUBERAG_SHUTDOWN_SECONDS", contract.SHUTDOWN_SECONDS)),
        )


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = contract.DEFAULT_REDIS_URL
    """KUBERAG_REDIS_URL: the L2 cache (the pod's Redis sidecar); empty disables L2."""
    limiter_url: str | None = None
    """KUBERAG_LIMITER_REDIS_URL: shared Redis of the rate limiter (``shared`` scope only)."""
    socket_timeout: float = 0.05
    """KUBERAG_REDIS_TIMEOUT_SECONDS: connect/read timeout; a hung Redis costs at most this."""
    breaker_failures: int = 3
    """KUBERAG_REDIS_BREAKER_FAILURES: consecutive failures that open the circuit breaker."""
    breaker_reset_seconds: float = 2.0
    """KUBERAG_REDIS_BREAKER_RESET_SECONDS: how long the breaker stays open before one probe."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RedisSettings:
        return cls(
            url=_opt(env, contract.ENV_REDIS_URL, contract.DEFAULT_REDIS_URL),
            limiter_url=_opt(env, contract.ENV_LIMITER_REDIS_URL),
            socket_timeout=_float(env, "KUBERAG_REDIS_TIMEOUT_SECONDS", 0.05),
            breaker_failures=max(1, _int(env, "KUBERAG_REDIS_BREAKER_FAILURES", 3)),
            breaker_reset_seconds=_float(env, "KUBERAG_REDIS_BREAKER_RESET_SECONDS", 2.0),
        )


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path = Path(contract.DATA_DIR)
    """KUBERAG_DATA_DIR: writable directory of the embedded index."""
    config_path: Path | None = None
    """KUBERAG_CONFIG: the config file; unset uses /etc/kuberag/config.yaml when it exists, else defaults."""
    config_poll_seconds: float = 1.0
    """KUBERAG_CONFIG_POLL_SECONDS: how often the config and client-keys files are checked for a change."""
    client_keys_path: Path | None = None
    """KUBERAG_CLIENT_KEYS: the client-keys file (``kind: ClientKeys``); unset uses
    /etc/kuberag-clients/clients.yaml when it exists, else no client keys (every caller by IP)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StorageSettings:
        config = _opt(env, contract.ENV_CONFIG)
        if config is None and Path(contract.CONFIG_PATH).exists():
            config = contract.CONFIG_PATH
        keys = _opt(env, contract.ENV_CLIENT_KEYS)
        if keys is None and Path(contract.CLIENT_KEYS_PATH).exists():
            keys = contract.CLIENT_KEYS_PATH
        return cls(
            data_dir=Path(_opt(env, contract.ENV_DATA_DIR, contract.DATA_DIR) or contract.DATA_DIR),
            config_path=Path(config) if config else None,
            config_poll_seconds=_float(env, "KUBERAG_CONFIG_POLL_SECONDS", 1.0),
            client_keys_path=Path(keys) if keys else None,
        )


@dataclass(frozen=True)
class AdminSettings:
    api_key: str | None = field(default=None, repr=False)
    """KUBERAG_ADMIN_API_KEY: the X-API-Key of admin routes; unset refuses every admin request."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AdminSettings:
        return cls(api_key=_opt(env, contract.ENV_ADMIN_API_KEY))


@dataclass(frozen=True)
class ServiceSettings:
    name: str = "local"
    """KUBERAG_SERVICE_NAME: the RagService name (downward API); part of every cache key prefix."""
    namespace: str = "default"
    """KUBERAG_NAMESPACE: the RagService namespace (downward API)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceSettings:
        return cls(
            name=_opt(env, contract.ENV_SERVICE_NAME, "local") or "local",
            namespace=_opt(env, contract.ENV_NAMESPACE, "default") or "default",
        )


@dataclass(frozen=True)
class ProviderKeys:
    llm_api_key: str | None = field(default=None, repr=False)
    """KUBERAG_LLM_API_KEY."""
    embeddings_api_key: str | None = field(default=None, repr=False)
    """KUBERAG_EMBEDDINGS_API_KEY."""
    vector_store_api_key: str | None = field(default=None, repr=False)
    """KUBERAG_VECTOR_STORE_API_KEY."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProviderKeys:
        return cls(
            llm_api_key=_opt(env, contract.ENV_LLM_API_KEY),
            embeddings_api_key=_opt(env, contract.ENV_EMBEDDINGS_API_KEY),
            vector_store_api_key=_opt(env, contract.ENV_VECTOR_STORE_API_KEY),
        )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    providers: ProviderKeys = field(default_factory=ProviderKeys)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            server=ServerSettings.from_env(env),
            redis=RedisSettings.from_env(env),
            storage=StorageSettings.from_env(env),
            admin=AdminSettings.from_env(env),
            service=ServiceSettings.from_env(env),
            providers=ProviderKeys.from_env(env),
        )
