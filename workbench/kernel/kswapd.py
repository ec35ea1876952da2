"""kswapd and direct-reclaim throttling (mm/vmscan.c, 4.5).

kswapd0 is the node's background reclaimer.  An allocation that enters the
slow path (the fast path failed the low watermark) wakes it at every
`retry:` (wake_all_kswapds() -> wakeup_kswapd(), unless the zone is already
balanced: free above the high watermark).  balance_pgdat() reclaims, pass by
pass from DEF_PRIORITY down to 1, what the zone lacks up to its high
watermark (kswapd_shrink_zone(): clean page cache, then anonymous pages to
swap), raising NR_PAGES_SCANNED as global reclaim does, until the zone is
balanced - or, since pgdat_balanced() counts a zone that is not
zone_reclaimable() as balanced, until there is nothing it could reclaim.
After each pass it wakes the direct reclaimers throttled on pfmemalloc_wait
if pfmemalloc_watermark_ok(); before it sleeps it wakes them all
(prepare_kswapd_sleep()), naps HZ/10 and, if nobody woke it meanwhile,
sleeps until the next wakeup_kswapd().

throttle_direct_reclaim(): a direct reclaimer (not a kthread, no fatal signal
pending) finds free pages at or below half the min watermark of a zone that
has reclaimable pages (pfmemalloc_watermark_ok() fails, and wakes kswapd):
with __GFP_FS it waits, killable, until kswapd wakes it with the condition
holding; without, it waits up to HZ (1 s).  Frees by other tasks do not wake
it.  A throttled task that a SIGKILL ends returns "progress" (1) so that it
does not OOM-kill: try_to_free_pages() in 4.5.

The model: kswapd0 is a simulated task off the task list, with no pid (the
oom_reaper is pid 2 and the scenario's processes follow; giving kswapd a pid
would renumber every process of every log).  It starts the first time it is
woken with reclaimable pages in the zone: a kswapd woken with nothing to
reclaim finds the zone balanced (not zone_reclaimable()) and sleeps again at
once, which changes nothing, so machines that never have page cache or free
swap never run it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import gfp as GFP
from workbench.kernel import vmscan
from workbench.kernel.sched import (TASK_INTERRUPTIBLE, TASK_KILLABLE, TASK_UNINTERRUPTIBLE,
                                    Process, Task, WaitQueue, block, wake_up_task)
from workbench.units import kb, seconds

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel

SWAP_CLUSTER_MAX = 32             # include/linux/swap.h


class Kswapd:
    """pgdat->kswapd_wait, pgdat->pfmemalloc_wait and the thread."""

    def __init__(self, k: Kernel):
        self.k = k
        self.wait = WaitQueue(k)            # kswapd_wait
        self.pfmemalloc_wait = WaitQueue(k)
        self.task: Task | None = None
        self.sleeping = False


def zone_balanced(k: Kernel) -> bool:
    """zone_watermark_ok_safe(zone, 0, high_wmark_pages(zone), ...) for order 0."""
    return k.zone.free > k.zone.wmark_high


def pgdat_balanced(k: Kernel) -> bool:
    """A zone that is not zone_reclaimable() counts as balanced ("balance_pgdat()
    skips over all_unreclaimable after DEF_PRIORITY")."""
    return not vmscan.zone_reclaimable(k) or zone_balanced(k)


def wakeup_kswapd(k: Kernel) -> None:
    """wake_all_kswapds() at the slow path's retry:, and pfmemalloc_watermark_ok()."""
    ks = k.kswapd
    if zone_balanced(k):
        return
    if ks.task is None:
        if not vmscan.zone_reclaimable_pages(k):
            return                           # it would find the zone balanced and sleep
        proc = Process(0, "kswapd0", uid=0, oom_score_adj=0, parent=None, kthread=True)
        ks.task = Task(0, proc, "kswapd0", None)
        k.log.emit("kswapd_start", free_kb=kb(k.zone.free), high_kb=kb(k.zone.wmark_high))
        k.spawn(kswapd, k, ks.task)
        return
    if ks.sleeping and ks.wait:
        ks.wait.wake_up_all()                # wake_up_interruptible(&pgdat->kswapd_wait)


def pfmemalloc_watermark_ok(k: Kernel) -> bool:
    """Free pages above half the min watermark, for a zone with reclaimable
    pages (none: no reserve, no throttling); a failure wakes kswapd."""
    if not vmscan.zone_reclaimable_pages(k):
        return True
    ok = k.zone.free > k.zone.wmark_min // 2
    if not ok:
        wakeup_kswapd(k)
    return ok


async def throttle_direct_reclaim(k: Kernel, task: Task, gfp: int) -> bool:
    """True: a fatal signal came while throttled (the caller reports progress
    without reclaiming)."""
    if task.process.kthread or task.fatal_signal_pending() or pfmemalloc_watermark_ok(k):
        return False
    ks = k.kswapd
    since = k.clock.now
    if not GFP.fs_allowed(gfp):
        # wait_event_interruptible_timeout(pgdat->pfmemalloc_wait, ..., HZ)
        await _wait_timeout(k, ks.pfmemalloc_wait, task, k.machine.hz * k.jiffy_ns)
    else:
        # wait_event_killable(): re-check on every wake; each check that fails wakes kswapd
        while not pfmemalloc_watermark_ok(k):
            if not await ks.pfmemalloc_wait.wait(task, TASK_KILLABLE, "pfmemalloc_wait"):
                break
    k.log.emit("reclaim_throttle", pid=task.pid, tgid=task.tgid, comm=task.comm, gfp_mask=gfp,
               since=seconds(since), wait_s=seconds(k.clock.now - since),
               killed=task.fatal_signal_pending())
    return task.fatal_signal_pending()


async def _wait_timeout(k: Kernel, wq: WaitQueue, task: Task, ns: int) -> None:
    """Wait on wq, interruptibly, for at most ns: a helper wakes the task at
    the deadline if nobody has (whoever takes it off the queue wakes it)."""
    item = (task, object())            # this wait's own entry (tuples compare by value)

    async def timeout() -> None:
        await k.clock.wait_until(k.clock.now + ns)
        if item in wq._waiters:
            wq._waiters.remove(item)
            wake_up_task(k, task)

    k.spawn(timeout)
    wq._waiters.append(item)

    def dequeue() -> None:
        if item in wq._waiters:
            wq._waiters.remove(item)
    await block(k, task, TASK_INTERRUPTIBLE, "pfmemalloc_wait", dequeue)


async def kswapd(k: Kernel, me: Task) -> None:
    """kswapd(): balance_pgdat(), then kswapd_try_to_sleep(), for ever."""
    from trio.lowlevel import current_task      # Trio only once a run starts it
    me.trio_task = current_task()
    while True:
        k.step()
        if pgdat_balanced(k):
            await _try_to_sleep(k, me)
            continue
        await balance_pgdat(k, me)


async def _try_to_sleep(k: Kernel, me: Task) -> None:
    """kswapd_try_to_sleep(): prepare_kswapd_sleep() wakes the throttled
    reclaimers; a HZ/10 nap; then, still balanced and not woken, sleep."""
    ks = k.kswapd
    ks.pfmemalloc_wait.wake_up_all()
    ks.sleeping = True
    woken = await _nap(k, me, k.machine.hz // 10 * k.jiffy_ns)
    if not woken and pgdat_balanced(k):
        k.log.emit("kswapd_sleep", free_kb=kb(k.zone.free))
        await ks.wait.wait(me, TASK_INTERRUPTIBLE, "idle")
        k.log.emit("kswapd_wake", free_kb=kb(k.zone.free))
    ks.sleeping = False


async def _nap(k: Kernel, me: Task, ns: int) -> bool:
    """schedule_timeout(HZ/10) on kswapd_wait: True if woken before it ran out."""
    ks = k.kswapd
    before = k.clock.now
    await _wait_timeout(k, ks.wait, me, ns)
    return k.clock.now - before < ns


async def balance_pgdat(k: Kernel, me: Task) -> None:
    """Reclaim towards the high watermark (kswapd_shrink_zone(): nr_to_reclaim
    = max(SWAP_CLUSTER_MAX, high_wmark_pages)), a quantum's worth at a time,
    from DEF_PRIORITY down to 1: a pass that reclaims keeps its priority
    (raise_priority = false), one that frees nothing scans at it, raising
    NR_PAGES_SCANNED, and lowers it.  After each pass the throttled reclaimers
    are woken if pfmemalloc_watermark_ok(); balanced, it returns."""
    zone, m = k.zone, k.machine
    priority = vmscan.DEF_PRIORITY
    while priority >= 1:
        k.step()
        if priority != vmscan.DEF_PRIORITY and not vmscan.zone_reclaimable(k):
            return                               # "Let kswapd poll it": balanced
        want = min(max(SWAP_CLUSTER_MAX, zone.wmark_high + 1 - zone.free),
                   m.chunk(m.reclaim_rate))
        # A shortfall wakes the flusher: kswapd's pageout() of a ZONE_DIRTY
        # zone's file pages is the flusher's work here.
        reclaimed, cost = vmscan.reclaim_round(k, want, None)
        if not reclaimed:
            zone.pages_scanned += vmscan.zone_reclaimable_pages(k) >> priority
            priority -= 1
        await k.clock.sleep(me, cost, TASK_UNINTERRUPTIBLE, "kswapd")
        if k.kswapd.pfmemalloc_wait and pfmemalloc_watermark_ok(k):
            k.kswapd.pfmemalloc_wait.wake_up_all()
        if pgdat_balanced(k):
            return
