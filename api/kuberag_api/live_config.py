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
from typing import Protocol, TypeVar

from kuberag_contract.config import (
    STATIC_SECTIONS,
    ApiConfig,
    ConfigError,
    config_hash,
    parse_config_file,
    to_dict,
)

log = logging.getLogger("kuberag.config")

Listener = Callable[[ApiConfig, ApiConfig], None]


class WatchedFile:
    """A file re-read when its ``stat`` changes (inode, size, mtime), following symlinks: the
    kubelet's ``..data`` swap of a mounted ConfigMap or Secret changes the inode behind the path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)  # follows the ..data symlink chain
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def read_if_changed(self) -> bytes | None:
        """The file's bytes when it changed since the last call, else None. Raises OSError
        (FileNotFoundError when it is gone) once per change."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        if stamp is None:
            raise FileNotFoundError(f"{self.path} is missing")
        return self.path.read_bytes()


T = TypeVar("T")


def load_file(path: Path, what: str, parse: Callable[[bytes], T]) -> tuple[T, bytes]:
    """Read and parse a file at start; ConfigError naming the file (the pod must not start)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    try:
        return parse(raw), raw
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _static(config: ApiConfig) -> dict:
    d = to_dict(config)
    return {s: d[s] for s in STATIC_SECTIONS}


@dataclass(frozen=True)
class ConfigState:
    config: ApiConfig
    hash: str
    """sha256 of the file it came from ("default" when running without a file)."""
    source: str | None
    raw: bytes | None = None
    """The file's bytes (a new file must not leave out what this one sets)."""


class LiveConfig:
    """Holds the current config; components read ``live.config`` on each use."""

    def __init__(self, config: ApiConfig | None = None, *, path: Path | None = None, hash_: str = "default") -> None:
        self.path = path
        self._state = ConfigState(config or ApiConfig(), hash_, str(path) if path else None)
        self._listeners: list[Listener] = []
        self.last_error: str | None = None
        self.reloads = 0
        # The static sections the process started with: they apply only at a restart, so a file
        # whose static part differs from them (not from the previous file) needs one.
        self._static_at_start = _static(self._state.config)
        self.restart_needed = False
        self._file = WatchedFile(path) if path is not None else None

    @classmethod
    def from_file(cls, path: Path | None) -> LiveConfig:
        """Load the start-up config. A bad file at start is an error (the pod must not start)."""
        if path is None:
            return cls()
        config, raw = load_file(path, "config file", parse_config_file)
        live = cls(config, path=path, hash_=config_hash(raw))
        live._state = ConfigState(config, live.hash, str(path), raw)
        return live

    @property
    def config(self) -> ApiConfig:
        return self._state.config

    @property
    def hash(self) -> str:
        return self._state.hash

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def apply(self, new: ApiConfig, new_hash: str, raw: bytes | None = None) -> None:
        old = self._state.config
        self._state = ConfigState(new, new_hash, self._state.source, raw)
        self.reloads += 1
        new_static = _static(new)
        changed_static = [s for s in STATIC_SECTIONS if new_static[s] != self._static_at_start[s]]
        self.restart_needed = bool(changed_static)
        if changed_static:
            log.warning(
                "config sections %s differ from the ones this process started with: they are static and apply "
                "after a restart (the operator rolls the pods)",
                ", ".join(changed_static),
                extra={"config_hash": new_hash},
            )
        log.info("config reloaded", extra={"config_hash": new_hash})
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:  # a listener bug must not stop the others or the watcher
                log.exception("config listener failed")

    def check(self) -> bool:
        """Re-read the file if it changed on disk; returns True when a new config was applied."""
        if self._file is None:
            return False
        try:
            raw = self._file.read_if_changed()
        except FileNotFoundError:
            self.last_error = f"config file {self.path} is missing; keeping the last good config"
            log.error(self.last_error)
            return False
        except OSError as exc:
            self.last_error = f"cannot read config file {self.path}: {exc.strerror or exc}; keeping the last good config"
            log.error(self.last_error)
            return False
        if raw is None:
            return False
        new_hash = config_hash(raw)
        if new_hash == self._state.hash:
            self.last_error = None
            return False
        try:
            new = parse_config_file(raw, previous=self._state.raw)
        except ConfigError as exc:
            self.last_error = f"{exc}; keeping the last good config ({self._state.hash[:12]})"
            log.error("refused new config file: %s", self.last_error, extra={"config_hash": new_hash})
            return False
        self.last_error = None
        self.apply(new, new_hash, raw)
        return True


class Reloadable(Protocol):
    last_error: str | None

    def check(self) -> bool: ...


async def watch_files(interval: float, watched: list[tuple[Reloadable, Callable[[], None]]]) -> None:
    """Poll each file until cancelled; its ``on_error`` is called once per newly refused file."""
    while True:
        await asyncio.sleep(interval)
        for item, on_error in watched:
            had_error = item.last_error
            try:
                item.check()  # a stat and, rarely, a read of a small file: cheap enough on the loop
            except Exception:
                log.exception("config check failed")
            if item.last_error and item.last_error != had_error:
                on_error()
