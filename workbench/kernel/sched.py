"""Tasks, virtual time and sleeping (kernel/sched/, include/linux/sched.h).

A simulated thread is a Trio task.  Virtual time is an integer count of
nanoseconds kept by `Clock`: sleepers go on a timer heap keyed
(time, sequence), so ties wake in FIFO order instead of Trio's address order.

Virtual time moves in `clock.py`.  Trio is imported when the first thread
runs, not with this module: validating a config needs the kernel's types,
not its run loop, and importing Trio costs about 0.1 s.

SIGKILL is Trio cancellation: each thread runs its program inside a
CancelScope that the signal cancels.  A TASK_KILLABLE or TASK_INTERRUPTIBLE
wait accepts the cancellation and returns False, as the kernel's killable
waits return -EINTR; a TASK_UNINTERRUPTIBLE wait (D state) refuses it, which
is Trio's shield: the signal stays pending until the wait ends by itself and
is taken at the thread's next killable wait or return to user space.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import trio

    from workbench.kernel.core import Kernel
    from workbench.kernel.mm import MmStruct

TASK_RUNNING = "R"
TASK_INTERRUPTIBLE = "S"
TASK_UNINTERRUPTIBLE = "D"
TASK_KILLABLE = "K"          # TASK_WAKEKILL | TASK_UNINTERRUPTIBLE
TASK_DEAD = "X"


def _trio() -> Any:
    """The trio module, imported on first use (see the module's docstring)."""
    import trio
    return trio


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
        self.list_slot = -1                # its place in the task list (tasklist.py), once forked

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
        self.signal_scope = _trio().CancelScope()
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
            self._rng = k.rng(f"{self.process.name}/{self.name}", "sleep")
        return self._rng

    def fatal_signal_pending(self) -> bool:
        """SIGKILL (or exit_group's zap) sets SIGNAL_GROUP_EXIT for the whole group."""
        return self.process.group_exit

    def __repr__(self) -> str:
        return f"<Task {self.pid} {self.comm}/{self.name}>"


async def block(k: Kernel, task: Task, state: str, what: str,
                on_abort: Callable[[], None]) -> bool:
    """Park the current Trio task until someone reschedules it.

    Returns True when woken, False when SIGKILL interrupted a killable wait
    (on_abort has then taken the task off whatever it waited on).  Any other
    cancellation (the end of the run, Ctrl-C) ends every wait and propagates."""
    trio = _trio()

    def abort(_raise_cancel: object) -> Any:
        if state == TASK_UNINTERRUPTIBLE and task.fatal_signal_pending() and not k.halting:
            # D state: the signal waits for the wait to end.  Trio asks only
            # once per wait, so the end of the run must wake it (Kernel.halt).
            k.refused_aborts[task] = on_abort
            return trio.lowlevel.Abort.FAILED
        on_abort()
        return trio.lowlevel.Abort.SUCCEEDED

    task.state, task.waiting_on, task.wait_since = state, what, k.clock.now
    try:
        await trio.lowlevel.wait_task_rescheduled(abort)
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
    _trio().lowlevel.reschedule(task.trio_task)


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
