"""Robust futexes (kernel/futex.c exit_robust_list(), 4.5).

A `futex_lock` step takes a pthread mutex that lives in shared memory: user
space, so a thread that dies holding it does not release it.  A mutex locked
with `robust = true` (PTHREAD_MUTEX_ROBUST) goes on the thread's robust list,
whose head sits in the thread's struct pthread, in the VMA `robust_list`
names: at exit, mm_release() walks the list and marks each such mutex it
still holds OWNER_DIED, so the first waiter gets it with EOWNERDEAD.  Plain
mutexes are not on the list: their waiters sleep for ever.  The list is read
from user memory: if the OOM reaper has already zapped that VMA, the kernel
reads a fresh zero page (no MMF_UNSTABLE before 4.9; from 4.9 the read fails)
and finds no list - the waiters sleep for ever.  That is why 5.18 delays the
reaper by OOM_REAPER_DELAY.  Which page of the VMA holds the list is not
modelled: the list counts as lost once the reaper has zapped any page of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel.locking import wait_for_release
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
        self.robust = False                      # held as PTHREAD_MUTEX_ROBUST
        self._waiters = WaitQueue(k)

    async def lock(self, task: Task, robust: bool = False) -> bool:
        """pthread_mutex_lock(); False if a fatal signal ended the wait."""
        what = f"futex:{self.name}"
        if self.owner is None:
            self._take(task, robust)
            return True
        since = self.k.clock.now
        woken = await wait_for_release(self._waiters, task, TASK_INTERRUPTIBLE, what, self)
        if woken:
            self._take(task, robust)
        self.k.lock_waited(task, what, since, woken)
        return woken

    def _take(self, task: Task, robust: bool) -> None:
        self.owner = task
        self.robust = robust
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
        if not futex.robust or vma is None:
            continue                             # not on the list: held by a dead thread
        if vma.reaped:
            k.log.emit("robust_list", **ids, vma=vma.name, result="lost")
            continue
        task.futexes.remove(futex)
        futex.owner_died = True
        k.log.emit("robust_list", **ids, vma=vma.name, result="owner_died")
        futex._release()
