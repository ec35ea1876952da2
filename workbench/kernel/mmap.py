"""Tearing address spaces down (mm/mmap.c).

exit_mmap() runs when the last mm_users reference goes, in whoever's context
dropped it, without mmap_sem (4.5): munlock every VM_LOCKED VMA (paid at
exit_rate, a pass that frees nothing), unmap every VMA at exit_rate, free
the page tables.  munmap() - the workload's `free` step - takes mmap_sem for
write, which 4.5 does uninterruptibly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import memcontrol, memory
from workbench.kernel.mm import MmStruct, Vma
from workbench.kernel.sched import TASK_UNINTERRUPTIBLE, Task
from workbench.units import kb

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


async def exit_mmap(k: Kernel, task: Task, mm: MmStruct) -> None:
    """From 4.14 (exit_mmap_oom_skip) the reaper may still be at work: the
    unmap runs under mmap_sem for read, alongside it, then MMF_OOM_SKIP is set
    and mmap_sem taken for write, which waits the reaper out, before the page
    tables go (mm/mmap.c exit_mmap(), 6.19)."""
    rate = k.machine.exit_rate
    if not k.features.no_munlock_pass:                   # munlock_vma_pages_all(), until 5.18
        await _pay(k, task, sum(v.resident for v in mm.vmas if v.locked), rate, "munlock")
    concurrent = k.features.exit_mmap_oom_skip
    if concurrent:
        await mm.mmap_sem.down_read(task, TASK_UNINTERRUPTIBLE)
    freed = swap_freed = 0
    for vma in mm.vmas:
        while memory.zappable(vma, memory.EXIT) or vma.shmem_unmapped or vma.hugetlb:
            done, n, entries = _unmap_chunk(k, mm, vma, k.exit_chunk)
            freed += n
            swap_freed += entries
            await _pay(k, task, done, rate, "exit_mmap")
    if concurrent:
        mm.mmap_sem.up_read()
        if mm.oom_victim and not mm.oom_skip:
            k.log.emit("oom_skip", pid=task.pid, tgid=task.tgid, comm=task.comm, mm=mm.id,
                       by="exit_mmap")
        mm.oom_skip = True                               # hide it from the killer and reaper
        await mm.mmap_sem.down_write(task, TASK_UNINTERRUPTIBLE)
        mm.mmap_sem.up_write(task)
    k.file_vmas = [(m, v) for m, v in k.file_vmas if m is not mm]
    pgtables = mm.nr_ptes + mm.nr_pmds                   # free_pgtables()
    mm.nr_ptes = mm.nr_pmds = 0
    k.zone.pgtables -= pgtables
    k.zone.give(pgtables)
    freed += pgtables
    swap = {"swap_kb": kb(swap_freed)} if k.swap.total else {}   # unmap_vmas(): NULL details
    k.log.emit("exit_mmap", mm=mm.id, pid=task.pid, comm=task.comm, freed_kb=kb(freed), **swap)


def _unmap_chunk(k: Kernel, mm: MmStruct, vma: Vma, budget: int) -> tuple[int, int, int]:
    """One chunk of unmap_vmas(): (pages processed, pages freed, swap entries
    freed).  The shm object goes with its last mapping; hugetlb pages return
    to their pool."""
    done, freed, entries = memory.zap(k, mm, vma, memory.EXIT, budget)
    n = min(budget - done, vma.shmem_unmapped)
    if n:
        vma.shmem_unmapped -= n
        memcontrol.free_pages(k, mm.memcg, n)
        done += n
        freed += n
    n = min(budget - done, vma.hugetlb)
    if n:
        vma.hugetlb -= n
        done += n
    return done, freed, entries


async def do_munmap(k: Kernel, task: Task, vma: Vma, pages: int) -> None:
    """Release up to `pages` of vma's memory under mmap_sem held for write."""
    mm = task.mm
    await mm.mmap_sem.down_write(task, TASK_UNINTERRUPTIBLE)
    try:
        while pages > 0:
            done, _, _ = _unmap_chunk(k, mm, vma, min(pages, k.exit_chunk))
            if not done:
                break
            pages -= done
            await _pay(k, task, done, k.machine.exit_rate, "munmap")
    finally:
        mm.mmap_sem.up_write(task)


async def _pay(k: Kernel, task: Task, pages: int, rate: int, what: str) -> None:
    """The virtual time that handling `pages` takes, a quantum at a time."""
    chunk = k.machine.chunk(rate)
    while pages > 0:
        n = min(pages, chunk)
        await k.clock.sleep(task, k.machine.cost_ns(n, rate), TASK_UNINTERRUPTIBLE, what)
        pages -= n
