"""Robust futexes (kernel/futex.c exit_robust_list(), 4.5).

A `futex_lock` step takes a pthread mutex that lives in shared memory: user
space, so a thread that dies holding it does not release it.  A thread whose
struct pthread sits in one of its VMAs (`robust_list = "VMA"`) has a robust
list: at exit, mm_release() walks it and marks each mutex it holds
OWNER_DIED, so the first waiter gets it with EOWNERDEAD.  The list is read
from user memory: if the OOM reaper has already zapped that VMA, the kernel
reads a fresh zero page (no MMF_UNSTABLE before 4.9; from 4.9 the read fails)
and finds no list - the waiters sleep for ever.  That is why 5.18 delays the
reaper by OOM_REAPER_DELAY.  Which page of the VMA holds the list is not
modelled: the list counts as lost once the reaper has zapped any page of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel.sched import TASK_INTERRUPTIBLE, Task, WaitQueue

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


class Futex:
    """One user-space mutex: FUTEX_WAIT sleepers, woken one at a time."""

    def __init__(self, k: Kernel, name: str):
        self.k = k
        self.name = name
        self.owner: Task | None = None
        self.owner_died = False
        self._waiters = WaitQueue(k)

    async def lock(self, task: Task) -> bool:
        """pthread_mutex_lock(); False if a fatal signal ended the wait."""
        what = f"futex:{self.name}"
        if self.owner is None:
            self._take(task)
            return True
        since = self.k.clock.now
        lost = False
        while True:
            woken = await self._waiters.wait(task, TASK_INTERRUPTIBLE, what, front=lost)
            if not woken or self.owner is None:
                break
            lost = True
        if woken:
            self._take(task)
        self.k.lock_waited(task, what, since, woken)
        return woken

    def _take(self, task: Task) -> None:
        self.owner = task
        task.futexes.append(self)
        if self.owner_died:                      # EOWNERDEAD: the state is the new owner's
            self.owner_died = False
            self.k.log.emit("futex_owner_died", pid=task.pid, tgid=task.tgid, comm=task.comm,
                            futex=self.name)

    def unlock(self, task: Task) -> None:
        if self.owner is task:
            task.futexes.remove(self)
            self._release()

    def _release(self) -> None:
        self.owner = None
        if self._waiters:
            self._waiters.wake_up_first()


def exit_robust_list(k: Kernel, task: Task) -> None:
    """mm_release() of an exiting thread: the futexes it still holds."""
    vma = task.robust_list
    for futex in list(task.futexes):
        ids = {"pid": task.pid, "tgid": task.tgid, "comm": task.comm, "futex": futex.name}
        if vma is None:
            continue                             # not robust: held by a dead thread for ever
        if vma.reaped:
            k.log.emit("robust_list", **ids, vma=vma.name, result="lost")
            continue
        task.futexes.remove(futex)
        futex.owner_died = True
        k.log.emit("robust_list", **ids, vma=vma.name, result="owner_died")
        futex._release()
