"""A userspace OOM killer's daemon (concern "userspace"): a simulated task
that polls /proc/meminfo in virtual time and sends SIGKILL before the kernel
runs out.

The decisions are the arm's userspace policy's (workbench_userspace_poll):
whom to kill at each poll, and how long to sleep until the next.  The daemon
carries them out through the normal kill path, kill(2) of SIGKILL
(kernel/signal.c), not the OOM killer's: no TIF_MEMDIE, no reserves, no
OOM reaper.  It is not a process of the simulated machine: it has no memory,
no pid on the task list, and the OOM killer never sees it (earlyoom
mlockall()s about 2 MiB).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import signal
from workbench.kernel.sched import TASK_INTERRUPTIBLE, Process, Task
from workbench.policy import MemInfo, UserspaceView
from workbench.units import kb

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


def userspace_init(k: Kernel) -> Task:
    """The daemon's task, off the task list (pid 0 stands for "no pid here")."""
    name = k.policies.names["userspace"]
    proc = Process(0, name, uid=0, oom_score_adj=0, parent=None, kthread=True)
    return Task(0, proc, name, None)


def meminfo(k: Kernel) -> MemInfo:
    """/proc/meminfo as 4.5's meminfo_proc_show() (fs/proc/meminfo.c) computes
    it; si_mem_available() is its 4.6 name.  MemAvailable = free pages -
    totalreserve_pages (one zone, no lowmem_reserve: its high watermark)
    + the file LRU less min(half of it, the low watermark); no reclaimable
    slab is modelled.  The file LRU is the page cache: mapped file pages and
    unmapped cache, clean or dirty.  AnonPages is NR_ANON_PAGES (shmem is not
    in it).  SwapTotal and SwapFree are the swap area's slots (0 without swap)."""
    z = k.zone
    mms = {id(p.mm): p.mm for p in k.for_each_process() if p.mm is not None}.values()
    file_lru = k.memcgs.page_cache() + sum(mm.file for mm in mms)
    pagecache = file_lru - min(file_lru // 2, z.wmark_low)
    available = max(z.free - min(z.wmark_high, z.managed) + pagecache, 0)
    return MemInfo(mem_total_kb=kb(z.managed), mem_free_kb=kb(z.free),
                   mem_available_kb=kb(available), anon_pages_kb=kb(sum(mm.anon for mm in mms)),
                   swap_total_kb=kb(k.swap.total), swap_free_kb=kb(k.swap.free))


def watching(k: Kernel) -> bool:
    """Whether anything is left to watch: a live thread of the scenario, or a
    process still to start.  Once nothing is, the daemon exits so that the
    run can end."""
    return any(k.user_threads()) or k.pending_forks()


async def userspace_daemon(k: Kernel, me: Task) -> None:
    """Poll, kill what the policy says, sleep what it says; repeat."""
    from trio.lowlevel import current_task   # a run's import: validate needs no Trio
    me.trio_task = current_task()
    k.log.emit("userspace_start", policy=me.comm)
    while watching(k):
        k.step(("userspace", "workbench_userspace_poll"))
        view = UserspaceView(meminfo(k), k.clock.now, k.zone.managed + k.swap.total, k)
        poll = k.policies.userspace_poll(view)
        if poll.kill is not None:
            kill(k, me, poll.kill, poll.reason, view.meminfo)
        await k.clock.sleep(me, poll.sleep_ns, TASK_INTERRUPTIBLE, "userspace poll")


def kill(k: Kernel, me: Task, proc: Process, reason: str, info: MemInfo) -> None:
    """kill(pid, SIGKILL) from user space: the group exits as after any
    SIGKILL; the OOM killer is not involved."""
    signal.send_sigkill(k, proc)
    k.log.emit("userspace_kill", pid=proc.pid, tgid=proc.pid, comm=proc.comm, policy=me.comm,
               reason=reason, mem_available_kb=info.mem_available_kb,
               mem_total_kb=info.mem_total_kb, anon_pages_kb=info.anon_pages_kb)
