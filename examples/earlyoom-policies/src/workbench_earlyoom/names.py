"""`earlyoom-names`: Linux 4.5's victim choice with earlyoom's name patterns.

earlyoom (rfjakob/earlyoom) kills the process with the highest
/proc/PID/oom_score, after adding 300 to it when the process name (comm)
matches --prefer and subtracting 300 when it matches --avoid; --ignore takes
a process out of the candidates.  No kernel ever did this: here it is done in
the kernel's own scan, so the rest of the OOM path (the abort rule, the kill,
the reaper) stays the kernel's.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.api import (
    ABORT,
    OOM_SCORE_ADJ_MIN,
    MachineSpec,
    OomControlView,
    Policy,
    ProcessView,
    TaskView,
    Victim,
    find_lock_task_mm,
    hookimpl,
    task_will_free_mem,
)

TASK_COMM_LEN = 16          # /proc/PID/comm holds at most 15 bytes


class NamesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prefer: str | None = Field(None, description="regex: processes whose comm matches it get "
                               "`points` more oom_score (earlyoom --prefer)")
    avoid: str | None = Field(None, description="regex: processes whose comm matches it get "
                              "`points` less oom_score (earlyoom --avoid)")
    ignore: str | None = Field(None, description="regex: processes whose comm matches it are "
                               "never chosen (earlyoom --ignore)")
    points: int = Field(300, ge=0, le=1000, description="the oom_score adjustment of prefer "
                        "and avoid, in oom_score units (thousandths of totalpages)")
    # The name the built-in `linux` selector uses, so that the v4.6 preset's
    # follow-up "no-exiting-abort" switches it off here too.
    abort_on_exiting: bool = Field(True, description="abort the scan on a PF_EXITING thread "
                                   "that still has an mm (4.5; gone in 4.6)")

    @field_validator("prefer", "avoid", "ignore")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a regular expression: {e}") from None
        return v


class EarlyoomNames(Policy):
    """Linux 4.5's oom_badness() with earlyoom's name patterns: `prefer`
    adds and `avoid` subtracts `points` of oom_score (300), `ignore` removes
    the process; the era's abort rules, no child sacrifice."""

    name = "earlyoom-names"
    concern = "victim"
    Options = NamesOptions

    def __init__(self, options: NamesOptions, machine: MachineSpec):
        super().__init__(options, machine)
        self.prefer, self.avoid, self.ignore = (
            re.compile(p) if p is not None else None
            for p in (options.prefer, options.avoid, options.ignore))
        self.points = options.points
        self.abort_on_exiting = options.abort_on_exiting

    @hookimpl
    def workbench_select_bad_process(self, oc: OomControlView) -> Victim | object | None:
        """4.5 select_bad_process(): every thread in task-list order, the highest
        score wins, a tie goes to the thread first seen unless it is not a group
        leader."""
        chosen: TaskView | None = None
        chosen_points = 0
        for task in oc.threads():
            proc = task.process
            if proc.init or proc.kthread or not oc.in_scope(task):   # oom_unkillable_task()
                continue
            # The era's abort rule.  signal->oom_mm is set only by kernels with
            # 4.9's rule: there a victim process blocks the scan until its mm
            # has MMF_OOM_SKIP.  Otherwise (4.5 to 4.8) any in-scope TIF_MEMDIE
            # thread does: a victim is still using the memory reserves.
            if proc.oom_mm is not None:
                if proc.oom_mm.oom_skip:
                    continue
                return ABORT
            if task.tif_memdie:
                return ABORT
            if task.mm is None or task.state == "X":
                continue
            # 4.5 task_will_free_mem(): an exiting thread frees its memory soon
            if self.abort_on_exiting and task_will_free_mem(task):
                return ABORT
            points = self.score(proc, oc)
            if not points or points < chosen_points:
                continue
            if points == chosen_points and chosen is not None and chosen.is_leader:
                continue            # prefer thread group leaders for display purposes
            chosen, chosen_points = task, points
        return Victim(chosen, chosen_points) if chosen is not None else None

    @hookimpl
    def workbench_oom_sacrifice_child(self, oc: OomControlView, victim: Victim) -> Victim:
        # earlyoom kills the process it chose, never a child in its place.
        return victim

    @hookimpl
    def workbench_oom_kill_sharer(self, oc: OomControlView, victim: TaskView,
                                  process: ProcessView) -> bool:
        # 4.5 oom_kill_process(): every other process using the victim's mm is
        # killed too, unless it is a kthread, init or OOM_SCORE_ADJ_MIN.
        if process.kthread or process.init:
            return False
        return process.oom_score_adj != OOM_SCORE_ADJ_MIN

    def score(self, proc: ProcessView, oc: OomControlView) -> int:
        """oom_badness() in pages with earlyoom's adjustment; 0: never this one."""
        comm = proc.comm[:TASK_COMM_LEN - 1]
        if self.ignore is not None and self.ignore.search(comm):
            return 0
        points = badness(proc, oc)
        if not points:
            return 0
        # earlyoom adjusts oom_score, which 4.5's proc_oom_score() computes as
        # badness * 1000 / totalpages: one oom_score point is totalpages/1000
        # pages of badness.  So +-300 oom_score is +-300 * totalpages / 1000
        # pages, scaled as oom_badness() scales oom_score_adj (totalpages / 1000
        # first, in integers); the score stays at least 1, as oom_badness()'s
        # does, so an avoided process is still a last resort.
        unit = oc.totalpages // 1000
        if self.prefer is not None and self.prefer.search(comm):
            points += self.points * unit
        if self.avoid is not None and self.avoid.search(comm):
            points -= self.points * unit
        return max(points, 1)


def badness(proc: ProcessView, oc: OomControlView) -> int:
    """Linux 4.5 oom_badness(): rss + swap entries + page tables, 3% off for
    CAP_SYS_ADMIN, oom_score_adj thousandths of totalpages, at least 1; 0 for
    a process that is never killed or has no mm left."""
    if proc.init or proc.kthread or proc.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return 0
    if oc.memcg is not None and proc.cgroup is not oc.memcg:
        return 0
    task = find_lock_task_mm(proc)          # a live thread that still has the mm
    if task is None:
        return 0
    mm = task.mm
    points = mm.get_mm_rss() + mm.swapents + mm.nr_ptes + mm.nr_pmds
    if proc.cap_sys_admin:
        points -= points * 3 // 100
    points += proc.oom_score_adj * (oc.totalpages // 1000)
    return points if points > 0 else 1
