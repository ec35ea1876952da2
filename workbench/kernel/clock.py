"""Virtual time (kernel/time/, kernel/sched/): the clock a run's threads sleep on.

Virtual time is an integer count of nanoseconds on a timer heap keyed
(time, sequence), so ties wake in FIFO order.  The clock moves between two
passes of Trio's run loop: `Clock` is a Trio instrument, and its
before_io_wait hook, which Trio calls once per pass after
the last runnable task of the batch has blocked, advances virtual time to the
next timer and reschedules the tasks due then.  One pass per virtual instant,
and no driver task to wake.  A thread that is the only runnable task and the
only one due before its sleep ends does not yield at all: nothing else could
run meanwhile, so it moves the clock itself and carries on (the same order of
events, without the two passes).  `VirtualClock` is the Trio clock of a run:
trio.current_time() is virtual time, and Trio never sleeps for real, since
nothing in the simulation waits for the outside world.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING

import trio
from trio._core import _run as trio_run_module
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from workbench.kernel.sched import Task, block, wake_up_task

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


class VirtualClock(trio.abc.Clock):
    """Trio's clock for a run: virtual seconds, and no real sleeping (Trio's
    run loop never waits for I/O; `Clock` moves the time between passes)."""

    def __init__(self) -> None:
        self.now_ns = 0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.now_ns / 1e9

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0


def trio_runner_queue() -> deque:
    """Trio's queue of runnable tasks (a private name; trio is pinned for it):
    empty when every task of the current batch that has run has blocked."""
    return trio_run_module.GLOBAL_RUN_CONTEXT.runner.runq


class Clock(trio.abc.Instrument):
    """Integer-nanosecond virtual time on a timer heap, moved between Trio's
    run-loop passes (before_io_wait) or by a thread running alone (sleep)."""

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self.now = 0
        self._heap: list[list] = []
        self._seq = itertools.count()
        self._trio_clock: VirtualClock | None = None
        self._runq: deque = deque()     # Trio's run queue, once drive() has started
        self._batch = 0                 # tasks in the batch Trio is running now
        self._done = False              # the run's end is decided: move no more
        self.interrupted = False        # Ctrl-C ended the run (Kernel.main re-raises)

    async def sleep(self, task: Task, ns: int, state: str, what: str = "sleep") -> bool:
        """schedule_timeout(): True when the time passed, False when a fatal
        signal cut a killable sleep short."""
        self.k.step()                   # a stretch of work: counts against limits.steps
        t = self.now + ns
        if self._batch == 1 and not self._runq and self._alone_until(task, t):
            task.wait_since = self.now
            self.advance(t)
            return True
        entry = [t, next(self._seq), task, True]
        heapq.heappush(self._heap, entry)

        def cancel() -> None:
            entry[3] = False
        return await block(self.k, task, state, what, cancel)

    def _alone_until(self, task: Task, t: int) -> bool:
        """The caller is the only runnable task (one in Trio's batch, none
        queued): may it pass to t without yielding?  Only if no timer is due
        at or before t (a tie wakes with it, in an order Trio shuffles), t is
        within the run, and no signal or end of run is waiting for its yield."""
        if task.fatal_signal_pending() or self.k.halting or t > self.k.limits.time_ns:
            return False
        nxt = self.next_event()
        if nxt is not None and nxt <= t:
            return False
        try:
            self.k.check_interrupt()    # as at every instant; before_io_wait handles it
        except KeyboardInterrupt:
            return False
        return True

    async def wait_until(self, t: int) -> None:
        """Park a helper task that is not a simulated thread (process start-up)."""
        entry = [t, next(self._seq), current_task(), True]     # a Trio task, not a Task
        heapq.heappush(self._heap, entry)

        def abort(_raise_cancel: object) -> Abort:
            entry[3] = False
            return Abort.SUCCEEDED
        await wait_task_rescheduled(abort)

    def next_event(self) -> int | None:
        heap = self._heap
        while heap and not heap[0][3]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def advance(self, t: int) -> None:
        if t > self.now:
            self.k.time_advanced()      # the instant being left (its meminfo sample)
            self.now = t
            if self._trio_clock is not None:
                self._trio_clock.now_ns = t

    def wake_due(self) -> None:
        heap, t = self._heap, self._heap[0][0]
        while heap and heap[0][0] == t:
            entry = heapq.heappop(heap)
            if entry[3]:
                entry[3] = False
                if isinstance(entry[2], Task):
                    wake_up_task(self.k, entry[2])
                else:
                    reschedule(entry[2])

    async def drive(self) -> None:
        """Hook the clock into Trio's run loop for the run, and hold the run's
        nursery open until the run ends (the end of the run cancels it)."""
        self._runq = trio_runner_queue()
        clock = trio.lowlevel.current_clock()
        self._trio_clock = clock if isinstance(clock, VirtualClock) else None
        trio.lowlevel.add_instrument(self)
        try:
            await trio.sleep_forever()
        finally:
            trio.lowlevel.remove_instrument(self)

    def before_io_wait(self, timeout: float) -> None:
        """Trio's run loop between two batches: if no task is runnable, this
        virtual instant is over.  Then note the size of the coming batch."""
        runq = self._runq
        if not runq and not self._done and not self.k.halting:
            self.k.call_guarded(self._next_instant)
        self._batch = len(runq)

    def _next_instant(self) -> None:
        """Advance virtual time to the next timer and wake what is due; end
        the run at the time limit, or when nothing can ever happen again."""
        try:
            self.k.check_interrupt()
        except KeyboardInterrupt:
            self._done = self.interrupted = True
            self.k.halt()          # so that D-state waits give way to the cancellation
            return
        limit = self.k.limits.time_ns
        t = self.next_event()
        if t is not None and t <= limit:
            self.advance(t)
            self.wake_due()
            return
        self._done = True
        if t is None:
            # Everything waits on something nobody will do: a deadlock, or
            # the end of the workload.  Blocked threads are measured to the limit.
            self.advance(limit if self.k.has_blocked_threads() else self.now)
        else:
            self.advance(limit)
        self.k.finish("time limit" if self.now >= limit else "idle")
