"""Memory cgroups as 4.5 has them (mm/memcontrol.c: try_charge(), mem_cgroup_oom_synchronize()).

Every page a process faults in or allocates is charged to its cgroup; pages
freed, reaped or unmapped at exit are uncharged (page cache stays charged
until reclaimed).  A charge over memory_max reclaims within the cgroup:
once, once more after draining the per-cpu stocks, then 5 retries (7 rounds
with no progress), then:
- tasks with TIF_MEMDIE, a fatal signal or PF_EXITING force the charge;
- a user page fault records a memcg OOM and fails with VM_FAULT_OOM; at the
  end of the fault mem_cgroup_oom_synchronize() lets one task per cgroup run
  the OOM killer under the global oom_lock while the others sleep, killable,
  until an uncharge or the unlock wakes them; the fault is then retried;
- any other charge (kalloc, GFP_NOFS) fails with -ENOMEM and kills nothing.
The victim scan covers the cgroup's tasks only, with the same abort while a
victim is pending - and a memcg victim's TIF_MEMDIE also aborts every global
scan, because that one walks all threads (mm/oom_kill.c oom_scan_process_thread(), 4.5).
Cgroups are flat children of the root; the root has no limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import gfp as GFP
from workbench.kernel import oom_kill, vmscan
from workbench.kernel.sched import TASK_KILLABLE, Process, Task, WaitQueue
from workbench.policy import OomControl
from workbench.units import kb

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.workload.spec import CgroupSpec

MEM_CGROUP_RECLAIM_RETRIES = 5


class MemCgroup:
    def __init__(self, name: str, limit: int | None, oom_group: bool = False,
                 memsw_limit: int | None = None):
        self.name = name
        self.memsw_limit = memsw_limit  # memory.memsw.limit_in_bytes; None: unlimited
        self.swap = 0                  # swap entries charged here (memsw = usage + swap)
        self.oom_group = oom_group     # memory.oom.group: read only under memory_oom_group
        self.limit = limit             # pages; None for the root
        self.usage = 0                 # pages charged
        self.failcnt = 0
        self.under_oom = 0
        self.oom_lock = False
        self.cache_clean = 0           # unmapped page cache charged here
        self.cache_dirty = 0

    @property
    def is_root(self) -> bool:
        return self.limit is None

    def margin(self) -> int:
        """mem_cgroup_margin(): memory.limit - memory, and with memory+swap
        accounting also memsw.limit - memsw."""
        if self.limit is None:
            return 1 << 62
        margin = self.limit - self.usage
        if self.memsw_limit is not None:
            margin = min(margin, self.memsw_limit - self.usage - self.swap)
        return max(0, margin)

    def memsw_full(self) -> bool:
        """try_charge(): the memsw counter at its limit gives may_swap = false:
        swapping would not lower it."""
        return self.memsw_limit is not None and self.usage + self.swap >= self.memsw_limit

    def oom_info(self, p: Task | None, modern: bool = False) -> list[str]:
        """mem_cgroup_print_oom_info() (swap and kmem accounting off); modern:
        6.19's mem_cgroup_print_oom_meminfo() for cgroup v2 (the cgroups are on
        the oom-kill: line instead), without the stats."""
        path = f"/{self.name}"
        if modern:
            return [f"memory: usage {kb(self.usage)}kB, limit {kb(self.limit)}kB, "
                    f"failcnt {self.failcnt}",
                    f"swap: usage {kb(self.swap)}kB, limit 9007199254740988kB, failcnt 0",
                    f"Memory cgroup stats for {path}:"]
        first = (f"Task in {path} killed as a result of limit of {path}" if p is not None
                 else f"Memory limit reached of cgroup {path}")
        limit = kb(self.limit)
        memsw = kb(self.memsw_limit) if self.memsw_limit is not None else limit
        return [first,
                f"memory: usage {kb(self.usage)}kB, limit {limit}kB, failcnt {self.failcnt}",
                f"memory+swap: usage {kb(self.usage + self.swap)}kB, limit {memsw}kB, failcnt 0",
                "kmem: usage 0kB, limit 9007199254740988kB, failcnt 0"]


class Memcgs:
    """The root and the scenario's cgroups, in config order."""

    def __init__(self, k: Kernel, specs: tuple[CgroupSpec, ...]):
        self.root = MemCgroup("", None)
        self.by_name = {c.name: MemCgroup(c.name, c.memory_max, c.oom_group, c.memsw_max)
                        for c in specs}
        self.oom_waitq = WaitQueue(k)  # memcg_oom_waitq: one for all cgroups
        self._all = (self.root, *self.by_name.values())   # fixed at boot

    def get(self, name: str | None) -> MemCgroup:
        return self.by_name[name] if name else self.root

    def scope(self, memcg: MemCgroup | None) -> tuple[MemCgroup, ...]:
        """The cgroups a reclaim may take from: all for global reclaim (a
        tuple, not a generator: every reclaim round asks)."""
        return self._all if memcg is None else (memcg,)

    def page_cache(self) -> int:
        """Unmapped page cache of every cgroup."""
        n = 0
        for c in self._all:
            n += c.cache_clean + c.cache_dirty
        return n

    def dirty_cache(self) -> int:
        n = 0
        for c in self._all:
            n += c.cache_dirty
        return n


def attach(k: Kernel, proc: Process) -> None:
    """A process without a cgroup lives in the root."""
    if proc.cgroup is None:
        proc.cgroup = k.memcgs.root
        if proc.mm is not None and proc.mm.memcg is None:
            proc.mm.memcg = proc.cgroup


def force_charge(k: Kernel, memcg: MemCgroup | None, n: int) -> None:
    if memcg is not None:
        memcg.usage += n


def uncharge(k: Kernel, memcg: MemCgroup | None, n: int) -> None:
    """uncharge_batch(): waiters of a cgroup under OOM are woken."""
    if memcg is None or not n:
        return
    memcg.usage -= n
    if memcg.usage < 0:
        k.violation(f"memcg {memcg.name or '/'} usage below 0")
    memcg_oom_recover(k, memcg)


def swap_charge(memcg: MemCgroup | None, n: int) -> None:
    """The memsw charge a swapped-out page keeps (mem_cgroup_swapout(), v1)."""
    if memcg is not None:
        memcg.swap += n


def swap_uncharge(k: Kernel, memcg: MemCgroup | None, n: int) -> None:
    """mem_cgroup_uncharge_swap(): the slot is freed; memsw waiters may go on."""
    if memcg is None or not n:
        return
    memcg.swap -= n
    if memcg.swap < 0:
        k.violation(f"memcg {memcg.name or '/'} swap below 0")
    if memcg.memsw_limit is not None:
        memcg_oom_recover(k, memcg)


def get_limit(k: Kernel, memcg: MemCgroup) -> int:
    """mem_cgroup_get_limit(), 4.5: memory.limit, and while the memcg's
    swappiness is not 0, min(limit + min(swap.limit, total_swap_pages),
    memsw.limit); swap.limit is never set here (cgroup v1), so it is
    min(limit + total swap, memsw_max).  A memcg's swappiness is
    vm_swappiness (machine.swappiness): per-memcg swappiness is not modelled."""
    limit = memcg.limit
    if k.machine.swappiness:
        memsw = memcg.memsw_limit if memcg.memsw_limit is not None else 1 << 62
        limit = min(limit + k.swap.total, memsw)
    return limit


def free_pages(k: Kernel, memcg: MemCgroup | None, n: int) -> None:
    """Give n pages back to the zone and uncharge them (release_pages())."""
    k.zone.give(n)
    uncharge(k, memcg, n)


def page_cache_add(memcg: MemCgroup | None, clean: int = 0, dirty: int = 0) -> None:
    """Pages unmapped from a process stay in the page cache, still charged."""
    if memcg is not None:
        memcg.cache_clean += clean
        memcg.cache_dirty += dirty


async def try_charge(k: Kernel, task: Task, memcg: MemCgroup | None, n: int, gfp: int,
                     may_oom: bool) -> int:
    """Charge n pages; returns how many were charged (n, or fewer on -ENOMEM).

    may_oom is current->memcg_may_oom: set only for user page faults.  A
    charge that has to reclaim is a stall; a fault's stall lasts across its
    retries until the chunk is charged (task.memcg_stall)."""
    if memcg is None or memcg.is_root or not n:
        if memcg is not None:
            memcg.usage += n
        return n
    got = await _charge(k, task, memcg, n, gfp, may_oom)
    if got == n:
        end_stall(k, task, ok=True)
    elif not may_oom:
        end_stall(k, task, ok=False)
    return got


def end_stall(k: Kernel, task: Task, ok: bool) -> None:
    if task.memcg_stall is not None:
        k.stall_end(task.memcg_stall, ok)
        task.memcg_stall = None


async def _charge(k: Kernel, task: Task, memcg: MemCgroup, n: int, gfp: int,
                  may_oom: bool) -> int:
    in_charge = k.features.memcg_oom_in_charge
    got = 0
    max_retries = k.features.reclaim_retries or MEM_CGROUP_RECLAIM_RETRIES
    retries = max_retries
    drained = passed_oom = False
    while True:
        fit = min(n - got, memcg.margin())
        memcg.usage += fit
        got += fit
        if got == n:
            return n
        memcg.failcnt += 1
        if task.memcg_stall is None:
            task.memcg_stall = k.stall_begin(task, n, gfp, memcg)
        # Dying and OOM-killed tasks bypass the limit so they can exit
        # quickly: by one page, the allocation in progress (see page_alloc).
        if task_is_dying(task) and not in_charge:
            memcg.usage += 1
            return got + 1
        if task.memcg_oom is not None or not GFP.can_direct_reclaim(gfp):
            return _nomem(k, task, memcg, got, n)
        reclaimed = await vmscan.try_to_free_pages(k, task, n - got, memcg)
        if memcg.margin() >= n - got:
            continue
        if not drained:                # drain_all_stock(): frees nothing here, but retries
            drained = True
            continue
        if GFP.noretry(gfp):
            return _nomem(k, task, memcg, got, n)
        if reclaimed:                  # order-0 charges retry while reclaim progresses
            continue
        if retries:
            retries -= 1
            continue
        if in_charge:
            # 4.19: the OOM killer runs here; keep retrying while it makes
            # progress, but a dying task that passed it once gives up
            # (mm/memcontrol.c try_charge_memcg(), 6.19).
            if not (passed_oom and task_is_dying(task)) and await mem_cgroup_oom(
                    k, task, memcg, gfp):
                passed_oom = True
                retries = max_retries
                continue
            if GFP.nofail(gfp) or GFP.high(gfp):        # nomem: force these
                break
            return _nomem(k, task, memcg, got, n)
        if GFP.nofail(gfp) or task.fatal_signal_pending():
            break
        if may_oom:
            task.memcg_oom = memcg     # mem_cgroup_oom(): dealt with at the end of the fault
            task.memcg_oom_gfp = gfp
        return _nomem(k, task, memcg, got, n)
    memcg.usage += n - got             # force
    return n


def task_is_dying(task: Task) -> bool:
    return task.tif_memdie or task.fatal_signal_pending() or task.exiting


def _nomem(k: Kernel, task: Task, memcg: MemCgroup, got: int, n: int) -> int:
    if task.memcg_oom is None:
        k.log.emit("memcg_charge_fail", pid=task.pid, tgid=task.tgid, comm=task.comm,
                   memcg=memcg.name, pages=n - got)
    return got


def memcg_oom_recover(k: Kernel, memcg: MemCgroup) -> None:
    if memcg.under_oom:
        k.memcgs.oom_waitq.wake_up_matching(lambda token: token is memcg)


async def mem_cgroup_oom_synchronize(k: Kernel, task: Task, handle: bool) -> bool:
    """End of a faulting access that hit its memcg's limit: kill or wait.
    False when the fault's failure was not a memcg OOM."""
    memcg = task.memcg_oom
    if memcg is None:
        return False
    task.memcg_oom = None
    if not handle:
        return True
    memcg.under_oom += 1
    locked = not memcg.oom_lock
    memcg.oom_lock = True
    if locked:
        memcg.under_oom -= 1
        await mem_cgroup_out_of_memory(k, task, memcg, task.memcg_oom_gfp)
        memcg.oom_lock = False
        memcg_oom_recover(k, memcg)    # contenders may have missed the kill's uncharges
    else:
        await k.memcgs.oom_waitq.wait(task, TASK_KILLABLE, f"memcg_oom:{memcg.name}", memcg)
        memcg.under_oom -= 1
    return True


async def mem_cgroup_oom(k: Kernel, task: Task, memcg: MemCgroup, gfp: int) -> bool:
    """4.19+: the memcg OOM in the charge path, for any charge that may
    reclaim (GFP_NOFS and kernel charges too).  Contenders wait on oom_lock,
    killable, and find the margin restored.  True: retry the charge."""
    memcg.under_oom += 1
    try:
        if not await k.oom_lock.lock(task, TASK_KILLABLE):
            return True
    finally:
        memcg.under_oom -= 1
    try:
        if memcg.margin():
            return True
        if task_is_dying(task):
            return True            # mem_cgroup_out_of_memory(): task_is_dying() || ...
        return await _out_of_memory(k, task, memcg, gfp) != "none"
    finally:
        k.oom_lock.unlock(task)


async def mem_cgroup_out_of_memory(k: Kernel, task: Task, memcg: MemCgroup, gfp: int) -> None:
    """The OOM killer for one cgroup (4.5, from the end of a fault): oom_lock
    taken as a blocking mutex, the dying-task shortcut, a scan of the
    cgroup's tasks, no panic when nothing is eligible, no sleep after the kill."""
    await k.oom_lock.lock(task)
    try:
        await _out_of_memory(k, task, memcg, gfp)
    finally:
        k.oom_lock.unlock(task)


async def _out_of_memory(k: Kernel, task: Task, memcg: MemCgroup, gfp: int) -> str:
    """out_of_memory() for a memcg: shortcut | abort | kill | none."""
    if oom_kill.will_free_mem(k, task, current=True):
        oom_kill.mark_oom_victim(k, task, "shortcut")
        oom_kill.log_invocation(k, task, gfp, memcg, "shortcut")
        if k.features.will_free_mem_fortified:
            oom_kill.wake_oom_reaper(k, task.mm, task)
        return "shortcut"
    oc = OomControl(task, gfp, 0, get_limit(k, memcg) or 1, memcg, k)
    return await oom_kill.select_and_kill(k, oc, "Memory cgroup out of memory")
