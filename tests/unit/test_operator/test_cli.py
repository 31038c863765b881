import logging

import pytest
from kuberag_operator.__main__ import _quiet_events, parse_args

pytestmark = pytest.mark.unit


def test_defaults():
    args = parse_args([])
    assert (args.metrics_port, args.health_port, args.leader_elect) == (8080, 8081, False)
    assert args.lease_duration > args.renew_deadline > args.retry_period


@pytest.mark.parametrize(("argv", "message"), [
    (["--metrics-port", "70000"], "--metrics-port must be a TCP port"),
    (["--lease-duration", "5", "--renew-deadline", "10"], "need --lease-duration > --renew-deadline"),
    (["--metrics-port", "x"], "invalid int value"),
])
def test_bad_arguments_are_clear_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_child_event_success_lines_are_filtered_but_errors_are_kept():
    def record(level, msg):
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)
    assert not _quiet_events(record(logging.INFO, "Handler 'on_child_event' succeeded."))
    assert not _quiet_events(record(logging.INFO, "Handler 'on_ragservice_event' succeeded."))
    assert _quiet_events(record(logging.ERROR, "Handler 'on_child_event' failed"))
    assert _quiet_events(record(logging.INFO, "Handler 'configure' succeeded."))
