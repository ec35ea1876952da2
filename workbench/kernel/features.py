"""Kernel-core behaviour that changed after 4.5, as switches (docs/history.md).

The simulated kernel is Linux 4.5.  Where a later kernel changed a mechanism
the policies cannot reach - what the allocator grants a victim, what exit_mmap
tells the OOM killer, which log lines exist - the change is one field here,
switched on by the follow-up patch that made it (plugins/history.py).  The
kernel tests a field, never a preset or a version.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from workbench.workload.spec import ScenarioSpec


@dataclass(frozen=True)
class Features:
    # 4.6 "mm, oom_reaper: report success/failure": the reaper's two log lines.
    oom_reaper_report: bool = False
    # 4.6 "mm, printk: introduce new format string for flags": gfp masks are printed
    # with their flag names, "%#x(%pGg)".
    gfp_flag_names: bool = False
    # 4.7 "mm, oom: rework oom detection": reclaim gives up after this many
    # rounds without progress (MAX_RECLAIM_RETRIES, also the memcg charge's
    # retries), and out_of_memory() is called for !__GFP_FS and returns at
    # once.  0 keeps 4.5's unbounded "any progress, retry".
    reclaim_retries: int = 0
    # 4.7 down_write_killable(): an mmap_sem writer may wait killable.
    down_write_killable: bool = False
    # 4.8/4.9: every process sharing the victim's mm is killed; a kthread
    # sharer (use_mm) no longer stops the reap; a global-init sharer hides the
    # mm (MMF_OOM_SKIP) with "oom killer ... has mm pinned by ...".
    mm_pinned_by_init: bool = False
    # 4.7 try_oom_reaper() and 4.8's fortified task_will_free_mem(): a dying
    # task takes the shortcut only if every process sharing its mm is dying
    # too and the mm is not MMF_OOM_SKIP, and the shortcuts wake the reaper.
    will_free_mem_fortified: bool = False
    # 4.9 "fortify oom killer even more": the victim's process keeps its mm in
    # signal->oom_mm (tsk_is_oom_victim) and the reaper's verdict can set
    # MMF_OOM_SKIP on it.
    oom_mm: bool = False
    # 4.14 212925802454: the reaper pins only mm_count, so exit_mmap() and the
    # reaper free in parallel, and exit_mmap() of a victim's mm sets
    # MMF_OOM_SKIP, then takes mmap_sem for write to wait out the reaper.
    exit_mmap_oom_skip: bool = False
    # 4.14 cd04ae1e2dc8: every thread of a victim gets ALLOC_OOM, which goes
    # down to half the min watermark, not ALLOC_NO_WATERMARKS.
    partial_reserves: bool = False
    # 4.19 "mm, oom: remove sleep from under oom_lock".
    no_post_kill_sleep: bool = False
    # 4.19 29ef680ae7c2 and 4.14's NOFS memcg OOM: memcg OOMs run in the
    # charge path, for kernel and GFP_NOFS charges too.
    memcg_oom_in_charge: bool = False
    # 4.19 3d8b38eb81ca: a cgroup's oom_group kills all of its tasks.
    memory_oom_group: bool = False
    # 5.16 60e2793d440a: a VM_FAULT_OOM that reaches the #PF handler no
    # longer invokes the global OOM killer (pagefault_out_of_memory() retries).
    pagefault_oom_no_kill: bool = False
    # 5.0 "oom, oom_reaper: do not enqueue same task twice": MMF_OOM_REAP_QUEUED.
    reap_queued_once: bool = False
    # ≈5.x: "Killed process ... UID:%u pgtables:%lukB oom_score_adj:%hd" and
    # the "oom-kill:constraint=..." line.
    modern_oom_report: bool = False
    # 5.18 a213e5cf71cb: no munlock_vma_pages_all() pass before exit_mmap()
    # unmaps: mlocked pages are freed with the unmap, at its rate.
    no_munlock_pass: bool = False
    # 6.18: the reaper walks the VMAs top-down (mas_for_each_rev).
    reap_top_down: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def changed(self) -> dict[str, object]:
        """The switches that differ from 4.5, for the log header."""
        base = Features()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(base, f.name)}

    def unsupported(self, scenario: ScenarioSpec) -> list[str]:
        """What of the scenario this kernel cannot do, and does instead (the
        log header's `notes`)."""
        notes = []
        if not self.down_write_killable and any(
                getattr(s, "write", False) and getattr(s, "mode", "") == "killable"
                for s in _all_steps(scenario)):
            notes.append('mmap_lock = "write", mode = "killable" waits uninterruptibly: '
                         "down_write_killable() is 4.7 (follow-up down-write-killable)")
        if not self.memory_oom_group and any(c.oom_group for c in scenario.cgroups):
            notes.append("oom_group = true is ignored: memory.oom.group is 4.19 "
                         "(follow-up memory-oom-group)")
        return notes


def _all_steps(scenario: ScenarioSpec) -> Iterator[object]:
    stack = [s for p in scenario.processes for t in p.threads for s in t.program]
    while stack:
        step = stack.pop()
        yield step
        stack.extend(getattr(step, "body", ()))
