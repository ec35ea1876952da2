"""The zone and the page allocator of Linux 4.5 (mm/page_alloc.c).

One ZONE_NORMAL.  A request is a chunk of order-0 pages sized by virtual time
(fault_rate x quantum), granted page by page as the kernel would: each page
passes while free pages stay above the watermark, so a chunk can be granted
in part.  What the fast path cannot give goes through 4.5's slow path: the
min watermark, reserves for TIF_MEMDIE, direct reclaim of clean page cache,
the unbounded "any progress, retry" loop, then __alloc_pages_may_oom().
Every round costs virtual time, so a livelock advances the clock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from workbench.kernel import gfp as GFP
from workbench.kernel import kswapd, oom_kill, vmscan
from workbench.kernel.sched import TASK_UNINTERRUPTIBLE, Task

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel


def min_free_kbytes_for(lowmem_kbytes: int) -> int:
    """init_per_zone_wmark_min(): int_sqrt(lowmem_kbytes * 16) clamped to
    [128, 65536] kB (4.5; raised to 256 MB later)."""
    return max(128, min(65536, math.isqrt(lowmem_kbytes * 16)))


class Zone:
    """ZONE_NORMAL: free pages, watermarks and where the used pages are."""

    def __init__(self, k: Kernel, managed: int, min_free_kbytes: int):
        self.k = k
        self.managed = managed
        self.free = managed
        # __setup_per_zone_wmarks(), 4.5: low = min + min/4, high = min + min/2
        self.wmark_min = min_free_kbytes // 4
        self.wmark_low = self.wmark_min + self.wmark_min // 4
        self.wmark_high = self.wmark_min + self.wmark_min // 2
        # NR_PAGES_SCANNED: LRU pages global reclaim scanned since a page was
        # last freed to the buddy allocator (mm/vmscan.c zone_reclaimable(), 4.5)
        self.pages_scanned = 0
        self.kernel = 0        # kalloc: slab and other kernel pages
        self.pgtables = 0      # page-table pages
        self.hugetlb = 0       # the persistent hugetlb pool

    def take(self, n: int, mark: int) -> int:
        """Grant up to n order-0 pages, each while free > mark
        (__zone_watermark_ok for order 0); mark < 0 means no watermark."""
        grant = min(n, self.free - mark if mark >= 0 else self.free)
        if grant <= 0:
            return 0
        self.free -= grant
        return grant

    def give(self, n: int) -> None:
        """Pages back to the buddy lists.  free_pcppages_bulk() and
        free_one_page() set NR_PAGES_SCANNED to 0 (not down by n): any free
        makes the zone reclaimable again (4.5; exact to one pcp batch)."""
        if n > 0:
            self.pages_scanned = 0
        self.free += n
        if self.free > self.managed:
            self.k.violation(f"free pages {self.free} above the zone's {self.managed}")
            self.free = self.managed


NO_WATERMARKS = -1


def oom_victim(k: Kernel, task: Task) -> bool:
    """Whether task may use the OOM reserves: TIF_MEMDIE in 4.5, any thread
    of a victim process from 4.14 (tsk_is_oom_victim())."""
    return task.tif_memdie or (k.features.partial_reserves and task.process.oom_mm is not None)


def gfp_to_alloc_mark(k: Kernel, task: Task, gfp: int) -> tuple[int, bool]:
    """gfp_to_alloc_flags(): the min watermark, lowered by half for
    __GFP_HIGH and by a further quarter for atomic callers, and whether
    ALLOC_NO_WATERMARKS is granted (TIF_MEMDIE, unless __GFP_NOMEMALLOC).
    From 4.14 a victim gets ALLOC_OOM instead: half the min watermark
    (mm/page_alloc.c __zone_watermark_ok(), 4.14)."""
    mark = k.zone.wmark_min
    if GFP.high(gfp):
        mark -= mark // 2
    if GFP.atomic(gfp):
        mark -= mark // 4
    reserves = oom_victim(k, task) and not GFP.nomemalloc(gfp)
    if reserves and k.features.partial_reserves:
        return k.zone.wmark_min - k.zone.wmark_min // 2, False
    return mark, reserves


async def alloc_pages(k: Kernel, task: Task, n: int, gfp: int) -> int:
    """__alloc_pages_nodemask(): the fast path at the low watermark, then the
    slow path for the rest.  Returns the pages granted (n, or fewer when the
    request failed)."""
    got = k.zone.take(n, k.zone.wmark_low)
    if got == n:
        return got
    stall = k.stall_begin(task, n - got, gfp)
    rest = 0
    try:
        rest = await __alloc_pages_slowpath(k, task, n - got, gfp)
    finally:
        k.stall_end(stall, rest == n - got)
    return got + rest


async def __alloc_pages_slowpath(k: Kernel, task: Task, n: int, gfp: int) -> int:
    """The pages granted.  A chunk stands for n order-0 allocations; once the
    task has a fatal signal, the allocation in progress is its last - it
    returns to die - so a dying task takes one page here, not a chunk (the
    caller stops at the signal)."""
    zone = k.zone
    got = 0
    no_progress_loops = 0
    while True:                                       # retry:
        k.step()
        if GFP.kswapd_reclaim(gfp):
            kswapd.wakeup_kswapd(k)                   # wake_all_kswapds()
        mark, no_watermarks = gfp_to_alloc_mark(k, task, gfp)
        got += zone.take(_want(task, n, got), mark)
        if got < n and no_watermarks:
            got += zone.take(_want(task, n, got), NO_WATERMARKS)  # the reserves, once
        if got == n or (got and task.fatal_signal_pending()):
            return got
        # Caller is not willing to reclaim, we can't balance anything.
        if not GFP.can_direct_reclaim(gfp):
            return warn_alloc_failed(k, task, got, gfp)
        # Avoid allocations with no watermarks from looping endlessly.
        if oom_victim(k, task) and not GFP.nofail(gfp):
            return warn_alloc_failed(k, task, got, gfp)
        progress = await vmscan.try_to_free_pages(k, task, mark + (n - got) - zone.free,
                                                  gfp=gfp)
        got += zone.take(_want(task, n, got), mark)
        if got == n or (got and task.fatal_signal_pending()):
            return got
        if GFP.noretry(gfp):
            return warn_alloc_failed(k, task, got, gfp)
        # Keep reclaiming while there is progress: 4.5 retries order-0
        # requests without bound.  wait_iff_congested() does not sleep when no
        # backing device is congested, and none is modelled.
        no_progress_loops = 0 if progress else no_progress_loops + 1
        if progress or should_reclaim_retry(k, n - got, mark, no_progress_loops):
            continue
        granted, progress = await __alloc_pages_may_oom(k, task, _want(task, n, got), gfp)
        got += granted
        if got == n:
            return got
        if not progress:
            return warn_alloc_failed(k, task, got, gfp)


def _want(task: Task, n: int, got: int) -> int:
    return min(n - got, 1) if task.fatal_signal_pending() else n - got


def should_reclaim_retry(k: Kernel, want: int, mark: int, no_progress_loops: int) -> bool:
    """4.7 (reclaim_retries): after a round without progress, retry while
    fewer than MAX_RECLAIM_RETRIES rounds in a row made none and what reclaim
    could still free would lift the zone over the watermark.  4.5 goes to the
    OOM killer at once."""
    retries = k.features.reclaim_retries
    if not retries or no_progress_loops > retries:
        return False
    return k.zone.free + vmscan.reclaimable(k) >= mark + want


async def __alloc_pages_may_oom(k: Kernel, task: Task, n: int, gfp: int) -> tuple[int, bool]:
    """(pages granted, did_some_progress)."""
    oom_lock = k.oom_lock
    if not oom_lock.trylock(task):
        # Somebody else is killing: sleep one jiffy and report progress, so the
        # caller retries the whole slow path instead of waiting on the mutex.
        await k.clock.sleep(task, k.jiffy_ns, TASK_UNINTERRUPTIBLE, "oom_lock")
        return 0, True
    try:
        # One more try at the high watermark, only to catch a parallel kill.
        got = k.zone.take(n, k.zone.wmark_high)
        if got:
            return got, True            # this page is allocated: no kill on its behalf
        # (PF_DUMPCORE's early exit is not reachable: core dumps are not modelled.)
        if not GFP.nofail(gfp) and not GFP.fs_allowed(gfp) and not k.features.reclaim_retries:
            return got, True            # no OOM kill for !__GFP_FS: keep looping "as per tradition"
        await oom_kill.out_of_memory(k, task, gfp, None)
        if GFP.nofail(gfp):
            got += k.zone.take(n - got, NO_WATERMARKS)
        return got, True
    finally:
        oom_lock.unlock(task)


def _failure_line(k: Kernel, task: Task, gfp: int) -> str:
    line = f"{task.comm}: page allocation failure: order:0, mode:{oom_kill.show_gfp(k, gfp)}"
    if k.features.modern_oom_report:      # 6.19 warn_alloc(): the nodemask and cpuset too
        line += ", nodemask=(null),cpuset=/,mems_allowed=0"
    return line


def warn_alloc_failed(k: Kernel, task: Task, got: int, gfp: int) -> int:
    if not GFP.nowarn(gfp) and k.nopage_ratelimit.allow(k.clock.now):
        k.log.emit("alloc_fail", pid=task.pid, tgid=task.tgid, comm=task.comm, gfp_mask=gfp,
                   order=0, msg=_failure_line(k, task, gfp))
    return got
