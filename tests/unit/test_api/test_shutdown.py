"""The app's own shutdown steps are bounded: a background task that swallows its cancellation (as
Python 3.11's ``asyncio.wait_for`` does when the awaited operation completes at that moment, and
redis-py sends every command through it) is cancelled again, and a step that hangs is given up."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from kuberag_api.shutdown import bounded, stop_tasks

pytestmark = pytest.mark.unit


async def test_a_task_that_swallows_its_cancellation_is_still_stopped():
    """The lifespan hang of the two-pod limiter test: the readiness probe's ping (redis-py,
    asyncio.wait_for) completed as the shutdown cancelled the probe, the cancellation was lost, the
    probe loop went on and ``await task`` never returned."""
    loop = asyncio.get_running_loop()
    operations: list[asyncio.Future] = []
    rounds = 0

    async def probe_loop() -> None:  # the shape of ReadinessProbe.run
        nonlocal rounds
        while True:
            operation = loop.create_future()
            operations.append(operation)
            await asyncio.wait_for(operation, 30)
            rounds += 1

    task = asyncio.create_task(probe_loop())
    await asyncio.sleep(0)  # the probe now waits in wait_for
    # The operation completes in the same loop iteration as the shutdown's first cancellation.
    operations[-1].set_result(None)
    started = time.monotonic()
    left = await stop_tasks([task], seconds=10)
    assert left == [] and task.cancelled()
    assert time.monotonic() - started < 10
    if sys.version_info < (3, 12):  # CPython gh-86296: the first cancellation was swallowed
        assert rounds == 1


async def test_a_task_that_never_stops_is_left_behind_at_the_bound():
    give_up = False

    async def stubborn() -> None:
        while not give_up:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    left = await stop_tasks([task], seconds=0.3)
    assert left == [task] and not task.done()
    give_up = True
    task.cancel()
    await task


async def test_a_step_that_hangs_or_fails_is_given_up_and_logged(caplog):
    never = asyncio.Event()
    assert await bounded("waiting for Godot", never.wait, seconds=0.2) is False
    assert "waiting for Godot took longer than 0.2 s" in caplog.text

    async def broken() -> None:
        raise ConnectionError("redis went away")

    assert await bounded("closing a client", broken) is False
    assert "closing a client failed" in caplog.text

    async def fine() -> None:
        await asyncio.sleep(0)

    assert await bounded("a quick step", fine) is True
