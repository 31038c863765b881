"""``kuberag-operator`` (or ``python -m kuberag_operator``): run the RagService operator.

Watches every namespace. Serves its Prometheus metrics on ``--metrics-port`` and kopf's
liveness endpoint on ``--health-port`` (``/healthz``). With ``--leader-elect`` (what the
manifests' 2-replica Deployment uses) only the holder of a coordination.k8s.io Lease reconciles.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading

import kopf
from prometheus_client import start_http_server

from kuberag_operator import handlers, metrics
from kuberag_operator.kube import load_kube_config
from kuberag_operator.leader import StandbyHealth, run_with_leader_election

logger = logging.getLogger("kuberag_operator")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="kuberag-operator", description=__doc__.splitlines()[0])
    p.add_argument("--metrics-port", type=int, default=int(env("KUBERAG_OPERATOR_METRICS_PORT", "8080")))
    p.add_argument("--health-port", type=int, default=int(env("KUBERAG_OPERATOR_HEALTH_PORT", "8081")))
    p.add_argument("--bind", default=env("KUBERAG_OPERATOR_BIND", "0.0.0.0"), help="address of both HTTP ports")
    p.add_argument("--leader-elect", action="store_true", default=env("KUBERAG_OPERATOR_LEADER_ELECT") == "true")
    p.add_argument("--lease-name", default="kuberag-operator")
    p.add_argument("--lease-namespace", default=env("POD_NAMESPACE", "kuberag-system"))
    p.add_argument("--identity", default=env("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}")
    p.add_argument("--lease-duration", type=int, default=15, help="seconds a follower waits after the last renewal")
    p.add_argument("--renew-deadline", type=int, default=10)
    p.add_argument("--retry-period", type=int, default=2)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    for port_name in ("metrics_port", "health_port"):
        if not 0 < getattr(args, port_name) < 65536:
            p.error(f"--{port_name.replace('_', '-')} must be a TCP port (1-65535)")
    if not args.lease_duration > args.renew_deadline > 1.2 * args.retry_period >= 1.2:
        p.error("need --lease-duration > --renew-deadline > 1.2 x --retry-period >= 1.2 seconds")
    return args


def _quiet_events(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event success line (one per watch event: every Deployment status change)."""
    return not (record.levelno <= logging.INFO and record.getMessage().endswith("_event' succeeded."))


def run_operator(args: argparse.Namespace, stop: threading.Event | None = None) -> None:
    """Run kopf until it stops, or until ``stop`` is set (in this thread, with its own event loop)."""
    assert handlers.on_ragservice_event  # the handlers register on import

    async def run() -> None:
        # kopf accepts a threading.Event as stop_flag, but waits on it in the loop's default executor:
        # a kopf that stops by itself would then hang in asyncio.run's executor shutdown. Relay it by a daemon thread.
        stop_flag = asyncio.Event()
        if stop is not None:
            loop = asyncio.get_running_loop()

            def relay() -> None:
                stop.wait()
                if not loop.is_closed():
                    loop.call_soon_threadsafe(stop_flag.set)

            threading.Thread(target=relay, name="kopf-stop-relay", daemon=True).start()
        await kopf.operator(
            clusterwide=True,
            standalone=True,  # no kopf peering: the Lease (or a single replica) is the exclusion
            # Our identity: kopf's default calls getpass.getuser(), which raises for a uid without a
            # passwd entry (the image's 65532), so the operator pod exited at start.
            identity=args.identity,
            liveness_endpoint=f"http://{args.bind}:{args.health_port}/healthz",
            stop_flag=stop_flag if stop is not None else None,
        )

    asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` dumps every thread's stack to stderr
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # The election logs every renewal at INFO; kopf every child event: keep what matters.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("kopf.objects").addFilter(_quiet_events)
    try:
        load_kube_config()
    except Exception as exc:  # config errors come in several types; the message is what matters
        print(f"kuberag-operator: cannot load Kubernetes credentials: {exc}", file=sys.stderr)
        return 2
    start_http_server(args.metrics_port, addr=args.bind)
    if not args.leader_elect:
        metrics.LEADER.set(1)
        run_operator(args)
        return 0

    standby = StandbyHealth(args.health_port, args.bind)
    stop = threading.Event()  # set on SIGTERM/SIGINT: kopf stops, then the Lease is released
    logger.info("%s waits for the leader Lease %s/%s", args.identity, args.lease_namespace, args.lease_name)

    def lead() -> None:
        logger.info("%s holds the Lease %s/%s: reconciling", args.identity, args.lease_namespace, args.lease_name)
        standby.stop()
        metrics.LEADER.set(1)
        try:
            run_operator(args, stop)
        except BaseException:
            # os._exit below skips the interpreter's own report: say why kopf stopped first.
            logger.exception("kopf failed")
            raise
        finally:
            if not stop.is_set():
                # kopf stopped by itself: never keep renewing a Lease for an operator that no longer runs.
                logger.error("the operator stopped: exiting")
                os._exit(1)

    run_with_leader_election(
        lease_name=args.lease_name, lease_namespace=args.lease_namespace, identity=args.identity, lead=lead, stop=stop,
        lease_duration=args.lease_duration, renew_deadline=args.renew_deadline, retry_period=args.retry_period,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
