"""Virtual time and waits on Trio (workbench/kernel/sched.py), under pytest-trio."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from workbench.kernel.clock import Clock, VirtualClock
from workbench.kernel.sched import TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, Process, Task, WaitQueue

MS = 1_000_000


class MiniKernel:
    """What Clock and the waits need of the kernel, and no more."""

    def __init__(self, limit_ms=1000):
        self.limits = SimpleNamespace(time_ns=limit_ms * MS)
        self.clock = Clock(self)
        self.halting = False
        self.refused_aborts = {}
        self.ended = None

    def check_interrupt(self):
        pass

    def time_advanced(self):
        pass

    def step(self):
        pass

    def has_blocked_threads(self):
        return False

    def call_guarded(self, fn):
        fn()

    def finish(self, reason):
        self.ended = (reason, self.clock.now)
        self.halting = True
        self.nursery.cancel_scope.cancel()


@pytest.fixture
def virtual_clock():
    """The run's Trio clock (pytest-trio runs a test with a Clock a fixture returns)."""
    return VirtualClock()


def thread(name):
    return Task(1, Process(1, name, uid=0, oom_score_adj=0, parent=None), "main", None)


async def simulate(k, *bodies):
    async with trio.open_nursery() as nursery:
        k.nursery = nursery
        nursery.start_soon(k.clock.drive)
        for body in bodies:
            nursery.start_soon(body)


async def test_virtual_time_is_exact_integer_nanoseconds(virtual_clock):
    k, t = MiniKernel(limit_ms=2000), thread("a")
    seen = []

    async def body():
        t.trio_task = trio.lowlevel.current_task()
        for _ in range(10):
            await k.clock.sleep(t, 100 * MS, TASK_UNINTERRUPTIBLE)
        seen.append(k.clock.now)
        seen.append(trio.current_time())

    await simulate(k, body)
    assert seen == [1_000_000_000, pytest.approx(1.0, abs=1e-12)]   # trio.current_time() follows
    assert k.ended == ("idle", 1_000_000_000)


class StepsOf(trio.abc.Instrument):
    """Counts the Trio task steps of the tasks in `tasks` (each adds itself)."""

    def __init__(self):
        self.tasks, self.steps = set(), 0

    def after_task_step(self, task):
        if task in self.tasks:
            self.steps += 1


async def test_a_thread_alone_passes_time_without_yielding(virtual_clock):
    counted = StepsOf()
    trio.lowlevel.add_instrument(counted)

    async def sleeper(k, task, step, n):
        task.trio_task = trio.lowlevel.current_task()
        counted.tasks.add(task.trio_task)
        for _ in range(n):
            await k.clock.sleep(task, step * MS, TASK_INTERRUPTIBLE)

    k, a = MiniKernel(limit_ms=5000), thread("a")
    await simulate(k, lambda: sleeper(k, a, 3, 100))
    assert k.ended == ("idle", 300 * MS)
    assert counted.steps <= 3         # its first step, maybe one wake-up, and its return
    counted.steps = 0
    k, a, b = MiniKernel(limit_ms=5000), thread("a"), thread("b")
    await simulate(k, lambda: sleeper(k, a, 3, 100), lambda: sleeper(k, b, 3, 100))
    assert counted.steps >= 200       # their timers tie: both wake together, every sleep yields
    assert k.ended == ("idle", 300 * MS)


async def test_the_run_ends_at_the_time_limit(virtual_clock):
    k, t = MiniKernel(limit_ms=250), thread("a")

    async def body():
        t.trio_task = trio.lowlevel.current_task()
        while True:
            await k.clock.sleep(t, 100 * MS, TASK_INTERRUPTIBLE)

    await simulate(k, body)
    assert k.ended == ("time limit", 250 * MS)


async def test_a_killable_wait_returns_false_and_a_d_state_wait_keeps_the_signal_pending(
        virtual_clock):
    k, a, b = MiniKernel(), thread("a"), thread("b")
    q = WaitQueue(k)
    results = {}

    async def waiter(task, state):
        task.trio_task = trio.lowlevel.current_task()
        with task.signal_scope:
            results[task.comm] = [await q.wait(task, state, "q"), k.clock.now]
            # the next killable wait returns at once: the signal is still pending
            results[task.comm].append(await k.clock.sleep(task, 5 * MS, TASK_INTERRUPTIBLE))

    async def signaller():
        await k.clock.wait_until(10 * MS)
        for task in (a, b):
            task.process.group_exit = True
            task.signal_scope.cancel()
        await k.clock.wait_until(20 * MS)
        q.wake_up_all()

    await simulate(k, lambda: waiter(a, TASK_INTERRUPTIBLE),
                   lambda: waiter(b, TASK_UNINTERRUPTIBLE), signaller)
    assert results == {"a": [False, 10 * MS, False], "b": [True, 20 * MS, False]}
    assert k.refused_aborts == {}
