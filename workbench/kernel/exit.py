"""Thread exit (kernel/exit.c: do_exit(), exit_mm(), 4.5).

do_exit() sets PF_EXITING, then exit_mm(): down_read(mmap_sem) - not a
trylock, so a writer holding or queued on it keeps the exiting victim in D
state - then the thread lets go of the mm and mmput() tears the address space
down if it was the last user.  TIF_MEMDIE is cleared only after that mmput,
on the thread's own flag, even when another user (the reaper) still holds the
memory (exit_mm() calls exit_oom_victim() after mmput(), 4.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import fork, futex, oom_kill
from workbench.kernel.sched import TASK_DEAD, TASK_UNINTERRUPTIBLE, Task

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


def release_held_locks(k: Kernel, task: Task) -> None:
    """A thread leaving its program drops the kernel locks it still holds,
    as a killed task does when its system call unwinds, before exit_mm()."""
    while task.held_locks:
        task.held_locks.pop().release(task)


async def do_exit(k: Kernel, task: Task) -> None:
    task.exiting = True                        # exit_signals(): PF_EXITING
    k.tasklist.flags_changed(task)
    await exit_mm(k, task)
    task.state = TASK_DEAD
    if task.active_mm is not None:             # the lazy-TLB pin, dropped at the last switch
        task.active_mm.mmdrop("active_mm")
        task.active_mm = None
    proc = task.process
    proc.live_threads -= 1
    k.tasklist.thread_died(task)
    k.log.emit("exit", pid=task.pid, tgid=proc.pid, comm=proc.comm, thread=task.name,
               code=proc.exit_code)
    if proc.live_threads == 0:
        _exit_notify(k, proc)


async def exit_mm(k: Kernel, task: Task) -> None:
    mm = task.mm
    if mm is None:
        return
    mm_release(k, task)
    await mm.mmap_sem.down_read(task, TASK_UNINTERRUPTIBLE)
    mm.mmgrab("active_mm")
    task.active_mm = mm
    task.mm = None
    mm.mmap_sem.up_read()
    await fork.mmput(k, task, mm)
    if task.tif_memdie:
        oom_kill.exit_oom_victim(k, task)


def mm_release(k: Kernel, task: Task) -> None:
    """The robust futex list, and a vfork parent's wake-up (kernel/fork.c mm_release())."""
    futex.exit_robust_list(k, task)
    done = task.process.vfork_done
    if done is not None and task.is_leader:       # complete_vfork_done()
        task.process.vfork_done = None
        done.wake_up_all()


def _exit_notify(k: Kernel, proc: object) -> None:
    """The last thread is gone: children go to init, the process leaves the list."""
    if proc is k.init:
        code = proc.exit_code - 128 if proc.exit_code > 128 else proc.exit_code << 8
        k.panic(f"Attempted to kill init! exitcode=0x{code:08x}")
    for child in proc.children:
        child.parent = k.init
        k.init.children.append(child)
    proc.children = []
    k.tasklist.remove(proc)
