"""Tasks, virtual time and sleeping (kernel/sched/, include/linux/sched.h).

A simulated thread is a Trio task.  Virtual time is an integer count of
nanoseconds kept by `Clock`: sleepers go on a timer heap keyed
(time, sequence) and one driver task advances time when every other task is
blocked (trio.testing.wait_all_tasks_blocked).  That is about twice as fast as
trio.sleep under MockClock and keeps ties in FIFO order instead of Trio's
address order.

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
import trio.testing
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.mm import MmStruct

TASK_RUNNING = "R"
TASK_INTERRUPTIBLE = "S"
TASK_UNINTERRUPTIBLE = "D"
TASK_KILLABLE = "K"          # TASK_WAKEKILL | TASK_UNINTERRUPTIBLE
TASK_DEAD = "X"


class Halt(BaseException):
    """Raised through a task when the run must stop at once (panic, error, a
    step limit).  A BaseException, so that a policy's `except Exception`
    inside a scan cannot swallow it and scan for ever."""


class Process:
    """A thread group: signal_struct plus what the OOM killer reads of a process."""

    def __init__(self, pid: int, comm: str, *, uid: int, oom_score_adj: int,
                 parent: Process | None, kthread: bool = False, init: bool = False,
                 vfork: bool = False, cgroup: object = None, name: str | None = None,
                 cap_sys_admin: bool | None = None):
        self.pid = pid                     # tgid
        self.comm = comm
        self.name = comm if name is None else name   # the scenario's unique name
        self.uid = uid
        # has_capability_noaudit(p, CAP_SYS_ADMIN): uid 0 unless the scenario says
        self.cap_sys_admin = uid == 0 if cap_sys_admin is None else cap_sys_admin
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
            self._rng = k.rng(f"{self.process.name}/{self.name}", "sleep")
        return self._rng

    def fatal_signal_pending(self) -> bool:
        """SIGKILL (or exit_group's zap) sets SIGNAL_GROUP_EXIT for the whole group."""
        return self.process.group_exit

    def __repr__(self) -> str:
        return f"<Task {self.pid} {self.comm}/{self.name}>"


class Clock:
    """Integer-nanosecond virtual time on a timer heap, driven by one Trio task."""

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self.now = 0
        self._heap: list[list] = []
        self._seq = itertools.count()
        self._trio_clock: trio.testing.MockClock | None = None

    async def sleep(self, task: Task, ns: int, state: str, what: str = "sleep") -> bool:
        """schedule_timeout(): True when the time passed, False when a fatal
        signal cut a killable sleep short."""
        self.k.step()                   # a stretch of work: counts against limits.steps
        entry = [self.now + ns, next(self._seq), task, True]
        heapq.heappush(self._heap, entry)

        def cancel() -> None:
            entry[3] = False
        return await block(self.k, task, state, what, cancel)

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
        if self._trio_clock is not None and t > self.now:
            # Aim at the absolute time, so float error cannot pile up.
            self._trio_clock.jump(t / 1e9 - self._trio_clock.current_time())
        if t > self.now:
            self.k.time_advanced()
        self.now = t

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
        """Advance virtual time whenever every simulated task is blocked; end
        the run at the time limit, or when nothing can ever happen again."""
        clock = trio.lowlevel.current_clock()   # keep trio.current_time() virtual if we can
        self._trio_clock = clock if isinstance(clock, trio.testing.MockClock) else None
        limit = self.k.limits.time_ns
        wait_idle = trio.testing.wait_all_tasks_blocked
        while True:
            await wait_idle()
            try:
                self.k.check_interrupt()
            except KeyboardInterrupt:
                self.k.halt()          # so that D-state waits give way to the cancellation
                raise
            t = self.next_event()
            if t is None:
                # Everything waits on something nobody will do: a deadlock, or
                # the end of the workload.  Blocked threads are measured to the limit.
                self.advance(limit if self.k.has_blocked_threads() else self.now)
                break
            if t > limit:
                self.advance(limit)
                break
            self.advance(t)
            self.wake_due()
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
    """wait_queue_head_t: FIFO waiters, woken explicitly."""

    __slots__ = ("k", "_waiters")

    def __init__(self, k: Kernel):
        self.k = k
        self._waiters: deque = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def __bool__(self) -> bool:
        return bool(self._waiters)

    async def wait(self, task: Task, state: str, what: str, token: object = None,
                   front: bool = False) -> bool:
        """Sleep until woken; token is handed back by wake_up_first().  front:
        queue at the head (a waiter that was woken and lost the race)."""
        item = (task, token)
        if front:
            self._waiters.appendleft(item)
        else:
            self._waiters.append(item)

        def dequeue() -> None:
            if item in self._waiters:
                self._waiters.remove(item)
        return await block(self.k, task, state, what, dequeue)

    def first(self) -> tuple[Task, object] | None:
        return self._waiters[0] if self._waiters else None

    def wake_up_first(self) -> tuple[Task, object]:
        item = self._waiters.popleft()
        wake_up_task(self.k, item[0])
        return item

    def wake_up_all(self) -> None:
        while self._waiters:
            self.wake_up_first()

    def wake_up_matching(self, match: Callable[[object], bool]) -> None:
        """Wake the waiters whose token matches (a custom wake function)."""
        self.k.scanned(len(self._waiters))
        for item in [w for w in self._waiters if match(w[1])]:
            self._waiters.remove(item)
            wake_up_task(self.k, item[0])
