"""Victim selectors: Linux's select_bad_process(), oom_badness() and the kill's
choices, with the rules that changed after 4.5 as options (docs/history.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from workbench.kernel.oom_kill import (OOM_SCORE_ADJ_MIN, find_lock_task_mm, process_shares_mm,
                                       task_will_free_mem)
from workbench.kernel.mm import MmStruct
from workbench.kernel.sched import Process
from workbench.policy import ABORT, OomControl, Policy, Victim, hookimpl


class LinuxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    abort_on_exiting: bool = Field(True, description="abort the scan on a PF_EXITING thread "
                                   "that still has an mm (4.5; gone in 4.6)")
    oom_mm_victims: bool = Field(False, description="abort on a victim process until its mm "
                                 "has MMF_OOM_SKIP, skip MMF_OOM_SKIP mms, scan processes "
                                 "(4.9 tsk_is_oom_victim), instead of 4.5's per-thread "
                                 "TIF_MEMDIE abort")
    root_bonus: bool = Field(True, description="3% off the badness of CAP_SYS_ADMIN "
                             "processes (gone in 4.17)")
    child_sacrifice: bool = Field(True, description="kill the worst child instead of the "
                                  "selected process (gone in 5.1)")
    skip_vfork: bool = Field(False, description="never select a vfork child (4.8)")
    kill_all_sharers: bool = Field(False, description="kill every process sharing the mm, "
                                   "OOM_SCORE_ADJ_MIN ones too; kthreads and init are never "
                                   "killed (4.8)")
    signed_badness: bool = Field(False, description="badness is a signed score that may be 0 "
                                 "or less and still be chosen, not at least 1 (5.9)")


class Linux(Policy):
    """Linux's victim selection.  The defaults are 4.5: per-thread scan
    aborting on TIF_MEMDIE or PF_EXITING, oom_badness with the 3% root bonus,
    the worst child sacrificed, sharers killed unless kthread, init or
    OOM_SCORE_ADJ_MIN; each later rule is an option."""

    name = "linux"
    concern = "victim"
    Options = LinuxOptions

    def __init__(self, options: BaseModel, machine: object):
        super().__init__(options, machine)
        # Read once: the scan asks for each rule per task.  A subclass with
        # Options of its own keeps the defaults of the rules it lacks.
        for name, field in LinuxOptions.model_fields.items():
            setattr(self, name, getattr(options, name, field.default))

    @hookimpl
    def workbench_select_bad_process(self, oc: OomControl) -> Victim | object | None:
        if self.oom_mm_victims:
            return self._scan_processes(oc)
        return self._scan_threads(oc)

    def _scan_threads(self, oc: OomControl) -> Victim | object | None:
        """4.5/4.6 select_bad_process() with oom_scan_process_thread()."""
        if self._aborts_on_thread(oc):
            return ABORT
        chosen, chosen_points = None, 0
        for task in oc.threads():                           # for_each_process_thread
            if self.unkillable(task.process, oc):
                continue
            if task.tif_memdie:                             # a victim is pending
                return ABORT
            if task.mm is None:
                continue
            if self.abort_on_exiting and task_will_free_mem(task):
                return ABORT                                # 4.5 only: an exiting thread
            points = self.badness(task.process, oc)
            if not points or points < chosen_points:
                continue
            # Prefer thread group leaders for display purposes.
            if points == chosen_points and chosen.is_leader:
                continue
            chosen, chosen_points = task, points
        return Victim(chosen, chosen_points) if chosen is not None else None

    def _aborts_on_thread(self, oc: OomControl) -> bool:
        """Whether the walk below would return ABORT, asked of the kernel's
        index of TIF_MEMDIE and PF_EXITING threads: only those can abort it
        (mm/oom_kill.c oom_scan_process_thread(), 4.5: OOM_SCAN_ABORT), and
        the walk's first one to do so, in list order, is where it stops and
        what it is charged.  Without one the walk cannot abort either."""
        for task in oc.pending_threads():
            if self.unkillable(task.process, oc):
                continue
            if task.tif_memdie or (task.mm is not None and self.abort_on_exiting
                                   and task_will_free_mem(task)):
                oc.scanned_through(task)
                return True
        return False

    def _aborts_on_process(self, oc: OomControl) -> bool:
        """The same for the per-process walk: only a victim with signal->oom_mm
        and no MMF_OOM_SKIP aborts it (mm/oom_kill.c oom_evaluate_task(), 4.9)."""
        for proc in oc.victim_processes():
            if self.unkillable(proc, oc) or proc.oom_mm.oom_skip:
                continue
            oc.scanned_through(proc)
            return True
        return False

    def _scan_processes(self, oc: OomControl) -> Victim | object | None:
        """4.9+ select_bad_process() with oom_evaluate_task(), per process."""
        if self._aborts_on_process(oc):
            return ABORT
        chosen, chosen_points = None, 0
        for proc in oc.processes():                         # for_each_process
            if self.unkillable(proc, oc):
                continue
            # A victim still has access to memory reserves and is being
            # killed: wait for it unless its mm is already reaped or gone.
            if proc.oom_mm is not None:
                if proc.oom_mm.oom_skip:
                    continue
                return ABORT
            points = self.badness(proc, oc)
            if points is None or (not self.signed_badness and not points):
                continue                                    # LONG_MIN, or 0 before 5.9
            if chosen is not None and points < chosen_points:   # a tie goes to the later one
                continue
            chosen, chosen_points = proc, points
        return Victim(find_lock_task_mm(chosen), chosen_points) if chosen is not None else None

    @hookimpl
    def workbench_oom_sacrifice_child(self, oc: OomControl, victim: Victim) -> Victim:
        """Any eligible child with its own mm beats its parent: victim_points
        starts at 0, not at the parent's score (mm/oom_kill.c oom_kill_process(), 4.5)."""
        if not self.child_sacrifice:
            return victim
        best, best_points = victim, 0
        for child in victim.task.process.children:
            if process_shares_mm(child, victim.task.mm):
                continue
            points = self.badness(child, oc)
            if points is not None and points > best_points:
                best, best_points = Victim(find_lock_task_mm(child), points), points
        return best

    @hookimpl
    def workbench_oom_kill_sharer(self, oc: OomControl, victim: object, process: Process) -> bool:
        if process.kthread or process.init:
            return False
        return self.kill_all_sharers or process.oom_score_adj != OOM_SCORE_ADJ_MIN

    @staticmethod
    def unkillable(proc: Process, oc: OomControl) -> bool:
        """oom_unkillable_task(): init, kthreads, tasks outside the memcg."""
        return proc.init or proc.kthread or (oc.memcg is not None and proc.cgroup is not oc.memcg)

    def eligible_mm(self, proc: Process, oc: OomControl) -> MmStruct | None:
        """The mm oom_badness() scores, or None where it returns 0 (LONG_MIN
        from 5.9): unkillable, no thread with an mm, OOM_SCORE_ADJ_MIN, an
        MMF_OOM_SKIP mm (4.9), a vfork child (4.8)."""
        if self.unkillable(proc, oc):
            return None
        task = find_lock_task_mm(proc)
        if task is None or proc.oom_score_adj == OOM_SCORE_ADJ_MIN:
            return None
        if self.oom_mm_victims and task.mm.oom_skip:    # 4.9: reaped or gone already
            return None
        if self.skip_vfork and proc.in_vfork:           # 4.8 b18dc5f291c0
            return None
        return task.mm

    def badness(self, proc: Process, oc: OomControl) -> int | None:
        """oom_badness(): rss + swap entries + page tables, 3% off for
        CAP_SYS_ADMIN, oom_score_adj in thousandths of totalpages, at least 1;
        0 for an ineligible process.  With signed_badness (5.9) the score may
        be 0 or less, and an ineligible process is None (LONG_MIN)."""
        mm = self.eligible_mm(proc, oc)
        if mm is None:
            return None if self.signed_badness else 0
        points = mm.get_mm_rss() + mm.swapents + mm.nr_ptes + mm.nr_pmds
        if self.root_bonus and proc.cap_sys_admin:
            points -= points * 3 // 100
        points += proc.oom_score_adj * (oc.totalpages // 1000)
        return points if points > 0 or self.signed_badness else 1


class Linux45(Linux):
    """Linux 4.5's victim selection: the defaults of `linux` (the name older
    configs use)."""

    name = "linux-4.5"


class OomKillAllocatingTask(Linux):
    """vm.oom_kill_allocating_task = 1 on Linux: a global OOM kills the task
    whose allocation failed (points 0, its worst child instead while child
    sacrifice lasts), without a scan and so without waiting for a pending
    victim; a memcg OOM, or an allocating task that is init, a kthread or
    at OOM_SCORE_ADJ_MIN, falls back to the `linux` scan.  Options: those of
    `linux`."""

    name = "oom_kill_allocating_task"

    @hookimpl
    def workbench_oom_kill_allocating_task(self, oc: OomControl) -> bool:
        # sysctl_oom_kill_allocating_task (mm/oom_kill.c out_of_memory(), 4.5);
        # the kernel checks that current may be killed.
        return True


class LargestRssOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    abort_on_exiting: bool = LinuxOptions.model_fields["abort_on_exiting"]
    oom_mm_victims: bool = LinuxOptions.model_fields["oom_mm_victims"]
    child_sacrifice: bool = Field(False, description="kill the child with the largest RSS "
                                  "instead (4.5's rule with RSS for badness; off: the "
                                  "largest process itself, as a userspace killer does)")
    skip_vfork: bool = LinuxOptions.model_fields["skip_vfork"]
    kill_all_sharers: bool = LinuxOptions.model_fields["kill_all_sharers"]


class LargestRss(Linux):
    """The process with the largest RSS (anon + file + shmem pages), as
    earlyoom --sort-by-rss or a naive killer ranks them: no page tables, no
    root bonus, oom_score_adj ignored except that OOM_SCORE_ADJ_MIN is never
    chosen.  The scan, its abort rule (4.5's TIF_MEMDIE and PF_EXITING, or
    4.9's oom_mm with oom_mm_victims) and the kill are `linux`'s."""

    name = "largest-rss"
    Options = LargestRssOptions

    def badness(self, proc: Process, oc: OomControl) -> int | None:
        mm = self.eligible_mm(proc, oc)
        if mm is None:
            return 0
        # At least 1 for an eligible process, as 4.5's oom_badness(): a
        # process whose RSS is all gone can still be chosen, and the scan
        # panics only when nothing is eligible.
        return max(mm.get_mm_rss(), 1)


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(Linux)
    registry.add_policy(Linux45)
    registry.add_policy(OomKillAllocatingTask)
    registry.add_policy(LargestRss)
