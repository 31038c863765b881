"""WorkQueue: one pass per key at a time, triggers coalesce, new work overtakes routine work,
delayed adds wait (and are moot once the key ran)."""

import threading

import pytest
from kuberag_operator.workqueue import ROUTINE, URGENT, WorkQueue

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _drain(q: WorkQueue) -> list:
    """Every key ready now, in the order workers would get them (each marked done)."""
    out = []
    while (item := q.get(timeout=0.05)) is not None:
        out.append(item)
        q.done(item[0])
    return out


def test_triggers_for_a_waiting_key_coalesce():
    q = WorkQueue()
    for _ in range(3):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert _drain(q) == [("a", ROUTINE), ("b", ROUTINE)]


def test_urgent_work_overtakes_routine_work_and_a_key_moves_up():
    q = WorkQueue()
    for key in ("resume-1", "resume-2", "resume-3"):
        q.add(key, ROUTINE)
    q.add("new", URGENT)
    q.add("resume-3", URGENT)  # a spec edit of one waiting for its resume
    assert _drain(q) == [("new", URGENT), ("resume-3", URGENT), ("resume-1", ROUTINE), ("resume-2", ROUTINE)]


def test_urgent_waiting_counts_new_work_not_yet_taken():
    """The pod-health read waits while this is not 0 (handlers._tick)."""
    q = WorkQueue()
    q.add("resume", ROUTINE)
    q.add("new-1", URGENT)
    q.add("new-2", URGENT)
    assert q.urgent_waiting() == 2
    assert q.get() == ("new-1", URGENT)
    assert q.urgent_waiting() == 1
    q.add("new-1", URGENT)  # again while being processed: runs after, not waiting in the lane yet
    assert q.urgent_waiting() == 1
    q.done("new-1")
    assert q.urgent_waiting() == 2
    assert [key for key, _ in _drain(q)] == ["new-2", "new-1", "resume"]
    assert q.urgent_waiting() == 0


def test_a_key_added_while_processed_runs_once_more_after_and_never_twice_at_once():
    q = WorkQueue()
    q.add("a")
    assert q.get() == ("a", ROUTINE)
    q.add("a")
    q.add("a", URGENT)
    assert q.get(timeout=0.05) is None  # not handed to a second worker while it is processed
    q.done("a")
    assert _drain(q) == [("a", URGENT)]


def test_delayed_adds_wait_their_time_and_a_pass_meanwhile_makes_them_moot():
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add("retry", after=10)
    q.add("retry", after=20)  # the earlier one stands
    q.add("debounced", after=1)
    assert _drain(q) == []
    clock.now += 1
    assert _drain(q) == [("debounced", ROUTINE)]
    clock.now += 9
    assert _drain(q) == [("retry", ROUTINE)]
    clock.now += 20
    assert _drain(q) == []  # the later add of "retry" was folded into the earlier one
    # A delayed add for a key that then runs for another reason does not run it again.
    q.add("x", after=5)
    q.add("x")
    assert _drain(q) == [("x", ROUTINE)]
    clock.now += 10
    assert len(q) == 0 and _drain(q) == []


def test_workers_block_until_work_arrives_and_shutdown_releases_them():
    q = WorkQueue()
    got = []
    worker = threading.Thread(target=lambda: got.append(q.get()))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive()  # blocked: nothing to do
    q.add("a")
    worker.join(2)
    assert got == [("a", ROUTINE)]
    waiting = threading.Thread(target=lambda: got.append(q.get()))
    waiting.start()
    q.shutdown()
    waiting.join(2)
    assert not waiting.is_alive() and got[-1] is None
