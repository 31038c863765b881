"""Lease-based leader election: only the replica holding the coordination.k8s.io Lease runs kopf.

Built on the official client's ``kubernetes.leaderelection`` (LeaseLock). kopf's own peering
would also work with distinct priorities, but needs its peering CRDs; a Lease needs nothing
installed. The process exits when it loses the Lease, so a restarted pod starts as a follower.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


def run_with_leader_election(
    *,
    lease_name: str,
    lease_namespace: str,
    identity: str,
    lead: Callable[[], None],
    lease_duration: int = 15,
    renew_deadline: int = 10,
    retry_period: int = 2,
) -> None:
    """Block: wait for the Lease, then run ``lead()`` while renewing it; exit the process on loss."""

    def stopped() -> None:
        logger.error("lost the leader Lease %s/%s: exiting so a fresh follower takes its place",
                     lease_namespace, lease_name)
        os._exit(1)

    config = electionconfig.Config(
        LeaseLock(lease_name, lease_namespace, identity),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        onstarted_leading=lead,
        onstopped_leading=stopped,
    )
    leaderelection.LeaderElection(config).run()
