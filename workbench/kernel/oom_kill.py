"""The OOM killer and the seed's OOM reaper (mm/oom_kill.c, 4.5 and aac453635549).

The mechanisms are here: the shortcut for a dying allocator, the kill
(SIGKILL first, then TIF_MEMDIE, then the mm's other users), the kernel's
log lines, the oom_reaper kthread with its mm_count pin, the mm_users race
and the mmap_sem trylock.  The decisions are the arm's policies': whom to
kill (select_bad_process, child sacrifice, sharers), how the reaper queues
and retries, and which VMAs it unmaps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio.lowlevel import current_task

from workbench.kernel import fork, memory, signal
from workbench.kernel.mm import MmStruct
from workbench.kernel.sched import (TASK_INTERRUPTIBLE, TASK_KILLABLE, TASK_UNINTERRUPTIBLE,
                                    Process, Task)
from workbench.policy import ABORT, OomControl, ReapWork, Victim
from workbench.units import kb

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.memcontrol import MemCgroup


def task_will_free_mem(task: Task) -> bool:
    """4.5: PF_EXITING and not part of a group coredump (core dumps are not
    modelled, so PF_EXITING alone)."""
    return task.exiting


def mark_oom_victim(k: Kernel, task: Task, via: str) -> None:
    """Grant TIF_MEMDIE to one thread (test-and-set)."""
    if task.tif_memdie:
        return
    task.tif_memdie = True
    k.log.emit("mark_victim", pid=task.pid, tgid=task.tgid, comm=task.comm, via=via)


def exit_oom_victim(k: Kernel, task: Task) -> None:
    task.tif_memdie = False
    k.log.emit("exit_oom_victim", pid=task.pid, tgid=task.tgid, comm=task.comm)


async def out_of_memory(k: Kernel, current: Task, gfp: int, memcg: MemCgroup | None) -> bool:
    """The global OOM killer, called with oom_lock held.  Always True
    (the caller retries): oom_killer_disable and the notifier chain are not
    modelled."""
    if current.mm is not None and (current.fatal_signal_pending() or task_will_free_mem(current)):
        mark_oom_victim(k, current, "shortcut")
        log_invocation(k, current, gfp, None, "shortcut")
        return True
    # constrained_alloc(): CONSTRAINT_NONE, totalram + swap (no swap modelled)
    oc = OomControl(current, gfp, 0, k.zone.managed, None, k)
    if await select_and_kill(k, oc, "Out of memory") == "kill":
        # Give the killed process a good chance to exit before trying to
        # allocate again: one jiffy, killable, still holding oom_lock.
        await k.clock.sleep(current, k.jiffy_ns, TASK_KILLABLE, "oom_kill")
    return True


async def select_and_kill(k: Kernel, oc: OomControl, message: str) -> str:
    """select_bad_process() through the victim policy, then oom_kill_process().
    Returns what happened: abort | kill | none."""
    chosen = k.policies.select_bad_process(oc)
    if chosen is None:
        if oc.memcg is not None:               # a memcg with nothing eligible just waits
            log_invocation(k, oc.current, oc.gfp_mask, oc.memcg, "none")
            return "none"
        log_invocation(k, oc.current, oc.gfp_mask, None, "panic")
        dump_header(k, oc, None)
        k.panic("Out of memory and no killable processes...")
    if chosen is ABORT:
        log_invocation(k, oc.current, oc.gfp_mask, oc.memcg, "abort")
        return "abort"
    log_invocation(k, oc.current, oc.gfp_mask, oc.memcg, "kill")
    oom_kill_process(k, oc, chosen, message)
    return "kill"


def log_invocation(k: Kernel, current: Task, gfp: int, memcg: MemCgroup | None,
                    result: str) -> None:
    k.log.emit("out_of_memory", pid=current.pid, tgid=current.tgid, comm=current.comm,
               gfp_mask=gfp, order=0, constraint="memcg" if memcg else "none",
               memcg=memcg.name if memcg else None, result=result)


def oom_kill_process(k: Kernel, oc: OomControl, chosen: Victim, message: str) -> None:
    p = chosen.task
    if p.mm is not None and task_will_free_mem(p):
        # Already exiting: no alarm, no kill, just TIF_MEMDIE.
        mark_oom_victim(k, p, "exiting")
        return
    if k.oom_ratelimit.allow(k.clock.now):
        dump_header(k, oc, p)
    score = chosen.points * 1000 // oc.totalpages
    k.log.emit("select_victim", pid=p.pid, tgid=p.tgid, comm=p.comm, points=chosen.points,
               score=score, msg=f"{message}: Kill process {p.pid} ({p.comm}) score {score} "
                                f"or sacrifice child")
    victim = find_lock_task_mm(k.policies.sacrifice_child(oc, chosen).task.process)
    if victim is None:
        return
    mm = victim.mm
    mm.mmgrab("oom_kill_process")
    # SIGKILL before TIF_MEMDIE, so that user space cannot drain the reserves.
    signal.send_sigkill(k, victim.process)
    mark_oom_victim(k, victim, "kill")
    rss = mm.rss_kb()
    k.log.emit("kill", pid=victim.pid, tgid=victim.tgid, comm=victim.comm, mm=mm.id,
               selected=p.pid, **rss,
               msg=f"Killed process {victim.pid} ({victim.comm}) total-vm:{rss['total_vm_kb']}kB, "
                   f"anon-rss:{rss['anon_rss_kb']}kB, file-rss:{rss['file_rss_kb']}kB, "
                   f"shmem-rss:{rss['shmem_rss_kb']}kB")
    # The mm's users in other thread groups die too, without reserves; one
    # left alive still uses the memory, so the reaper must not touch it.
    spared = None
    for proc in list(k.for_each_process()):
        if proc is victim.process or not process_shares_mm(proc, mm):
            continue
        if k.policies.kill_sharer(oc, victim, proc):
            signal.send_sigkill(k, proc)
            k.log.emit("kill_sharer", pid=proc.pid, tgid=proc.pid, comm=proc.comm,
                       victim=victim.pid, mm=mm.id)
        elif spared is None:
            spared = proc
    if spared is None:
        wake_oom_reaper(k, mm, victim)
    elif k.oom_reaper_th is not None:
        k.log.emit("reaper_skip", pid=victim.pid, tgid=victim.tgid, comm=victim.comm, mm=mm.id,
                   sharer=spared.pid, sharer_comm=spared.comm)
    mm.mmdrop("oom_kill_process")


def find_lock_task_mm(proc: Process) -> Task | None:
    """The first thread of proc that still has an mm."""
    return next((t for t in proc.threads if t.mm is not None), None)


def process_shares_mm(proc: Process, mm: MmStruct) -> bool:
    t = find_lock_task_mm(proc)
    return t is not None and t.mm is mm


# -- the kernel's report ------------------------------------------------------------

class Ratelimit:
    """DEFINE_RATELIMIT_STATE(oom_rs, 5 * HZ, 10): shared by global and memcg OOMs."""

    def __init__(self, interval_ns: int, burst: int = 10):
        self.interval = interval_ns
        self.burst = burst
        self.begin: int | None = None
        self.printed = 0

    def allow(self, now: int) -> bool:
        if self.begin is None or now > self.begin + self.interval:
            self.begin, self.printed = now, 0
        if self.printed < self.burst:
            self.printed += 1
            return True
        return False


def dump_header(k: Kernel, oc: OomControl, p: Task | None) -> None:
    cur = oc.current
    ids = {"pid": cur.pid, "tgid": cur.tgid, "comm": cur.comm}
    k.log.emit("oom_header", **ids, gfp_mask=oc.gfp_mask, order=oc.order,
               oom_score_adj=cur.process.oom_score_adj,
               msg=f"{cur.comm} invoked oom-killer: gfp_mask=0x{oc.gfp_mask:x}, "
                   f"order={oc.order}, oom_score_adj={cur.process.oom_score_adj}")
    k.log.emit("oom_cpuset", **ids, msg=f"{cur.comm} cpuset=/ mems_allowed=0")
    if oc.memcg is not None:
        for line in oc.memcg.oom_info(p):
            k.log.emit("memcg_oom_info", memcg=oc.memcg.name, msg=line)
    else:
        z = k.zone
        k.log.emit("oom_meminfo", free_kb=kb(z.free), min_kb=kb(z.wmark_min),
                   low_kb=kb(z.wmark_low), high_kb=kb(z.wmark_high), managed_kb=kb(z.managed))
    dump_tasks(k, oc)


def dump_tasks(k: Kernel, oc: OomControl) -> None:
    k.log.emit("oom_dump_tasks", msg="[ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds "
                                     "swapents oom_score_adj name")
    for proc in k.for_each_process():
        if proc.init or proc.kthread:
            continue
        t = find_lock_task_mm(proc)
        if t is None or not oc.in_scope(t):
            continue
        mm = t.mm
        k.log.emit("oom_dump_task", pid=t.pid, tgid=proc.pid, comm=proc.comm, uid=proc.uid,
                   total_vm=mm.total_vm, rss=mm.get_mm_rss(), nr_ptes=mm.nr_ptes,
                   nr_pmds=mm.nr_pmds, swapents=mm.swapents, oom_score_adj=proc.oom_score_adj,
                   msg=f"[{t.pid:5d}] {proc.uid:5d} {proc.pid:5d} {mm.total_vm:8d} "
                       f"{mm.get_mm_rss():8d} {mm.nr_ptes:7d} {mm.nr_pmds:7d} "
                       f"{mm.swapents:8d}         {proc.oom_score_adj:5d} {proc.comm}")


# -- the OOM reaper (the seed) ------------------------------------------------------

def oom_init(k: Kernel, pid: int) -> Task:
    """kthread_run(oom_reaper, NULL, "oom_reaper") at subsys_initcall."""
    proc = Process(pid, "oom_reaper", uid=0, oom_score_adj=0, parent=None, kthread=True)
    return Task(pid, proc, "oom_reaper", None)


def wake_oom_reaper(k: Kernel, mm: MmStruct, task: Task) -> None:
    if k.oom_reaper_th is None:
        return
    # Pin with mm_count, not mm_users: the reaper must not delay the teardown.
    mm.mmgrab("oom_reaper")
    work = ReapWork(mm, task)
    ids = {"pid": task.pid, "tgid": task.tgid, "comm": task.comm, "mm": mm.id}
    if k.policies.reaper_queue(work):
        k.log.emit("reaper_queued", **ids)
        k.oom_reaper_wait.wake_up_all()
    else:
        k.log.emit("reaper_dropped", **ids)
        mm.mmdrop("oom_reaper")


async def oom_reaper(k: Kernel, me: Task) -> None:
    """The kthread: wait for work, reap it, repeat."""
    me.trio_task = current_task()
    while True:
        k.step(("reaper", "workbench_reaper_next"))
        work = k.policies.reaper_next()
        if work is None:
            await k.oom_reaper_wait.wait(me, TASK_INTERRUPTIBLE, "idle")
            continue
        await oom_reap_vmas(k, me, work)


async def oom_reap_vmas(k: Kernel, me: Task, work: ReapWork) -> None:
    """Try until an attempt succeeds or the policy gives up, then drop the pin."""
    attempt = 0
    reaped = False
    while not reaped:
        attempt += 1
        reaped = await __oom_reap_vmas(k, me, work)
        if not reaped:
            retry = k.policies.reaper_retry(work, attempt)
            k.step(None if retry.sleep_ns else ("reaper", "workbench_reaper_retry"))
            if retry.sleep_ns:
                await k.clock.sleep(me, retry.sleep_ns, TASK_UNINTERRUPTIBLE, "oom_reaper retry")
            if not retry.again:
                k.log.emit("reap_give_up", **_work_ids(work), attempts=attempt)
                break
    k.policies.reaper_done(work, reaped)
    work.mm.mmdrop("oom_reaper")


async def __oom_reap_vmas(k: Kernel, me: Task, work: ReapWork) -> bool:
    mm = work.mm
    if not mm.mmget_not_zero():
        k.log.emit("reap_exit_race", **_work_ids(work))       # raced with exit: done
        return True
    if not mm.mmap_sem.down_read_trylock():
        k.log.emit("reap_attempt", **_work_ids(work), result="contended")
        await fork.mmput(k, me, mm)
        return False
    k.log.emit("reap_attempt", **_work_ids(work), result="locked")
    freed = 0
    rate = k.machine.reap_rate
    for vma in mm.vmas:
        details = k.policies.reap_vma(vma, mm)
        if details is None:
            continue
        while n := min(memory.zappable(vma, details), k.reap_chunk):
            await k.clock.sleep(me, k.machine.cost_ns(n, rate), TASK_UNINTERRUPTIBLE, "oom_reap")
            freed += memory.zap(k, mm, vma, details, n)[1]
    mm.mmap_sem.up_read()
    k.log.emit("reap_done", **_work_ids(work), reaped_kb=kb(freed),
               **{key: v for key, v in mm.rss_kb().items() if key != "total_vm_kb"})
    await fork.mmput(k, me, mm)
    return True


def _work_ids(work: ReapWork) -> dict:
    return {"pid": work.task.pid, "tgid": work.task.tgid, "comm": work.task.comm,
            "mm": work.mm.id}
