"""Uploaded documents are parsed in a separate process that can be stopped.

A thread cannot be stopped, so a document that makes a parser (pypdf, libxml2, ...) run for
minutes or eat memory would keep a server thread busy after its client gave up, and survive until
shutdown. The parser process instead:

- runs at a lower CPU priority (``nice`` +10), so queries win the cores;
- has an address-space limit (``ParseLimits.memory_bytes`` above what it started with): a
  document that needs more gets a MemoryError there, not the API's memory;
- is killed (SIGKILL) and replaced when one parse takes longer than ``ParseLimits.seconds``, or
  when the server shuts down.

Each of those ends as ``DocumentTooComplex`` (a 422 naming the limit) or ``ParserStopped`` (503
while shutting down), never a 500. One document is parsed at a time; callers wait their turn.
(``concurrent.futures.ProcessPoolExecutor`` cannot kill the task it runs, hence this small class.)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import threading
from multiprocessing.connection import Connection

from kuberag_api.rag.parsing import DEFAULT_LIMITS, ParsedDocument, ParseLimits, parse_document
from kuberag_api.rag.types import DocumentError, DocumentTooComplex, UnsupportedDocument

log = logging.getLogger("kuberag.parser")


class ParserStopped(RuntimeError):
    """The parser process was stopped (the server is shutting down)."""


def _serve(conn: Connection, limits: ParseLimits) -> None:
    """The parser process: parse what arrives, answer ("ok", doc) or (error kind, message)."""
    os.nice(10)
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[0])
        start = pages * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (start + limits.memory_bytes, resource.RLIM_INFINITY))
    except (OSError, ValueError) as exc:  # no /proc (not Linux) or not allowed: the time limit still holds
        log.warning("parser process runs without a memory limit: %s", exc)
    while True:
        try:
            source, data, content_type = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple = ("ok", parse_document(source, data, content_type, limits))
        except UnsupportedDocument as exc:
            reply = ("unsupported", str(exc))
        except DocumentTooComplex as exc:
            reply = ("too_complex", str(exc))
        except DocumentError as exc:
            reply = ("error", str(exc))
        except MemoryError:
            reply = ("too_complex", f"{source}: parsing it needs more than {limits.memory_bytes >> 20} MiB of memory")
        except RecursionError:
            reply = ("too_complex", f"{source}: the document is nested too deeply to parse")
        except Exception as exc:  # a parser library's own bug on odd input: the document is unreadable
            reply = ("error", f"{source}: the document could not be parsed ({type(exc).__name__}: {exc})"[:500])
        del data
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


_ERRORS = {"unsupported": UnsupportedDocument, "too_complex": DocumentTooComplex, "error": DocumentError}


class ParserProcess:
    """One parser process, started on first use and again after it was killed."""

    def __init__(self, limits: ParseLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._stopped = False
        self.kills = 0

    @property
    def pid(self) -> int | None:
        """The parser process's id while one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def start(self) -> None:
        """Start the parser process now instead of at the first parse (no-op when it runs)."""
        with self._lock:
            self._ensure_running()

    def _ensure_running(self) -> None:
        """(Re)start the parser process unless it runs (under the lock); refused once stopped."""
        if self._stopped:
            raise ParserStopped("the server is shutting down")
        if self._proc is None or not self._proc.is_alive():
            self._kill()
            self._start()

    def _start(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        # forkserver: children fork from a clean single-threaded server, not from this process
        # (whose ONNX Runtime and event-loop threads make fork unsafe), and start in milliseconds.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["kuberag_api.rag.parsing"])
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child, self.limits), name="kuberag-parser", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        return proc, parent

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None and proc.is_alive():
            proc.kill()
            self.kills += 1
        if proc is not None:
            proc.join(5)
        if conn is not None:
            conn.close()

    def parse(self, source: str, data: bytes, content_type: str | None = None) -> ParsedDocument:
        """Parse in the parser process (blocking: call it from a worker thread). Raises
        DocumentError / UnsupportedDocument / DocumentTooComplex, or ParserStopped."""
        with self._lock:
            self._ensure_running()
            assert self._conn is not None
            conn = self._conn
            try:
                conn.send((source, data, content_type))
                ready = conn.poll(self.limits.seconds)
                reply = conn.recv() if ready else None
            except (EOFError, OSError):
                reply = ("died", None)
            if self._stopped:
                raise ParserStopped("the server is shutting down")
            if reply is None:
                log.warning("parser process killed: a document took longer than %s s", self.limits.seconds,
                            extra={"source": source[:200]})
                self._kill()
                raise DocumentTooComplex(f"{source}: parsing took longer than {self.limits.seconds:g} s "
                                         "(the parser was stopped)")
            kind, payload = reply
            if kind == "ok":
                return payload
            if kind == "died":
                code = self._proc.exitcode if self._proc is not None else None
                self._kill()
                raise DocumentTooComplex(f"{source}: the parser process ended while reading it (exit code {code}); "
                                         "the document needs more than the parser's limits")
            raise _ERRORS[kind](payload)

    def stop(self) -> None:
        """Kill the process (a parse in progress ends with ParserStopped); later parses are refused."""
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()  # unblocks the waiting parse: its pipe reaches EOF
        if self._lock.acquire(timeout=10):
            try:
                self._kill()
            finally:
                self._lock.release()
