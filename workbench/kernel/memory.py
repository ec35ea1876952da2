"""Page faults and unmapping (mm/memory.c).

A fault chunk takes mmap_sem for read with an uninterruptible down_read()
(4.5 x86 __do_page_fault), allocates the pages and any new page-table pages,
charges the memcg, pays fault_rate for the work and releases the lock.  A
fault that cannot get its pages returns VM_FAULT_OOM and the arch code calls
pagefault_out_of_memory(); user space then retries the instruction.

zap() is unmap_page_range() with the seed's zap_details: anonymous pages and
swap entries are freed; page-cache pages are only unmapped (the page cache
keeps them, now unmapped and, if clean, reclaimable); shmem pages stay with
the shm object until its last mapping goes away in exit_mmap().
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import gfp as GFP
from workbench.kernel import memcontrol, oom_kill, page_alloc, signal, swap
from workbench.kernel.mm import MmStruct, Vma
from workbench.kernel.sched import TASK_UNINTERRUPTIBLE, Task
from workbench.policy import ZapDetails

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


async def fault_in(k: Kernel, task: Task, vma: Vma, pages: int, gfp: int) -> None:
    """User page faults over `pages` pages of vma, a chunk at a time; a chunk
    that fails is retried, as user space re-executes the faulting access,
    until it maps or the thread has a fatal signal to take."""
    remaining = pages
    while remaining and not task.fatal_signal_pending():
        n = min(remaining, k.fault_chunk)
        mapped = await handle_mm_fault(k, task, vma, n, gfp)
        if mapped < 0:                                   # SIGSEGV
            break
        remaining -= mapped
        if mapped < n:
            if _enomem(task, vma, gfp) or (mapped and task.fatal_signal_pending()):
                break                                    # a dying task's last fault mapped
            await pagefault_out_of_memory(k, task)
    memcontrol.end_stall(k, task, ok=False)              # killed while over the limit


def _enomem(task: Task, vma: Vma, gfp: int) -> bool:
    """A charge without __GFP_FS stands for a charge from kernel context:
    4.5 arms memcg OOM only in user faults, so it fails with -ENOMEM and the
    step fails (4.5 mm/memory.c handle_mm_fault() calls mem_cgroup_oom_enable()
    only for FAULT_FLAG_USER).  Any other shortfall is VM_FAULT_OOM."""
    return not GFP.fs_allowed(gfp) and task.memcg_oom is None and not vma.hugetlb_page


async def handle_mm_fault(k: Kernel, task: Task, vma: Vma, n: int, gfp: int) -> int:
    """One chunk of faults: the pages mapped, or -1 for SIGSEGV."""
    mm = task.mm
    await mm.mmap_sem.down_read(task, TASK_UNINTERRUPTIBLE)
    try:
        if vma.resident + vma.shmem_unmapped + n > vma.size:
            _segv(k, task, vma)
            return -1
        swapped_in = 0
        if vma.hugetlb_page:
            mapped = n                                   # from the preallocated pool
            mm.add_pages(vma, n)
        else:
            mapped, swapped_in = await _alloc_and_charge(k, task, mm, vma, n, gfp)
        m = k.machine
        if mapped - swapped_in:
            await k.clock.sleep(task, m.cost_ns(mapped - swapped_in, m.fault_rate),
                                TASK_UNINTERRUPTIBLE, "page fault")
        if swapped_in:                                   # do_swap_page(): a major fault
            await k.clock.sleep(task, m.cost_ns(swapped_in, m.swap_rate),
                                TASK_UNINTERRUPTIBLE, "swap in")
        return mapped
    finally:
        mm.mmap_sem.up_read()


async def _alloc_and_charge(k: Kernel, task: Task, mm: MmStruct, vma: Vma, n: int,
                            gfp: int) -> tuple[int, int]:
    """(pages mapped, of which swapped in).  A program touches a VMA in
    order: the part never touched first (do_anonymous_page()), then the pages
    swapped out (do_swap_page())."""
    ptes = mm.ptes_for(vma, n)
    got = await page_alloc.alloc_pages(k, task, n + ptes, gfp)
    # Part of a chunk (a dying task's last page, say) needs fewer page tables.
    data = got - ptes if got == n + ptes else _fits(mm, vma, got)
    charged = await memcontrol.try_charge(k, task, mm.memcg, data, gfp,
                                          may_oom=GFP.fs_allowed(gfp))
    # Another thread may have faulted into the VMA meanwhile: stay inside it,
    # and map only what the pages granted can also hold page tables for (its
    # faults may need a page-table page this request did not count).  The
    # rest is a failed __pte_alloc(): VM_FAULT_OOM, as 4.5 handles it.
    fit = _fits(mm, vma, got, min(charged, vma.size - (vma.resident + vma.shmem_unmapped)))
    if charged > fit:
        memcontrol.uncharge(k, mm.memcg, charged - fit)
        charged = fit
    untouched = max(0, vma.size - (vma.resident + vma.shmem_unmapped + vma.swap))
    swapped_in = min(max(0, charged - untouched), vma.swap)
    if swapped_in:
        swap.swap_in(k, mm, vma, swapped_in)
    new_ptes = mm.add_pages(vma, charged)
    k.zone.pgtables += new_ptes
    k.zone.give(got - charged - new_ptes)               # pages not used after all
    return charged, swapped_in


def _fits(mm: MmStruct, vma: Vma, got: int, most: int | None = None) -> int:
    """The most pages (at most `most`) that `got` pages can map in vma with
    the page tables they need."""
    fit = got if most is None else most
    while fit and fit + mm.ptes_for(vma, fit) > got:
        fit = max(0, got - mm.ptes_for(vma, fit))       # ptes_for grows with fit: converges
    return fit


async def pagefault_out_of_memory(k: Kernel, task: Task) -> None:
    """A fault returned VM_FAULT_OOM: a pending memcg OOM is handled first;
    otherwise a global OOM with gfp_mask 0, only if oom_lock is free."""
    if await memcontrol.mem_cgroup_oom_synchronize(k, task, True):
        return
    if k.features.pagefault_oom_no_kill:            # 5.16: "Retrying PF"
        return
    if not k.oom_lock.trylock(task):
        return
    try:
        await oom_kill.out_of_memory(k, task, 0, None)
    finally:
        k.oom_lock.unlock(task)


def _segv(k: Kernel, task: Task, vma: Vma) -> None:
    k.log.emit("segv", pid=task.pid, tgid=task.tgid, comm=task.comm, vma=vma.name)
    signal.group_exit(k, task.process, 139)


# -- unmapping ---------------------------------------------------------------------

EXIT = None
"""zap() details for exit_mmap() and munmap(): everything goes."""


def zap(k: Kernel, mm: MmStruct, vma: Vma, details: ZapDetails | None,
        budget: int) -> tuple[int, int, int]:
    """unmap_page_range() over at most `budget` pages and swap entries of vma.

    Returns (ptes processed, pages freed, swap entries freed)."""
    done = freed = 0
    memcg = mm.memcg
    n = min(budget, vma.anon)
    if n:
        mm.sub_anon(vma, n)
        memcontrol.free_pages(k, memcg, n)
        done += n
        freed += n
    entries = 0
    if _zaps_swap(details):
        entries = min(budget - done, vma.swap)
        if entries:
            swap.free_swap_and_cache(k, mm, vma, entries)   # rss[MM_SWAPENTS]--
            done += entries
    clean = vma.file - vma.dirty
    n = min(budget - done, clean)
    if n:
        mm.sub_file(vma, n, 0)
        memcontrol.page_cache_add(memcg, clean=n)
        done += n
    if details is None or not details.ignore_dirty:
        n = min(budget - done, vma.dirty)
        if n:
            mm.sub_file(vma, n, n)                       # set_page_dirty()
            memcontrol.page_cache_add(memcg, dirty=n)
            done += n
    n = min(budget - done, vma.shmem)
    if n:
        mm.sub_shmem(vma, n)
        done += n
        if details is EXIT:                              # the mapping and its object go
            memcontrol.free_pages(k, memcg, n)
            freed += n
        else:
            vma.shmem_unmapped += n                      # the shm object still holds them
    return done, freed, entries


def _zaps_swap(details: ZapDetails | None) -> bool:
    """zap_pte_range(), with the seed: "only check swap_entries if explicitly
    asked for in details" - exit and munmap pass NULL details, which zap
    them all; stock 4.5 leaves them for any details."""
    return details is None or details.check_swap_entries


def zappable(vma: Vma, details: ZapDetails | None) -> int:
    """Pages and swap entries zap() would still process in vma."""
    pages = vma.anon + vma.file + vma.shmem
    if details is not None and details.ignore_dirty:
        pages -= vma.dirty
    if _zaps_swap(details):
        pages += vma.swap
    return pages
