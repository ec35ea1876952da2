"""Tasks, virtual time and sleeping (kernel/sched/, include/linux/sched.h).

A simulated thread is a Trio task.  Virtual time is an integer count of
nanoseconds kept by `Clock`: sleepers go on a timer heap keyed
(time, sequence), so ties wake in FIFO order instead of Trio's address order.

The clock moves between two passes of Trio's run loop: `Clock` is a Trio
instrument, and its before_io_wait hook, which Trio calls once per pass after
the last runnable task of the batch has blocked, advances virtual time to the
next timer and reschedules the tasks due then.  One pass per virtual instant,
and no driver task to wake.  A thread that is the only runnable task and the
only one due before its sleep ends does not yield at all: nothing else could
run meanwhile, so it moves the clock itself and carries on (the same order of
events, without the two passes).  `VirtualClock` is the Trio clock of a run:
trio.current_time() is virtual time, and Trio never sleeps for real, since
nothing in the simulation waits for the outside world.

SIGKILL is Trio cancellation: each thread runs its program inside a
CancelScope that the signal cancels.  A TASK_KILLABLE or TASK_INTERRUPTIBLE
wait accepts the cancellation and returns False, as the kernel's killable
waits return -EINTR; a TASK_UNINTERRUPTIBLE wait (D state) refuses it, which
is Trio's shield: the signal stays pending until the wait ends by itself and
is taken at the thread's next killable wait or return to user space.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from typing import TYPE_CHECKING, Callable

import trio
from trio._core import _run as trio_run_module
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.mm import MmStruct

TASK_RUNNING = "R"
TASK_INTERRUPTIBLE = "S"
TASK_UNINTERRUPTIBLE = "D"
TASK_KILLABLE = "K"          # TASK_WAKEKILL | TASK_UNINTERRUPTIBLE
TASK_DEAD = "X"


class Halt(Exception):
    """Raised through a task when the run must stop at once (panic, error)."""


class Process:
    """A thread group: signal_struct plus what the OOM killer reads of a process."""

    def __init__(self, pid: int, comm: str, *, uid: int, oom_score_adj: int,
                 parent: Process | None, kthread: bool = False, init: bool = False,
                 vfork: bool = False, cgroup: object = None):
        self.pid = pid                     # tgid
        self.comm = comm
        self.uid = uid
        self.oom_score_adj = oom_score_adj
        self.parent = parent
        self.children: list[Process] = []  # in fork order (copy_process appends)
        self.threads: list[Task] = []
        self.kthread = kthread             # PF_KTHREAD
        self.init = init                   # is_global_init()
        self.in_vfork = vfork
        self.cgroup = cgroup
        self.mm: MmStruct | None = None    # the mm it was created with
        self.kalloc = 0                    # kernel pages its threads allocated (kalloc)
        self.group_exit = False            # SIGNAL_GROUP_EXIT: SIGKILL or exit_group()
        self.exit_code = 0
        self.live_threads = 0
        self.forked = False                # copy_process() has run: it is on the task list
        self.oom_mm: MmStruct | None = None  # signal->oom_mm (4.9): the victim's mm
        self.core_dumping = False          # SIGNAL_GROUP_COREDUMP
        self.vfork_done: WaitQueue | None = None  # its vfork() parent waits here
        self.list_slot = -1                # its place in the task list (tasklist.py), once forked

    @property
    def cap_sys_admin(self) -> bool:
        return self.uid == 0

    @property
    def alive(self) -> bool:
        return self.live_threads > 0

    def __repr__(self) -> str:
        return f"<Process {self.pid} {self.comm}>"


class Task:
    """task_struct: one simulated thread."""

    def __init__(self, pid: int, process: Process, name: str, mm: MmStruct | None):
        self.pid = pid
        self.process = process
        self.name = name                   # the scenario's thread name
        self.mm = mm
        self.active_mm: MmStruct | None = None
        self.exiting = False               # PF_EXITING
        self.tif_memdie = False
        self.state = TASK_RUNNING
        self.waiting_on = ""               # what a blocked task waits for (for reports)
        self.wait_since = 0
        self.trio_task: trio.lowlevel.Task | None = None
        self.signal_scope = trio.CancelScope()
        self.held_locks: list = []         # kernel locks to drop when a killed thread unwinds
        self.futexes: list = []            # user-space mutexes held (kernel/futex.c)
        self.robust_list = None            # the Vma holding its robust list head, if any
        self.memcg_oom: object = None      # current->memcg_in_oom: handled at the fault's end
        self.memcg_oom_gfp = 0
        self.memcg_stall: list | None = None  # a charge waiting on its memcg's limit
        self._rng: random.Random | None = None
        self.list_slot = -1                # its place in the task list (tasklist.py), once forked
        process.threads.append(self)
        process.live_threads += 1

    comm = property(lambda self: self.process.comm)
    tgid = property(lambda self: self.process.pid)

    @property
    def is_leader(self) -> bool:
        return self.process.threads[0] is self

    def rng(self, k: Kernel) -> random.Random:
        """This thread's workload randomness (sleep jitter)."""
        if self._rng is None:
            self._rng = k.rng(f"{self.comm}/{self.name}", "sleep")
        return self._rng

    def fatal_signal_pending(self) -> bool:
        """SIGKILL (or exit_group's zap) sets SIGNAL_GROUP_EXIT for the whole group."""
        return self.process.group_exit

    def __repr__(self) -> str:
        return f"<Task {self.pid} {self.comm}/{self.name}>"


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


async def block(k: Kernel, task: Task, state: str, what: str,
                on_abort: Callable[[], None]) -> bool:
    """Park the current Trio task until someone reschedules it.

    Returns True when woken, False when SIGKILL interrupted a killable wait
    (on_abort has then taken the task off whatever it waited on).  Any other
    cancellation (the end of the run, Ctrl-C) ends every wait and propagates."""
    def abort(_raise_cancel: object) -> Abort:
        if state == TASK_UNINTERRUPTIBLE and task.fatal_signal_pending() and not k.halting:
            # D state: the signal waits for the wait to end.  Trio asks only
            # once per wait, so the end of the run must wake it (Kernel.halt).
            k.refused_aborts[task] = on_abort
            return Abort.FAILED
        on_abort()
        return Abort.SUCCEEDED

    task.state, task.waiting_on, task.wait_since = state, what, k.clock.now
    try:
        await wait_task_rescheduled(abort)
    except trio.Cancelled:
        if k.halting or not task.fatal_signal_pending():
            raise
        return False
    finally:
        task.state, task.waiting_on = TASK_RUNNING, ""
    return True


def wake_up_task(k: Kernel, task: Task) -> None:
    """try_to_wake_up(): every waker comes here, so that a woken task is no
    longer among the D-state waits the end of a run must break."""
    k.refused_aborts.pop(task, None)
    reschedule(task.trio_task)


class WaitQueue:
    """wait_queue_head_t: FIFO waiters, woken explicitly.

    A waiter that leaves by itself (a signal cut its wait short) is only
    marked gone, in O(1), and dropped when it reaches the head or when gone
    waiters outnumber the others; the live ones keep their order."""

    __slots__ = ("k", "_waiters", "_live")

    def __init__(self, k: Kernel):
        self.k = k
        self._waiters: deque[list] = deque()    # [task, token, still queued]
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    async def wait(self, task: Task, state: str, what: str, token: object = None,
                   front: bool = False) -> bool:
        """Sleep until woken; token is handed back by wake_up_first().  front:
        queue at the head (a waiter that was woken and lost the race)."""
        item = [task, token, True]
        if front:
            self._waiters.appendleft(item)
        else:
            self._waiters.append(item)
        self._live += 1

        def dequeue() -> None:
            if item[2]:
                item[2] = False
                self._live -= 1
                if len(self._waiters) > 2 * self._live + 16:
                    self._waiters = deque(w for w in self._waiters if w[2])
        return await block(self.k, task, state, what, dequeue)

    def _head(self) -> list | None:
        waiters = self._waiters
        while waiters and not waiters[0][2]:
            waiters.popleft()
        return waiters[0] if waiters else None

    def first(self) -> tuple[Task, object] | None:
        head = self._head()
        return (head[0], head[1]) if head is not None else None

    def wake_up_first(self) -> tuple[Task, object]:
        item = self._head()
        self._waiters.popleft()
        item[2] = False
        self._live -= 1
        wake_up_task(self.k, item[0])
        return item[0], item[1]

    def wake_up_all(self) -> None:
        while self._live:
            self.wake_up_first()

    def wake_up_matching(self, match: Callable[[object], bool]) -> None:
        """Wake the waiters whose token matches (a custom wake function)."""
        self.k.scanned(self._live)
        woken = [w for w in self._waiters if w[2] and match(w[1])]
        if not woken:
            return
        for item in woken:
            item[2] = False
        self._live -= len(woken)
        self._waiters = deque(w for w in self._waiters if w[2])
        for item in woken:
            wake_up_task(self.k, item[0])
