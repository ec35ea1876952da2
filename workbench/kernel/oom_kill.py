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

from workbench.kernel import fork, memory, signal
from workbench.kernel import gfp as GFP
from workbench.kernel.mm import MmStruct
from workbench.kernel.sched import (
    TASK_DEAD,
    TASK_INTERRUPTIBLE,
    TASK_KILLABLE,
    TASK_UNINTERRUPTIBLE,
    Process,
    Task,
)
from workbench.policy import ABORT, OomControl, ReapWork, Victim
from workbench.units import kb, seconds

if TYPE_CHECKING:
    from workbench.kernel.core import Kernel
    from workbench.kernel.memcontrol import MemCgroup


OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000               # include/uapi/linux/oom.h


def task_will_free_mem(task: Task) -> bool:
    """4.5: PF_EXITING and not part of a group coredump."""
    return task.exiting and not task.process.core_dumping


def will_free_mem(k: Kernel, task: Task, current: bool) -> bool:
    """Whether task is dying anyway, so that the OOM killer only lets it at the
    reserves.  4.5: for current, a fatal signal or PF_EXITING; for a selected
    task, PF_EXITING.  4.8 (will_free_mem_fortified): the whole group is dying
    (SIGNAL_GROUP_EXIT, or a lone thread with PF_EXITING), so is every other
    process using the mm, and the mm is not MMF_OOM_SKIP (mm/oom_kill.c
    task_will_free_mem(), 4.8)."""
    if not k.features.will_free_mem_fortified:
        return (current and task.fatal_signal_pending()) or task_will_free_mem(task)
    mm = task.mm
    if mm is None or mm.oom_skip:
        return False

    def dying(proc: Process) -> bool:
        if proc.core_dumping:                  # sig->core_state
            return False
        return proc.group_exit or (proc.live_threads == 1 and all(
            t.exiting for t in proc.threads if t.state != TASK_DEAD))

    return all(dying(p) for p in k.for_each_process() if p is task.process
               or process_shares_mm(p, mm))


def mark_oom_victim(k: Kernel, task: Task, via: str) -> None:
    """Grant TIF_MEMDIE to one thread (test-and-set); from 4.9 the process
    also keeps its mm as signal->oom_mm, and from 4.14 the mm is marked
    MMF_OOM_VICTIM for exit_mmap()."""
    if task.tif_memdie:
        return
    task.tif_memdie = True
    k.tasklist.flags_changed(task)
    if k.features.oom_mm and task.process.oom_mm is None and task.mm is not None:
        task.process.oom_mm = task.mm
        task.mm.oom_victim = True
        k.tasklist.victim_marked(task.process)
    k.log.emit("mark_victim", pid=task.pid, tgid=task.tgid, comm=task.comm, via=via)


def exit_oom_victim(k: Kernel, task: Task) -> None:
    task.tif_memdie = False
    k.tasklist.flags_changed(task)
    k.log.emit("exit_oom_victim", pid=task.pid, tgid=task.tgid, comm=task.comm)


async def out_of_memory(k: Kernel, current: Task, gfp: int, memcg: MemCgroup | None) -> bool:
    """The global OOM killer, called with oom_lock held.  Always True
    (the caller retries): oom_killer_disable and the notifier chain are not
    modelled."""
    if current.mm is not None and will_free_mem(k, current, current=True):
        mark_oom_victim(k, current, "shortcut")
        log_invocation(k, current, gfp, None, "shortcut")
        if k.features.will_free_mem_fortified:
            wake_oom_reaper(k, current.mm, current)
        return True
    if k.features.reclaim_retries and not GFP.fs_allowed(gfp):
        # 4.7: the OOM killer does not compensate for IO-less reclaim.
        log_invocation(k, current, gfp, None, "nofs")
        return True
    # constrained_alloc(): CONSTRAINT_NONE, totalram_pages + total_swap_pages
    oc = OomControl(current, gfp, 0, k.zone.managed + k.swap.total, None, k)
    if k.policies.kill_allocating_task(oc) and kill_allocating_task_eligible(current):
        # mm/oom_kill.c out_of_memory(), 4.5: oom_kill_process(oc, current, 0,
        # ...) and return true at once: no scan (so no abort for a pending
        # TIF_MEMDIE victim) and no schedule_timeout_killable(1) after it.
        log_invocation(k, current, gfp, None, "kill")
        oom_kill_process(k, oc, Victim(current, 0), "Out of memory (oom_kill_allocating_task)")
        return True
    if await select_and_kill(k, oc, "Out of memory") == "kill" and not (
            k.features.no_post_kill_sleep):
        # Give the killed process a good chance to exit before trying to
        # allocate again: one jiffy, killable, still holding oom_lock.
        await k.clock.sleep(current, k.jiffy_ns, TASK_KILLABLE, "oom_kill")
    return True


def kill_allocating_task_eligible(current: Task) -> bool:
    """The 4.5 condition beside sysctl_oom_kill_allocating_task: current->mm,
    !oom_unkillable_task(current, NULL, nodemask) (not global init, not a
    kthread; no nodemask here) and oom_score_adj != OOM_SCORE_ADJ_MIN."""
    proc = current.process
    return (current.mm is not None and not proc.init and not proc.kthread
            and proc.oom_score_adj != OOM_SCORE_ADJ_MIN)


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
    if p.mm is not None and will_free_mem(k, p, current=False):
        # Already exiting: no alarm, no kill, just TIF_MEMDIE.
        mark_oom_victim(k, p, "exiting")
        if k.features.will_free_mem_fortified:
            wake_oom_reaper(k, p.mm, p)
        return
    if k.oom_ratelimit.allow(k.clock.now):
        dump_header(k, oc, p)
    score = chosen.points * 1000 // oc.totalpages
    k.log.emit("select_victim", pid=p.pid, tgid=p.tgid, comm=p.comm, points=chosen.points,
               score=score, msg=select_line(k, oc, p, score, message))
    victim = find_lock_task_mm(k.policies.sacrifice_child(oc, chosen).task.process)
    if victim is None:
        return
    __oom_kill_process(k, oc, victim, p, message)
    group = oc.memcg if oc.memcg is not None else victim.process.cgroup
    if k.features.memory_oom_group and group is not None and group.oom_group:
        oom_kill_memcg_members(k, oc, group, victim, message)


def __oom_kill_process(k: Kernel, oc: OomControl, victim: Task, selected: Task,
                       message: str) -> None:
    """SIGKILL the victim and the other users of its mm, then hand the mm to
    the reaper unless one of them keeps using it."""
    mm = victim.mm
    mm.mmgrab("oom_kill_process")
    # SIGKILL before TIF_MEMDIE, so that user space cannot drain the reserves.
    signal.send_sigkill(k, victim.process)
    mark_oom_victim(k, victim, "kill")
    rss = mm.rss_kb()
    k.log.emit("kill", pid=victim.pid, tgid=victim.tgid, comm=victim.comm, mm=mm.id,
               selected=selected.pid, **rss, msg=kill_line(k, victim, rss, message))
    # The mm's users in other thread groups die too, without reserves; one
    # left alive still uses the memory, so the reaper must not touch it.
    spared = None
    for proc in list(k.for_each_process()):
        if proc is victim.process or not process_shares_mm(proc, mm):
            continue
        if k.features.mm_pinned_by_init and proc.init:
            # 4.8: init cannot be killed and keeps using the mm: hide it.
            mm.oom_skip = True
            k.log.emit("mm_pinned", pid=victim.pid, tgid=victim.tgid, comm=victim.comm,
                       mm=mm.id, sharer=proc.pid, sharer_comm=proc.comm,
                       msg=f"oom killer {victim.pid} ({victim.comm}) has mm pinned by "
                           f"{proc.pid} ({proc.comm})")
            spared = spared or proc
        elif k.policies.kill_sharer(oc, victim, proc):
            signal.send_sigkill(k, proc)
            k.log.emit("kill_sharer", pid=proc.pid, tgid=proc.pid, comm=proc.comm,
                       victim=victim.pid, mm=mm.id)
        elif proc.kthread and k.features.mm_pinned_by_init:
            continue        # 4.9: no use_mm() user reads user space unchecked: reap anyway
        elif spared is None:
            spared = proc
    if spared is None:
        wake_oom_reaper(k, mm, victim)
    elif k.oom_reaper_th is not None:
        k.log.emit("reaper_skip", pid=victim.pid, tgid=victim.tgid, comm=victim.comm, mm=mm.id,
                   sharer=spared.pid, sharer_comm=spared.comm)
    mm.mmdrop("oom_kill_process")


def oom_kill_memcg_members(k: Kernel, oc: OomControl, group: MemCgroup, victim: Task,
                           message: str) -> None:
    """memory.oom.group (4.19): every other task of the cgroup is killed too,
    except OOM_SCORE_ADJ_MIN ones and global init (mm/oom_kill.c
    oom_kill_memcg_member())."""
    k.log.emit("oom_group_kill", memcg=group.name,
               msg=f"Tasks in /{group.name} are going to be killed due to memory.oom.group set")
    for proc in list(k.for_each_process()):
        # (6.19 visits the victim and its killed sharers again, printing a
        # second "Killed process" for each; they are killed once here.)
        if (proc.cgroup is not group or proc.group_exit or proc.kthread or proc.init
                or proc.oom_score_adj == OOM_SCORE_ADJ_MIN):
            continue
        task = find_lock_task_mm(proc)
        if task is not None:
            __oom_kill_process(k, oc, task, task, message)


def find_lock_task_mm(proc: Process) -> Task | None:
    """The first thread of proc that still has an mm."""
    return next((t for t in proc.threads if t.mm is not None), None)


def process_shares_mm(proc: Process, mm: MmStruct) -> bool:
    t = find_lock_task_mm(proc)
    return t is not None and t.mm is mm


# -- the kernel's report ------------------------------------------------------------

def select_line(k: Kernel, oc: OomControl, p: Task, score: int, message: str) -> str:
    """4.5: "Out of memory: Kill process %d (%s) score %u or sacrifice child";
    later kernels print the one-line oom-kill summary instead
    (mm/oom_kill.c dump_oom_summary(), 5.x)."""
    if not k.features.modern_oom_report:
        return f"{message}: Kill process {p.pid} ({p.comm}) score {score} or sacrifice child"
    memcg = f"oom_memcg=/{oc.memcg.name}" if oc.memcg is not None else "global_oom"
    task_memcg = f"/{p.process.cgroup.name}" if p.process.cgroup is not None else "/"
    constraint = "CONSTRAINT_MEMCG" if oc.memcg is not None else "CONSTRAINT_NONE"
    return (f"oom-kill:constraint={constraint},nodemask=(null),cpuset=/,mems_allowed=0,"
            f"{memcg},task_memcg={task_memcg},task={p.comm},pid={p.pid},uid={p.process.uid}")


def kill_line(k: Kernel, victim: Task, rss: dict[str, int], message: str) -> str:
    line = (f"Killed process {victim.pid} ({victim.comm}) total-vm:{rss['total_vm_kb']}kB, "
            f"anon-rss:{rss['anon_rss_kb']}kB, file-rss:{rss['file_rss_kb']}kB, "
            f"shmem-rss:{rss['shmem_rss_kb']}kB")
    if not k.features.modern_oom_report:
        return line
    mm = victim.mm
    pgtables_kb = (mm.nr_ptes + mm.nr_pmds) * 4
    return (f"{message}: {line}, UID:{victim.process.uid} pgtables:{pgtables_kb}kB "
            f"oom_score_adj:{victim.process.oom_score_adj}")


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


def show_gfp(k: Kernel, mask: int) -> str:
    """The mask as this kernel prints it (6.19's bit values under modern-oom-report)."""
    return GFP.show(mask, k.features.gfp_flag_names, k.features.modern_oom_report)


def dump_header(k: Kernel, oc: OomControl, p: Task | None) -> None:
    cur = oc.current
    ids = {"pid": cur.pid, "tgid": cur.tgid, "comm": cur.comm}
    k.log.emit("oom_header", **ids, gfp_mask=oc.gfp_mask, order=oc.order,
               oom_score_adj=cur.process.oom_score_adj,
               msg=f"{cur.comm} invoked oom-killer: gfp_mask={show_gfp(k, oc.gfp_mask)}, "
                   f"order={oc.order}, oom_score_adj={cur.process.oom_score_adj}")
    if not k.features.modern_oom_report:       # later on the oom-kill: summary line
        k.log.emit("oom_cpuset", **ids, msg=f"{cur.comm} cpuset=/ mems_allowed=0")
    if oc.memcg is not None:
        for line in oc.memcg.oom_info(p, k.features.modern_oom_report):
            k.log.emit("memcg_oom_info", memcg=oc.memcg.name, msg=line)
    else:
        z = k.zone
        # show_swap_cache_info()'s "Free swap" and "Total swap", for a machine with swap
        swap = {"free_swap_kb": kb(k.swap.free), "total_swap_kb": kb(k.swap.total)} \
            if k.swap.total else {}
        k.log.emit("oom_meminfo", free_kb=kb(z.free), min_kb=kb(z.wmark_min),
                   low_kb=kb(z.wmark_low), high_kb=kb(z.wmark_high), managed_kb=kb(z.managed),
                   **swap)
    dump_tasks(k, oc)


def dump_tasks(k: Kernel, oc: OomControl) -> None:
    modern = k.features.modern_oom_report
    if modern:
        k.log.emit("oom_dump_tasks", msg="Tasks state (memory values in pages):")
        k.log.emit("oom_dump_tasks", msg="[  pid  ]   uid  tgid total_vm      rss rss_anon "
                                         "rss_file rss_shmem pgtables_bytes swapents "
                                         "oom_score_adj name")
    else:
        k.log.emit("oom_dump_tasks", msg="[ pid ]   uid  tgid total_vm      rss nr_ptes "
                                         "nr_pmds swapents oom_score_adj name")
    for proc in k.for_each_process():
        if proc.init or proc.kthread:
            continue
        t = find_lock_task_mm(proc)
        if t is None or not oc.in_scope(t):
            continue
        mm = t.mm
        if modern:
            line = (f"[{t.pid:7d}] {proc.uid:5d} {proc.pid:5d} {mm.total_vm:8d} "
                    f"{mm.get_mm_rss():8d} {mm.anon:8d} {mm.file:8d} {mm.shmem:9d} "
                    f"{(mm.nr_ptes + mm.nr_pmds) * 4096:8d} {mm.swapents:8d}         "
                    f"{proc.oom_score_adj:5d} {proc.comm}")
        else:
            line = (f"[{t.pid:5d}] {proc.uid:5d} {proc.pid:5d} {mm.total_vm:8d} "
                    f"{mm.get_mm_rss():8d} {mm.nr_ptes:7d} {mm.nr_pmds:7d} "
                    f"{mm.swapents:8d}         {proc.oom_score_adj:5d} {proc.comm}")
        k.log.emit("oom_dump_task", pid=t.pid, tgid=proc.pid, comm=proc.comm, uid=proc.uid,
                   total_vm=mm.total_vm, rss=mm.get_mm_rss(), nr_ptes=mm.nr_ptes,
                   nr_pmds=mm.nr_pmds, swapents=mm.swapents, oom_score_adj=proc.oom_score_adj,
                   msg=line)


# -- the OOM reaper (the seed) ------------------------------------------------------

def oom_init(k: Kernel, pid: int) -> Task:
    """kthread_run(oom_reaper, NULL, "oom_reaper") at subsys_initcall."""
    proc = Process(pid, "oom_reaper", uid=0, oom_score_adj=0, parent=None, kthread=True)
    return Task(pid, proc, "oom_reaper", None)


def wake_oom_reaper(k: Kernel, mm: MmStruct, task: Task) -> None:
    """Hand mm to the reaper policy (4.6 wake_oom_reaper(), 5.18 queue_oom_reaper())."""
    if k.oom_reaper_th is None:
        return
    work = ReapWork(mm, task)
    if k.features.reap_queued_once:
        if mm.oom_reap_queued:                 # test_and_set_bit(MMF_OOM_REAP_QUEUED)
            k.log.emit("reaper_requeue_skip", **_work_ids(work))
            return
        mm.oom_reap_queued = True
    # Pin with mm_count, not mm_users: the reaper must not delay the teardown.
    mm.mmgrab("oom_reaper")
    delay = k.policies.reaper_delay(work)
    if delay:
        k.log.emit("reaper_timer", **_work_ids(work), delay_s=seconds(delay))
        k.reaper_timers.add(work)
        k.spawn(_reaper_timer, k, work, k.clock.now + delay)
    else:
        _queue(k, work)


async def _reaper_timer(k: Kernel, work: ReapWork, due: int) -> None:
    """The OOM_REAPER_DELAY timer (5.18 wake_oom_reaper()): an mm whose exit
    set MMF_OOM_SKIP meanwhile needs no reaper."""
    await k.clock.wait_until(due)
    k.reaper_timers.discard(work)
    if work.mm.oom_skip:
        k.log.emit("reaper_timer_skip", **_work_ids(work))
        work.mm.mmdrop("oom_reaper")
        return
    _queue(k, work)


def _queue(k: Kernel, work: ReapWork) -> None:
    if k.policies.reaper_queue(work):
        k.log.emit("reaper_queued", **_work_ids(work))
        k.oom_reaper_wait.wake_up_all()
    else:
        k.log.emit("reaper_dropped", **_work_ids(work))
        work.mm.mmdrop("oom_reaper")


async def oom_reaper(k: Kernel, me: Task) -> None:
    """The kthread: wait for work, reap it, repeat."""
    from trio.lowlevel import current_task  # a run's module, not a config's (sched.py)
    me.trio_task = current_task()
    while True:
        k.step(("reaper", "workbench_reaper_next"))
        work = k.policies.reaper_next()
        if work is None:
            await k.oom_reaper_wait.wait(me, TASK_INTERRUPTIBLE, "idle")
            continue
        await oom_reap_vmas(k, me, work)


async def oom_reap_vmas(k: Kernel, me: Task, work: ReapWork) -> None:
    """Try until an attempt succeeds or the policy gives up, tell the OOM
    killer what the policy says, then drop the pin."""
    attempt = 0
    result: str | None = None
    while result is None:
        attempt += 1
        result = await __oom_reap_vmas(k, me, work)
        if result is None:
            retry = k.policies.reaper_retry(work, attempt)
            k.step(None if retry.sleep_ns else ("reaper", "workbench_reaper_retry"))
            if retry.sleep_ns:
                await k.clock.sleep(me, retry.sleep_ns, TASK_UNINTERRUPTIBLE, "oom_reaper retry")
            if not retry.again:
                ids = _work_ids(work)
                # (6.19 stays silent if the exit set MMF_OOM_SKIP meanwhile)
                msg = {"msg": f"oom_reaper: unable to reap pid:{ids['pid']} ({ids['comm']})"} \
                    if k.features.oom_reaper_report and not work.mm.oom_skip else {}
                k.log.emit("reap_give_up", **ids, attempts=attempt, **msg)
                break
    after = k.policies.reaper_done(work, result is not None)
    task = work.task
    if after.exit_oom_victim and result != "gone":
        # 4.6: the victim cannot free more by itself or by the reaper: let
        # the killer choose another one, and never this one again.  When the
        # exit got there first, __oom_reap_task() returned before this.
        task.process.oom_score_adj = OOM_SCORE_ADJ_MIN
        if task.tif_memdie:
            exit_oom_victim(k, task)
    if after.oom_skip and not work.mm.oom_skip:
        work.mm.oom_skip = True                 # set_bit(MMF_OOM_SKIP, &mm->flags)
        k.log.emit("oom_skip", **_work_ids(work), by="oom_reaper")
    work.mm.mmdrop("oom_reaper")


async def __oom_reap_vmas(k: Kernel, me: Task, work: ReapWork) -> str | None:
    """One attempt: "reaped", "gone" (the exit got there first: nothing to
    do), or None when mmap_sem was contended."""
    mm = work.mm
    # Until 4.14 the reaper takes an mm_users reference, so it and exit_mmap()
    # never free at once; from 4.14 it works on the mm_count pin alone.
    pinned = not k.features.exit_mmap_oom_skip
    if pinned and not mm.mmget_not_zero():
        k.log.emit("reap_exit_race", **_work_ids(work))       # raced with exit: done
        return "gone"
    if not mm.mmap_sem.down_read_trylock():
        k.log.emit("reap_attempt", **_work_ids(work), result="contended")
        if pinned:
            await fork.mmput(k, me, mm)
        return None
    if mm.oom_skip:                             # exit_mmap() got there first (4.14)
        mm.mmap_sem.up_read()
        k.log.emit("reap_exit_race", **_work_ids(work))
        return "gone"
    k.log.emit("reap_attempt", **_work_ids(work), result="locked")
    freed = swap_freed = 0
    rate = k.machine.reap_rate
    for vma in reversed(mm.vmas) if k.features.reap_top_down else list(mm.vmas):
        details = k.policies.reap_vma(vma, mm)
        if details is None:
            continue
        while n := min(memory.zappable(vma, details), k.reap_chunk):
            await k.clock.sleep(me, k.machine.cost_ns(n, rate), TASK_UNINTERRUPTIBLE, "oom_reap")
            _, pages, entries = memory.zap(k, mm, vma, details, n)
            freed += pages
            swap_freed += entries
            vma.reaped = True                   # what user space finds there now is zeroes
    mm.mmap_sem.up_read()
    rss = {key: v for key, v in mm.rss_kb().items() if key != "total_vm_kb"}
    ids = _work_ids(work)
    msg = {"msg": f"oom_reaper: reaped process {ids['pid']} ({ids['comm']}), now "
                  f"anon-rss:{rss['anon_rss_kb']}kB, file-rss:{rss['file_rss_kb']}kB, "
                  f"shmem-rss:{rss['shmem_rss_kb']}kB"} if k.features.oom_reaper_report else {}
    swap = {"swap_kb": kb(swap_freed)} if k.swap.total else {}   # swap entries freed
    k.log.emit("reap_done", **ids, reaped_kb=kb(freed), **rss, **swap, **msg)
    if pinned:
        await fork.mmput(k, me, mm)
    return "reaped"


def _work_ids(work: ReapWork) -> dict:
    return {"pid": work.task.pid, "tgid": work.task.tgid, "comm": work.task.comm,
            "mm": work.mm.id}
