"""Victim selectors."""

from __future__ import annotations

from workbench.kernel.oom_kill import find_lock_task_mm, process_shares_mm, task_will_free_mem
from workbench.kernel.sched import Process
from workbench.policy import ABORT, OomControl, Policy, Victim, hookimpl

OOM_SCORE_ADJ_MIN = -1000


class Linux45(Policy):
    """Linux 4.5: per-thread scan aborting on TIF_MEMDIE or PF_EXITING, oom_badness
    with the 3% root bonus, the worst child sacrificed, sharers killed unless
    kthread, init or OOM_SCORE_ADJ_MIN."""

    name = "linux-4.5"
    concern = "victim"

    @hookimpl
    def workbench_select_bad_process(self, oc: OomControl) -> Victim | object | None:
        chosen, chosen_points = None, 0
        for task in oc.threads():                           # for_each_process_thread
            if self.unkillable(task.process, oc):
                continue
            if task.tif_memdie:                             # a victim is pending
                return ABORT
            if task.mm is None:
                continue
            if task_will_free_mem(task):                    # 4.5 only: an exiting thread
                return ABORT
            points = self.badness(task.process, oc)
            if not points or points < chosen_points:
                continue
            # Prefer thread group leaders for display purposes.
            if points == chosen_points and chosen.is_leader:
                continue
            chosen, chosen_points = task, points
        return Victim(chosen, chosen_points) if chosen is not None else None

    @hookimpl
    def workbench_oom_sacrifice_child(self, oc: OomControl, victim: Victim) -> Victim:
        """Any eligible child with its own mm beats its parent: victim_points
        starts at 0, not at the parent's score (mm/oom_kill.c oom_kill_process(), 4.5)."""
        best, best_points = victim, 0
        for child in victim.task.process.children:
            if process_shares_mm(child, victim.task.mm):
                continue
            points = self.badness(child, oc)
            if points > best_points:
                best, best_points = Victim(find_lock_task_mm(child), points), points
        return best

    @hookimpl
    def workbench_oom_kill_sharer(self, oc: OomControl, victim: object, process: Process) -> bool:
        return not (process.kthread or process.init
                    or process.oom_score_adj == OOM_SCORE_ADJ_MIN)

    @staticmethod
    def unkillable(proc: Process, oc: OomControl) -> bool:
        """oom_unkillable_task(): init, kthreads, tasks outside the memcg."""
        return proc.init or proc.kthread or (oc.memcg is not None and proc.cgroup is not oc.memcg)

    def badness(self, proc: Process, oc: OomControl) -> int:
        """oom_badness(): rss + swap entries + page tables, 3% off for
        CAP_SYS_ADMIN, oom_score_adj in thousandths of totalpages, at least 1."""
        if self.unkillable(proc, oc):
            return 0
        task = find_lock_task_mm(proc)
        if task is None or proc.oom_score_adj == OOM_SCORE_ADJ_MIN:
            return 0
        mm = task.mm
        points = mm.get_mm_rss() + mm.swapents + mm.nr_ptes + mm.nr_pmds
        if proc.cap_sys_admin:
            points -= points * 3 // 100
        points += proc.oom_score_adj * (oc.totalpages // 1000)
        return points if points > 0 else 1


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(Linux45)
