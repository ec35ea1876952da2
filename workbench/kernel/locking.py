"""Kernel sleeping locks: mutex and the mmap_sem rw-semaphore (kernel/locking/).

A mutex is released before its first waiter is woken, so a trylock or a new
locker that runs first takes it (4.5 __mutex_unlock_common_slowpath(); the
hand-off to the waiter came in 4.10): which one wins is the order in which
Trio runs the tasks of one instant, chosen by the run's seed.  The rwsem
hands ownership to the woken waiters.  Neither yields when the lock is free,
so an uncontended lock costs no scheduler step.  Waits are uninterruptible
unless the caller asks for a killable one (mutex_lock_killable; a killable
down_write only exists from 4.7: down_write_killable(), kernel/locking/rwsem.c).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from workbench.kernel.sched import TASK_UNINTERRUPTIBLE, Task, WaitQueue

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


async def wait_for_release(waiters: WaitQueue, task: Task, state: str, what: str,
                           lock: Any) -> bool:
    """Sleep on waiters until woken with lock.owner free.  A lock is released
    before its first waiter is woken, so a task that runs first may take it;
    the waiter then goes back to the head of the queue.  False: a fatal
    signal ended the wait."""
    lost = False
    while True:
        woken = await waiters.wait(task, state, what, front=lost)
        if not woken or lock.owner is None:
            return woken
        lost = True


class Mutex:
    """struct mutex as 4.5 has it: FIFO waiters, lock stealing on release."""

    def __init__(self, k: Kernel, name: str):
        self.k = k
        self.name = name
        self.owner: Task | None = None
        self._waiters = WaitQueue(k)

    def trylock(self, task: Task) -> bool:
        if self.owner is None:
            self.owner = task
            return True
        return False

    async def lock(self, task: Task, state: str = TASK_UNINTERRUPTIBLE) -> bool:
        """mutex_lock(), or mutex_lock_killable() with state TASK_KILLABLE:
        False when a fatal signal interrupted the wait."""
        if self.owner is None:
            self.owner = task
            return True
        since = self.k.clock.now
        acquired = await wait_for_release(self._waiters, task, state, f"mutex:{self.name}", self)
        if acquired:
            self.owner = task
        self.k.lock_waited(task, f"mutex:{self.name}", since, acquired)
        return acquired

    def release(self, task: Task) -> None:
        """What a killed thread's unwinding calls on each lock it holds."""
        self.unlock(task)

    def unlock(self, task: Task) -> None:
        if self.owner is not task:
            self.k.violation(f"mutex {self.name} released by {task.pid} which does not hold it")
            return
        self.owner = None             # atomic_set(&lock->count, 1), then the wake-up
        if self._waiters:
            self._waiters.wake_up_first()


_READ, _WRITE = "read", "write"


class RwSemaphore:
    """struct rw_semaphore as 4.5's rwsem-xadd behaves for mmap_sem.

    A reader gets in only while no writer holds the lock and nobody queues:
    a queued writer blocks new readers (and down_read_trylock), which is how
    a writer sleeping in the allocator blocks both exit_mm() and the OOM
    reaper.  Release wakes the writer at the head of the queue, or every
    reader ahead of the first queued writer (__rwsem_do_wake)."""

    def __init__(self, k: Kernel, name: str):
        self.k = k
        self.name = name
        self.readers = 0
        self.writer: Task | None = None
        self._waiters = WaitQueue(k)

    def down_read_trylock(self) -> bool:
        if self.writer is None and not self._waiters:
            self.readers += 1
            return True
        return False

    async def down_read(self, task: Task, state: str = TASK_UNINTERRUPTIBLE) -> bool:
        if self.down_read_trylock():
            return True
        return await self._wait(task, _READ, state)

    async def down_write(self, task: Task, state: str = TASK_UNINTERRUPTIBLE) -> bool:
        if self.writer is None and self.readers == 0 and not self._waiters:
            self.writer = task
            return True
        return await self._wait(task, _WRITE, state)

    def up_read(self) -> None:
        self.readers -= 1
        if self.readers < 0:
            self.readers = 0
            self.k.violation(f"{self.name} up_read without a reader")
        self._wake()

    def release(self, task: Task) -> None:
        """up_write() or up_read(), whichever task holds."""
        if self.writer is task:
            self.up_write(task)
        else:
            self.up_read()

    def up_write(self, task: Task) -> None:
        if self.writer is not task:
            self.k.violation(f"{self.name} up_write by {task.pid} which does not hold it")
            return
        self.writer = None
        self._wake()

    async def _wait(self, task: Task, kind: str, state: str) -> bool:
        since = self.k.clock.now
        what = f"{self.name}:{kind}"
        granted = await self._waiters.wait(task, state, what, kind)
        if not granted:
            # A killable writer gave up: readers queued behind it may go now.
            self._wake()
        self.k.lock_waited(task, what, since, granted)
        return granted

    def _wake(self) -> None:
        if self.writer is not None:
            return
        head = self._waiters.first()
        if head is None:
            return
        if head[1] == _WRITE:
            if self.readers == 0:
                self.writer = self._waiters.wake_up_first()[0]
            return
        while (head := self._waiters.first()) is not None and head[1] == _READ:
            self._waiters.wake_up_first()
            self.readers += 1
