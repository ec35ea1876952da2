"""Direct reclaim (mm/vmscan.c), reduced to what the OOM path depends on.

Reclaim frees clean page cache - first pages no one maps, then clean pages
mapped by processes (not mlocked), in task-list order - and, with free swap,
anonymous pages swapped out, split by swappiness (get_scan_count()).  Dirty
page cache is freed only once the flusher (writeback.py), which a round that
fell short wakes, has written it back.
A round costs reclaim_rate for the cache it freed and swap_rate for what it
swapped, or reclaim_round when it found nothing: that is what makes a
livelocked allocator advance the clock.  kswapd (kswapd.py) reclaims by the
same rules in the background; a direct reclaimer may first be throttled.

Progress is 4.5's: a global reclaim that frees nothing still reports
progress while the zone is zone_reclaimable() - fewer pages scanned
(NR_PAGES_SCANNED, raised by each such call's scan and reset to 0 by any page
freed to the buddy allocator) than six times the LRU pages that could be
reclaimed - so the allocator retries instead of calling the OOM killer.
Memcg reclaim reports only what it freed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import gfp as GFP
from workbench.kernel import kswapd, memcontrol, swap, writeback
from workbench.kernel.sched import TASK_UNINTERRUPTIBLE, Task

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.memcontrol import MemCgroup


DEF_PRIORITY = 12                 # include/linux/mmzone.h
ZONE_RECLAIMABLE_RATIO = 6        # zone_reclaimable(): scanned < reclaimable pages * 6


async def try_to_free_pages(k: Kernel, task: Task, want: int,
                            memcg: MemCgroup | None = None, gfp: int | None = None) -> int:
    """Reclaim up to `want` pages (from memcg only, for a memcg charge);
    returns the progress do_try_to_free_pages() reports, after paying the
    round's virtual time: the pages freed, or for a global reclaim that
    freed none, 1 while the zone is still zone_reclaimable()."""
    # Do not enter reclaim if fatal signal was delivered while throttled.
    # 1 is returned so that the page allocator does not OOM kill at this point.
    if memcg is None and gfp is not None and await kswapd.throttle_direct_reclaim(k, task, gfp):
        return 1
    io = gfp is None or GFP.io_allowed(gfp)          # swap-out needs __GFP_IO
    progress, cost = reclaim_round(k, want, memcg, io)
    if not progress and memcg is None and not k.features.reclaim_retries:
        progress = int(_scan_without_progress(k))
    await k.clock.sleep(task, cost, TASK_UNINTERRUPTIBLE, "direct reclaim")
    return progress


def reclaim_round(k: Kernel, want: int, memcg: MemCgroup | None,
                  io: bool = True) -> tuple[int, int]:
    """One pass of direct reclaim or kswapd: (pages freed, its virtual time).
    shrink() takes up to `want`; a shortfall means the scan met dirty pages it
    may not write, so the flusher is woken for it (wakeup_flusher_threads());
    the time is reclaim_rate for the cache freed and swap_rate for what was
    swapped out, or a reclaim_round when nothing was."""
    cache, swapped = shrink(k, max(want, 1), memcg, io)
    reclaimed = cache + swapped
    if reclaimed < want:
        writeback.wakeup_flusher_threads(k, want - reclaimed)
    m = k.machine
    if not reclaimed:
        return 0, m.reclaim_round_ns
    return reclaimed, ((m.cost_ns(cache, m.reclaim_rate) if cache else 0)
                       + (m.cost_ns(swapped, m.swap_rate) if swapped else 0))


def _scan_without_progress(k: Kernel) -> bool:
    """A do_try_to_free_pages() call that frees nothing, as 4.5 scans: the
    priority sweep DEF_PRIORITY..0, then once more with may_thrash (mm/vmscan.c
    do_try_to_free_pages(): "Untapped cgroup reserves?  Don't OOM, retry."),
    each pass scanning lru_size >> priority of the evictable LRUs
    (get_scan_count(); zone_reclaimable_pages() stands for them) and raising
    NR_PAGES_SCANNED, global reclaim only (shrink_inactive_list()).  Below
    DEF_PRIORITY a zone that is not zone_reclaimable() is skipped ("Let kswapd
    poll it").  Returns zones_reclaimable of the last pass: "Any of the zones
    still reclaimable?  Don't OOM."  (The 4.7 rework, the follow-up
    reclaim-retries-16, replaced this by should_reclaim_retry().)"""
    zone = k.zone
    lru = zone_reclaimable_pages(k)
    if not lru:        # every sweep adds 0 and no zone is reclaimable: the common livelock
        return False
    reclaimable = False
    for _may_thrash in (False, True):
        for priority in range(DEF_PRIORITY, -1, -1):
            if priority != DEF_PRIORITY and not zone_reclaimable(k, lru):
                reclaimable = False                  # skipped: does not set reclaimable
                continue
            zone.pages_scanned += lru >> priority
            reclaimable = zone_reclaimable(k, lru)
    return reclaimable


def zone_reclaimable_pages(k: Kernel) -> int:
    """mm/vmscan.c zone_reclaimable_pages(), 4.5: the file LRU (page cache,
    mapped or not, clean or dirty), plus the anon LRU (anonymous and shmem
    pages) while get_nr_swap_pages() > 0.  mlocked pages are on the
    unevictable LRU and count in neither."""
    nr = k.memcgs.page_cache()
    if k.file_vmas:
        nr += sum(v.file for _, v in k.file_vmas if not v.locked)
    if not k.swap.full():
        nr += sum(v.anon + v.shmem + v.shmem_unmapped for mm in _mms(k) for v in mm.vmas
                  if not v.locked)
    return nr


def zone_reclaimable(k: Kernel, reclaimable_pages: int | None = None) -> bool:
    """NR_PAGES_SCANNED < zone_reclaimable_pages() * 6."""
    if reclaimable_pages is None:
        reclaimable_pages = zone_reclaimable_pages(k)
    return k.zone.pages_scanned < reclaimable_pages * ZONE_RECLAIMABLE_RATIO


def _mms(k: Kernel) -> list:
    """Every live address space once (sharers hold the same mm)."""
    mms: dict[int, object] = {}
    for p in k.for_each_process():
        if p.mm is not None and p.mm.mm_users:
            mms.setdefault(id(p.mm), p.mm)
    return list(mms.values())


def shrink(k: Kernel, want: int, memcg: MemCgroup | None,
           io: bool = True) -> tuple[int, int]:
    """(page-cache pages freed, anonymous pages swapped out and freed).
    get_scan_count(), simplified: with clean page cache to take, swappiness/200
    of the pages from anon (SCAN_FRACT with equal rotation ratios), the rest
    from the cache, and each side's shortfall from the other; with none, all
    from anon (SCAN_ANON); no free swap, or a memcg at its memsw limit
    (may_swap = false): none from anon (SCAN_FILE)."""
    may_swap = io and not k.swap.full() and not (memcg is not None and memcg.memsw_full())
    if not may_swap:
        return _shrink_file(k, want, memcg), 0
    anon = want * k.machine.swappiness // 200
    got = _shrink_file(k, want - anon, memcg)
    swapped = _shrink_anon(k, want - got, memcg)
    if got + swapped < want:
        got += _shrink_file(k, want - got - swapped, memcg)
    return got, swapped


def _shrink_file(k: Kernel, want: int, memcg: MemCgroup | None) -> int:
    got = 0
    for cg in k.memcgs.scope(memcg):
        n = min(want - got, cg.cache_clean)
        if n:
            cg.cache_clean -= n
            memcontrol.free_pages(k, cg, n)
            got += n
    for mm, vma in k.file_vmas:                  # mapped page cache, in fork order
        if got == want:
            break
        if vma.locked or (memcg is not None and mm.memcg is not memcg):
            continue
        n = min(want - got, vma.file - vma.dirty)
        if n:
            mm.sub_file(vma, n, 0)
            memcontrol.free_pages(k, mm.memcg, n)
            got += n
    return got


def _shrink_anon(k: Kernel, want: int, memcg: MemCgroup | None) -> int:
    """shrink_page_list() for anonymous pages: add_to_swap(), try_to_unmap(),
    pageout() and, the write done, the page freed (the two scans in one)."""
    got = 0
    for mm in _mms(k):                           # fork order
        if got >= want or k.swap.full():
            break
        if memcg is not None and mm.memcg is not memcg:
            continue
        for vma in mm.vmas:
            if got >= want:
                break
            if vma.anonymous and not vma.locked and vma.anon:
                got += swap.swap_out(k, mm, vma, want - got)
    return got


def reclaimable(k: Kernel) -> int:
    """Pages reclaim could still free: clean page cache, mapped or not
    (zone_reclaimable_pages() without swap)."""
    return sum(cg.cache_clean for cg in k.memcgs.scope(None)) + sum(
        v.file - v.dirty for _, v in k.file_vmas if not v.locked)
