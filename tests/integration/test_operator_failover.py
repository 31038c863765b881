"""Two operator replicas with Lease-based leader election: one reconciles; kill it, the other takes over."""

from __future__ import annotations

import datetime
import signal
import time
import uuid

import pytest
from kubernetes import client

from tests.fixtures.operator_process import OperatorProcess, install_crd, ragservice, wait_for

pytestmark = pytest.mark.integration

LEASE_ARGS = ["--leader-elect", "--lease-namespace", "kuberag-failover", "--lease-duration", "6",
              "--renew-deadline", "4", "--retry-period", "1"]


def test_two_operators_one_leader_and_failover(control_plane, tmp_path):
    install_crd(control_plane)
    control_plane.create_namespace("kuberag-failover")
    ns = control_plane.create_namespace(f"fo-{uuid.uuid4().hex[:8]}")
    ops = {}
    for ident in ("op-a", "op-b"):
        ops[ident] = OperatorProcess(control_plane.kubeconfig, tmp_path / f"{ident}.log",
                                     [*LEASE_ARGS, "--identity", ident]).start()
    try:
        with control_plane.api_client() as api:
            coord = client.CoordinationV1Api(api)
            custom = client.CustomObjectsApi(api)
            apps = client.AppsV1Api(api)

            killed: set[str] = set()

            def holder():
                for ident, op in ops.items():
                    if ident not in killed:
                        op.assert_alive()
                try:
                    return coord.read_namespaced_lease("kuberag-operator", "kuberag-failover").spec.holder_identity
                except client.ApiException as exc:
                    assert exc.status == 404
                    return None

            def logs():
                return "\n".join(op.log_tail(30) if i in killed else op.dump_stacks() for i, op in ops.items())

            leader = wait_for(holder, timeout=30, what="a leader Lease holder", diagnose=logs)
            follower = next(i for i in ops if i != leader)
            for op in ops.values():
                op.wait_healthy()  # the follower answers /healthz too (standby)

            def leading():
                # The Lease names the leader a moment before its process sets the gauge: poll.
                gauges = {i: op.metrics()["kuberag_operator_leader"] for i, op in ops.items()}
                assert gauges == {leader: 1.0, follower: 0.0}, gauges
                return True

            wait_for(leading, timeout=30, what="the leader gauge to be 1 on the leader only", diagnose=logs)

            def reconciled(name):
                def probe():
                    try:
                        apps.read_namespaced_deployment(name, ns)
                        return True
                    except client.ApiException as exc:
                        assert exc.status == 404
                        return False
                return probe

            custom.create_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", ragservice("first", ns))
            wait_for(reconciled("first"), timeout=30, what="the leader to reconcile", diagnose=logs)
            assert ops[follower].metrics().get('kuberag_operator_reconciles_total{result="success"}', 0) == 0

            ops[leader].kill()
            killed.add(leader)
            custom.create_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", ragservice("second", ns))
            # Takeover within the lease duration (6s) plus a few retry periods.
            wait_for(reconciled("second"), timeout=60, what="the follower to take over and reconcile", diagnose=logs)
            assert holder() == follower
            assert ops[follower].metrics()["kuberag_operator_leader"] == 1.0
    finally:
        for op in ops.values():
            op.stop()


def test_sigterm_releases_the_lease_so_the_follower_takes_over_at_once(control_plane, tmp_path):
    """A rolling update or drain: the leader gets SIGTERM, stops kopf and releases its Lease.

    The lease duration is 30 s here: a follower that had to wait for expiry would need >= 30 s,
    so a takeover in a few seconds shows the release (client-go's ReleaseOnCancel behaviour).
    """
    lease_duration = 30
    install_crd(control_plane)
    control_plane.create_namespace("kuberag-failover-term")
    ns = control_plane.create_namespace(f"term-{uuid.uuid4().hex[:8]}")
    args = ["--leader-elect", "--lease-namespace", "kuberag-failover-term", "--lease-name", "kuberag-operator-sigterm",
            "--lease-duration", str(lease_duration), "--renew-deadline", "10", "--retry-period", "1"]
    ops = {ident: OperatorProcess(control_plane.kubeconfig, tmp_path / f"{ident}.log", [*args, "--identity", ident])
           for ident in ("term-a", "term-b")}
    for op in ops.values():
        op.start()
    try:
        with control_plane.api_client() as api:
            coord = client.CoordinationV1Api(api)
            custom = client.CustomObjectsApi(api)
            apps = client.AppsV1Api(api)

            def lease():
                try:
                    return coord.read_namespaced_lease("kuberag-operator-sigterm", "kuberag-failover-term").spec
                except client.ApiException as exc:
                    assert exc.status == 404
                    return None

            def logs():
                return "\n".join(op.log_tail(40) for op in ops.values())

            leader = wait_for(lambda: (spec := lease()) and spec.holder_identity, timeout=30,
                              what="a leader Lease holder", diagnose=logs)
            follower = next(i for i in ops if i != leader)
            for op in ops.values():
                op.wait_healthy()

            def deployment(name):
                def probe():
                    try:
                        return apps.read_namespaced_deployment(name, ns)
                    except client.ApiException as exc:
                        assert exc.status == 404
                        return None
                return probe

            custom.create_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", ragservice("before", ns))
            wait_for(deployment("before"), timeout=30, what="the leader to reconcile", diagnose=logs)

            started = time.monotonic()
            ops[leader].proc.send_signal(signal.SIGTERM)
            assert ops[leader].proc.wait(timeout=15) == 0, ops[leader].log_tail()
            exited = time.monotonic() - started
            exited_at = datetime.datetime.now(datetime.UTC)
            assert "released the Lease" in ops[leader].log_tail(20)
            custom.create_namespaced_custom_object("kuberag.io", "v1alpha1", ns, "ragservices", ragservice("after", ns))
            wait_for(deployment("after"), timeout=lease_duration * 2, what="the follower to take over and reconcile",
                     interval=0.1, diagnose=logs)
            handover = time.monotonic() - started
            # When the follower took the Lease (its acquireTime), against when the leader exited: a
            # follower that had to wait out the lease would take >= 30 s; its retry period is 1 s.
            # (Not the reconcile time: kopf's start-up under a loaded machine is no part of the Lease.)
            acquired_after = (lease().acquire_time - exited_at).total_seconds()
            print(f"SIGTERM: leader exited after {exited:.1f}s, follower took the Lease {acquired_after:.1f}s later "
                  f"and reconciled {handover:.1f}s after the signal (lease duration {lease_duration}s)")
            assert acquired_after < lease_duration / 3, (
                f"the follower took the Lease {acquired_after:.1f}s after the leader exited: it was not released")
            assert lease().holder_identity == follower
            ops[follower].assert_alive()
            assert ops[follower].metrics()["kuberag_operator_leader"] == 1.0
    finally:
        for op in ops.values():
            op.stop()
