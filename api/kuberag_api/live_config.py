"""The live configuration: loaded from the config file and re-read when the file changes.

The kubelet updates a mounted ConfigMap by an atomic symlink swap (``..data`` -> a new
timestamped directory), so the file's path stays the same while the file behind it changes.
A cheap periodic ``stat`` of the resolved path (inode, size, mtime) notices the swap as well as an
in-place edit; the content hash then decides whether anything really changed. (A periodic stat
rather than inotify: inotify on a symlinked path misses the swap unless the directory is
watched, and a stat every second costs nothing.)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kuberag_contract.config import (
    STATIC_SECTIONS,
    ApiConfig,
    ConfigError,
    config_hash,
    parse_config,
    to_dict,
)

log = logging.getLogger("kuberag.config")

Listener = Callable[[ApiConfig, ApiConfig], None]


@dataclass(frozen=True)
class ConfigState:
    config: ApiConfig
    hash: str
    """sha256 of the file it came from ("default" when running without a file)."""
    source: str | None


class LiveConfig:
    """Holds the current config; components read ``live.config`` on each use."""

    def __init__(self, config: ApiConfig | None = None, *, path: Path | None = None, hash_: str = "default") -> None:
        self.path = path
        self._state = ConfigState(config or ApiConfig(), hash_, str(path) if path else None)
        self._listeners: list[Listener] = []
        self.last_error: str | None = None
        self.reloads = 0
        self.restart_needed = False
        self._stamp: tuple[int, int, int, int] | None = None

    @classmethod
    def from_file(cls, path: Path | None) -> LiveConfig:
        """Load the start-up config. A bad file at start is an error (the pod must not start)."""
        if path is None:
            return cls()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        live = cls(parse_config(raw), path=path, hash_=config_hash(raw))
        live._stamp = live._file_stamp()
        return live

    @property
    def config(self) -> ApiConfig:
        return self._state.config

    @property
    def hash(self) -> str:
        return self._state.hash

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def apply(self, new: ApiConfig, new_hash: str) -> None:
        old = self._state.config
        self._state = ConfigState(new, new_hash, self._state.source)
        self.reloads += 1
        old_d, new_d = to_dict(old), to_dict(new)
        changed_static = [s for s in STATIC_SECTIONS if old_d[s] != new_d[s]]
        if changed_static:
            self.restart_needed = True
            log.warning(
                "config sections %s changed: they are static and apply after a restart (the operator rolls the pods)",
                ", ".join(changed_static),
                extra={"config_hash": new_hash},
            )
        log.info("config reloaded", extra={"config_hash": new_hash})
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:  # a listener bug must not stop the others or the watcher
                log.exception("config listener failed")

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)  # follows the ..data symlink chain
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def check(self) -> bool:
        """Re-read the file if it changed on disk; returns True when a new config was applied."""
        if self.path is None:
            return False
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if stamp is None:
            self.last_error = f"config file {self.path} is missing; keeping the last good config"
            log.error(self.last_error)
            return False
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            self.last_error = f"cannot read config file {self.path}: {exc.strerror or exc}; keeping the last good config"
            log.error(self.last_error)
            return False
        new_hash = config_hash(raw)
        if new_hash == self._state.hash:
            self.last_error = None
            return False
        try:
            new = parse_config(raw)
        except ConfigError as exc:
            self.last_error = f"{exc}; keeping the last good config ({self._state.hash[:12]})"
            log.error("refused new config file: %s", self.last_error, extra={"config_hash": new_hash})
            return False
        self.last_error = None
        self.apply(new, new_hash)
        return True

    async def watch(self, interval: float, on_error: Callable[[], None] | None = None) -> None:
        """Poll the file until cancelled; ``on_error`` is called once per newly refused file."""
        while True:
            await asyncio.sleep(interval)
            had_error = self.last_error
            try:
                self.check()  # a stat and, rarely, a read of a small file: cheap enough on the loop
            except Exception:
                log.exception("config check failed")
            if on_error is not None and self.last_error and self.last_error != had_error:
                on_error()
