"""Lease-based leader election: only the replica holding the coordination.k8s.io Lease runs kopf.

Built on the official client's ``kubernetes.leaderelection`` (LeaseLock). kopf's own peering
would also work with distinct priorities, but needs its peering CRDs; a Lease needs nothing
installed. The process exits when it loses the Lease, so a restarted pod starts as a follower.

On SIGTERM/SIGINT (a rolling update, a drain) the leader stops kopf, stops renewing and releases
the Lease (empty holder, 1 s duration: what client-go's ReleaseOnCancel writes), so a follower
takes over on its next retry instead of after the whole lease duration.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

logger = logging.getLogger(__name__)

# (group, resource, verb) the election uses, in the Lease's namespace (see manifests/rbac/leader_election_role.yaml).
LEASE_PERMISSIONS = frozenset({("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")})


class StandbyHealth:
    """/healthz for a follower: kopf's liveness endpoint only exists while leading.

    A stdlib server because kopf offers no endpoint outside a running operator.
    """

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib name)
                body = b"standby: waiting for the leader Lease\n"
                self.send_response(200 if self.path.startswith("/healthz") else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="standby-health", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _ShutdownRequested(Exception):
    """Raised in the main thread by the SIGTERM/SIGINT handler to leave the election loop."""


def release_lease(name: str, namespace: str, identity: str) -> bool:
    """Give the Lease up if ``identity`` still holds it; True when released.

    A replace carries the read resourceVersion, so a Lease another replica took meanwhile is
    left alone (409). A fresh ApiClient: the election's may have been interrupted mid-request.
    """
    with client.ApiClient() as api_client:
        api = client.CoordinationV1Api(api_client)
        lease = api.read_namespaced_lease(name, namespace, _request_timeout=(2, 5))
        if lease.spec is None or lease.spec.holder_identity != identity:
            return False
        now = datetime.datetime.now(datetime.UTC)
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        lease.spec.acquire_time = lease.spec.renew_time = now
        try:
            api.replace_namespaced_lease(name, namespace, lease, _request_timeout=(2, 5))
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            raise
    return True


def run_with_leader_election(
    *,
    lease_name: str,
    lease_namespace: str,
    identity: str,
    lead: Callable[[], None],
    stop: threading.Event,
    lease_duration: int = 15,
    renew_deadline: int = 10,
    retry_period: int = 2,
) -> None:
    """Block: wait for the Lease, then run ``lead()`` while renewing it; exit the process on loss.

    On SIGTERM/SIGINT: set ``stop`` (``lead()`` must then return), wait up to ``renew_deadline``
    for it, release the Lease and exit 0. Waiting no longer than the renew deadline keeps the
    guarantee of the loss path: the old leader is gone before the Lease it last renewed expires.
    """
    leading = threading.Event()
    led = threading.Event()

    def stopped() -> None:
        logger.error("lost the leader Lease %s/%s: exiting so a fresh follower takes its place",
                     lease_namespace, lease_name)
        os._exit(1)

    def lead_and_mark() -> None:
        leading.set()
        try:
            lead()
        finally:
            led.set()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            return  # a second signal while shutting down: the first one's shutdown goes on
        stop.set()
        raise _ShutdownRequested(signal.Signals(signum).name)

    config = electionconfig.Config(
        LeaseLock(lease_name, lease_namespace, identity),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        onstarted_leading=lead_and_mark,
        onstopped_leading=stopped,
    )
    # The election runs in this (main) thread, kopf in another: kopf only handles signals in the main thread.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        leaderelection.LeaderElection(config).run()
    except _ShutdownRequested as exc:
        logger.info("%s: shutting down", exc)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if leading.is_set():
        started = time.monotonic()
        if not led.wait(renew_deadline):
            logger.error("the operator did not stop within %ss: releasing the Lease anyway", renew_deadline)
        try:
            released = release_lease(lease_name, lease_namespace, identity)
        except Exception as exc:  # any failure only means the follower waits out the lease duration
            logger.error("could not release the Lease %s/%s: %s", lease_namespace, lease_name, exc)
        else:
            logger.info("%s the Lease %s/%s (operator stopped in %.1fs)",
                        "released" if released else "no longer held", lease_namespace, lease_name,
                        time.monotonic() - started)
    logging.shutdown()
    # Not a normal interpreter exit: a stuck handler thread would block it in the executor's atexit join.
    os._exit(0)
