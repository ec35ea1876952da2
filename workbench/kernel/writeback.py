"""Writeback of dirty page cache by the flusher (fs/fs-writeback.c, mm/page-writeback.c, 4.5).

Reclaim never writes dirty file pages itself (shrink_page_list(): direct
reclaim marks them PageReclaim and keeps them; kswapd writes only for a zone
flagged ZONE_DIRTY).  What cleans them is the flusher: do_try_to_free_pages()
calls wakeup_flusher_threads(total_scanned) once a reclaim has scanned more
than 1.5 x nr_to_reclaim, and the flusher writes that many pages out
asynchronously.  Written back, a page is clean page cache that the next
reclaim can free.

The model: one flusher, a simulated task off the task list with no pid, as
kswapd0 is.  A reclaim round that could not get what it wanted from clean
page cache and swap, while dirty page cache exists, wakes it with the
shortfall (at least SWAP_CLUSTER_MAX pages); it cleans dirty pages - mapped
ones (their pte made clean: clear_page_dirty_for_io()) in fork order, then
unmapped ones cgroup by cgroup - at `machine.writeback_rate`, a quantum's
worth at a time, until it has written what it was asked for; a later wake
adds to that.  It starts the first time it is woken, so a machine without
dirty page cache never runs it.  No periodic writeback (dirty_expire_interval,
dirty_background_ratio) and no throttling of dirtiers (balance_dirty_pages()):
dirty pages appear only at process start (`dirty`) and from munmap/exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel.sched import (TASK_INTERRUPTIBLE, TASK_UNINTERRUPTIBLE, Process, Task,
                                    WaitQueue)
from workbench.units import kb

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel

SWAP_CLUSTER_MAX = 32


class Flusher:
    def __init__(self, k: Kernel):
        self.k = k
        self.wait = WaitQueue(k)
        self.task: Task | None = None
        self.todo = 0                       # pages it was asked to write


def dirty_pages(k: Kernel) -> int:
    """NR_FILE_DIRTY: mapped dirty page cache and unmapped dirty page cache."""
    n = k.memcgs.dirty_cache()
    if k.file_vmas:
        n += sum(v.dirty for _, v in k.file_vmas)
    return n


def wakeup_flusher_threads(k: Kernel, nr_pages: int) -> None:
    fl = k.flusher
    if not dirty_pages(k):
        return
    fl.todo += max(nr_pages, SWAP_CLUSTER_MAX)
    if fl.task is None:
        proc = Process(0, "flush", uid=0, oom_score_adj=0, parent=None, kthread=True)
        fl.task = Task(0, proc, "flush", None)
        k.spawn(flusher, k, fl.task)
    elif fl.wait:
        fl.wait.wake_up_all()


async def flusher(k: Kernel, me: Task) -> None:
    """wb_workfn(): write what was asked, a quantum's worth at a time (each
    quantum's pages are clean once their write is done); idle, it logs what
    it wrote since it was woken."""
    from trio.lowlevel import current_task      # Trio only once a run starts it
    me.trio_task = current_task()
    fl, m = k.flusher, k.machine
    written = 0
    while True:
        k.step()
        n = min(fl.todo, m.chunk(m.writeback_rate), dirty_pages(k))
        if not n:
            if written:
                k.log.emit("writeback", written_kb=kb(written), dirty_kb=kb(dirty_pages(k)))
            fl.todo, written = 0, 0
            await fl.wait.wait(me, TASK_INTERRUPTIBLE, "idle")
            continue
        await k.clock.sleep(me, m.cost_ns(n, m.writeback_rate), TASK_UNINTERRUPTIBLE,
                            "writeback")
        done = _clean(k, n)
        fl.todo = max(0, fl.todo - done)
        written += done


def _clean(k: Kernel, want: int) -> int:
    got = 0
    for _, vma in k.file_vmas:                   # mapped dirty pages, in fork order
        if got == want:
            break
        n = min(want - got, vma.dirty)
        vma.dirty -= n
        got += n
    for cg in k.memcgs.scope(None):
        n = min(want - got, cg.cache_dirty)
        if n:
            cg.cache_dirty -= n
            cg.cache_clean += n
            got += n
    return got
