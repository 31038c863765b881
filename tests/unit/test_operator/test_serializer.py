"""KeyedSerializer: one reconcile per RagService at a time; concurrent triggers coalesce into one re-run."""

import threading

import pytest
from kuberag_operator.reconcile import KeyedSerializer, Outcome, merge_outcomes

pytestmark = pytest.mark.unit


def test_a_trigger_during_a_run_coalesces_into_one_rerun():
    ser = KeyedSerializer()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow():
        calls.append(len(calls))
        if len(calls) == 1:
            started.set()
            release.wait(5)
        return len(calls)

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("holder", ser.run(("ns", "a"), slow, wait=False)))
    t.start()
    assert started.wait(5)
    # Three triggers while the first pass runs: none runs now, exactly one re-run follows.
    assert [ser.run(("ns", "a"), slow, wait=False) for _ in range(3)] == [[], [], []]
    release.set()
    t.join(5)
    assert results["holder"] == [1, 2]
    assert len(calls) == 2


def test_waiting_callers_run_after_the_holder_and_other_keys_run_in_parallel():
    ser = KeyedSerializer()
    gate = threading.Event()
    out = []

    def first():
        gate.wait(5)
        out.append("first")
        return 1

    t = threading.Thread(target=lambda: ser.run(("ns", "a"), first, wait=True))
    t.start()
    assert ser.run(("ns", "b"), lambda: out.append("other key") or 2, wait=False) == [2]
    waiter = threading.Thread(target=lambda: ser.run(("ns", "a"), lambda: out.append("second") or 3, wait=True))
    waiter.start()
    gate.set()
    t.join(5)
    waiter.join(5)
    assert out == ["other key", "first", "second"]


def test_an_exception_releases_the_key():
    ser = KeyedSerializer()
    with pytest.raises(RuntimeError):
        ser.run(("ns", "a"), lambda: (_ for _ in ()).throw(RuntimeError("boom")), wait=False)
    assert ser.run(("ns", "a"), lambda: 5, wait=False) == [5]


def test_merged_outcome_keeps_every_change():
    a = Outcome(ragservice={"v": 1}, created=["Service/x"])
    b = Outcome(ragservice={"v": 2}, drift=["ConfigMap/x-config"])
    m = merge_outcomes([a, b])
    assert m.ragservice == {"v": 2} and m.created == ["Service/x"] and m.drift == ["ConfigMap/x-config"]
    assert merge_outcomes([]) is None
