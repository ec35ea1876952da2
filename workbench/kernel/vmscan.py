"""Direct reclaim (mm/vmscan.c), reduced to what the OOM path depends on.

With no swap, the only memory reclaim can free is clean page cache: first
pages no one maps, then clean pages mapped by processes (not mlocked), in
task-list order.  Dirty page cache needs writeback, which is not modelled, so
it is never reclaimed.  A round costs reclaim_rate for what it freed, or
reclaim_round when it found nothing: that is what makes a livelocked
allocator advance the clock.  kswapd is not modelled; every
allocator reclaims for itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import memcontrol
from workbench.kernel.sched import TASK_UNINTERRUPTIBLE, Task

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.memcontrol import MemCgroup


async def try_to_free_pages(k: Kernel, task: Task, want: int,
                            memcg: MemCgroup | None = None) -> int:
    """Reclaim up to `want` pages (from memcg only, for a memcg charge);
    returns the pages freed, after paying their virtual time."""
    reclaimed = _shrink(k, max(want, 1), memcg)
    m = k.machine
    cost = m.cost_ns(reclaimed, m.reclaim_rate) if reclaimed else m.reclaim_round_ns
    await k.clock.sleep(task, cost, TASK_UNINTERRUPTIBLE, "direct reclaim")
    return reclaimed


def _shrink(k: Kernel, want: int, memcg: MemCgroup | None) -> int:
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


def reclaimable(k: Kernel) -> int:
    """Pages reclaim could still free: clean page cache, mapped or not
    (zone_reclaimable_pages() without swap)."""
    return sum(cg.cache_clean for cg in k.memcgs.scope(None)) + sum(
        v.file - v.dirty for _, v in k.file_vmas if not v.locked)
