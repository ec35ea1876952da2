"""The reaper's history: follow-up patches as named units, and the presets
built from them (docs/history.md).

Every preset is Linux 4.5 (victim `linux`, no reaper, VMA filter `linux`)
plus a list of follow-ups, applied in this file's order - the order they
reached mainline - so that a later change wins over an earlier one where
both set the same thing.
"""

from __future__ import annotations

from workbench.policy import hookimpl

NO_REAPER = ()
PATCH = ("oom-reaper",)
V4_6 = PATCH + ("no-exiting-abort", "reap-queue-lifo", "clear-tif-memdie-after-reap",
                "oom-reaper-report", "gfp-flag-names")
MODERN = V4_6 + (
    "clear-tif-memdie-after-give-up", "reclaim-retries-16", "down-write-killable",
    "skip-vfork", "kill-all-sharers", "task-will-free-mem-fortified", "mmf-oom-skip",
    "zap-details-dropped", "exit-mmap-sets-oom-skip", "alloc-oom-partial-reserves",
    "no-root-bonus", "no-post-kill-sleep", "memcg-oom-in-charge-path", "memory-oom-group",
    "reap-queued-once", "no-child-sacrifice", "modern-oom-report", "signed-badness",
    "no-pagefault-oom",
    "reap-mlocked", "oom-reaper-delay", "reap-top-down")


def _follow_ups(registry: object) -> None:
    add = registry.add_follow_up
    add("oom-reaper", since="4.6", commit="aac453635549 mm, oom: introduce oom reaper",
        doc="the oom_reaper kthread: one mm_to_reap slot, 10 trylocks HZ/10 apart, anonymous "
            "and private VMAs unmapped, nothing told to the OOM killer",
        policies={"reaper": "linux"})
    add("no-exiting-abort", since="4.6",
        commit="mm: oom_kill: don't ignore oom score on exiting tasks (Johannes Weiner)",
        doc="a PF_EXITING thread no longer aborts the victim scan",
        options={"victim": {"abort_on_exiting": False}})
    add("reap-queue-lifo", since="4.6",
        commit="03049269de43 mm, oom_reaper: implement OOM victims queuing",
        doc="the slot becomes oom_reaper_list, pushed and popped at the head (LIFO); a task "
            "already queued is not added twice",
        options={"reaper": {"queue": "lifo"}})
    add("clear-tif-memdie-after-reap", since="4.6",
        commit="36324a990cf5 oom: clear TIF_MEMDIE after oom_reaper managed to unmap the "
               "address space",
        doc="a successful reap clears the victim's TIF_MEMDIE and sets its oom_score_adj to "
            "OOM_SCORE_ADJ_MIN; after a failure the flag stays",
        options={"reaper": {"after_reap": "exit_oom_victim"}})
    add("oom-reaper-report", since="4.6", commit="mm, oom_reaper: report success/failure",
        doc='"oom_reaper: reaped process ..." and "oom_reaper: unable to reap pid:..."',
        kernel={"oom_reaper_report": True})
    add("gfp-flag-names", since="4.6", commit="mm, printk: introduce new format string for flags",
        doc='gfp masks in the OOM report and allocation failures carry their flag names: '
            '"gfp_mask=0x24000c0(GFP_KERNEL)"',
        kernel={"gfp_flag_names": True})
    add("clear-tif-memdie-after-give-up", since="4.7",
        commit="449d777d7ad6 mm, oom_reaper: clear TIF_MEMDIE for all tasks queued for "
               "oom_reaper",
        doc="giving up clears TIF_MEMDIE too, so the killer can move on",
        options={"reaper": {"after_give_up": "exit_oom_victim"}})
    add("reclaim-retries-16", since="4.7", commit="mm, oom: rework oom detection",
        doc="reclaim gives up after 16 rounds without progress (MAX_RECLAIM_RETRIES), for "
            "memcg charges too; out_of_memory() is called for GFP_NOFS and returns at once",
        kernel={"reclaim_retries": 16})
    add("down-write-killable", since="4.7", commit="mm: make mmap_sem for write waits killable",
        doc='an mmap_sem writer may wait killable (mmap_lock = "write", mode = "killable")',
        kernel={"down_write_killable": True})
    add("skip-vfork", since="4.8", commit="b18dc5f291c0 mm, oom: skip vforked tasks from being "
                                          "selected",
        doc="a vfork child is never selected", options={"victim": {"skip_vfork": True}})
    add("kill-all-sharers", since="4.8",
        commit="mm, oom: kill all tasks sharing the mm; 4.9 oom_reaper: kthreads may be reaped",
        doc="every process sharing the victim's mm is killed, OOM_SCORE_ADJ_MIN ones too; a "
            "kthread sharer does not stop the reap; a global-init sharer hides the mm with "
            '"oom killer ... has mm pinned by ..."',
        options={"victim": {"kill_all_sharers": True}}, kernel={"mm_pinned_by_init": True})
    add("task-will-free-mem-fortified", since="4.8",
        commit="mm, oom: fortify task_will_free_mem(); 4.7 oom, oom_reaper: try to reap tasks "
               "which skip regular OOM killer path",
        doc="the dying-task shortcuts need every process sharing the mm to be dying, skip "
            "reaped mms, and hand the mm to the reaper",
        kernel={"will_free_mem_fortified": True})
    add("mmf-oom-skip", since="4.9", commit="fortify oom killer even more (signal->oom_mm, "
                                            "MMF_OOM_SKIP)",
        doc="a victim process aborts the scan until its mm has MMF_OOM_SKIP; the reaper sets "
            "MMF_OOM_SKIP after every reap or give-up and no longer clears TIF_MEMDIE",
        options={"victim": {"oom_mm_victims": True},
                 "reaper": {"after_reap": "oom_skip", "after_give_up": "oom_skip"}},
        kernel={"oom_mm": True})
    add("zap-details-dropped", since="4.10",
        commit="mm: drop zap_details::ignore_dirty / check_swap_entries",
        doc="the reaper unmaps dirty file ptes too", options={"vma_filter": {"zap_details": False}})
    add("exit-mmap-sets-oom-skip", since="4.14",
        commit="212925802454 mm: oom: let oom_reap_task and exit_mmap run concurrently",
        doc="the reaper pins only mm_count, so it and exit_mmap() free in parallel; exit_mmap() "
            "of a victim sets MMF_OOM_SKIP",
        kernel={"exit_mmap_oom_skip": True})
    add("alloc-oom-partial-reserves", since="4.14",
        commit="cd04ae1e2dc8 mm, oom: do not rely on TIF_MEMDIE for memory reserves access",
        doc="every thread of a victim may allocate down to half the min watermark (ALLOC_OOM) "
            "instead of the whole reserve",
        kernel={"partial_reserves": True})
    add("no-root-bonus", since="4.17", commit="mm, oom: remove 3% bonus for CAP_SYS_ADMIN "
                                              "processes",
        doc="badness is rss + swap + page tables + adj only",
        options={"victim": {"root_bonus": False}})
    add("no-post-kill-sleep", since="4.19", commit="mm, oom: remove sleep from under oom_lock",
        doc="no one-jiffy sleep after a kill", kernel={"no_post_kill_sleep": True})
    add("memcg-oom-in-charge-path", since="4.19",
        commit="29ef680ae7c2 memcg, oom: move out_of_memory back to the charge path",
        doc="a memcg OOM runs in the charge itself, for kernel and GFP_NOFS charges too, with 16 "
            "reclaim retries",
        kernel={"memcg_oom_in_charge": True})
    add("memory-oom-group", since="4.19", commit="3d8b38eb81ca mm, oom: introduce "
                                                 "memory.oom.group",
        doc="an OOM in a cgroup with oom_group = true kills every task in it",
        kernel={"memory_oom_group": True})
    add("reap-queued-once", since="5.0",
        commit="oom, oom_reaper: do not enqueue same task twice (MMF_OOM_REAP_QUEUED)",
        doc="an mm is handed to the reaper at most once", kernel={"reap_queued_once": True})
    add("no-child-sacrifice", since="5.1", commit='mm, oom: remove "prefer children over '
                                                  'parent" heuristic',
        doc="the selected process itself is killed",
        options={"victim": {"child_sacrifice": False}})
    add("modern-oom-report", since="5.x", commit="oom report reorganised",
        doc='the "oom-kill:constraint=..." line, "Killed process ... UID pgtables oom_score_adj"',
        kernel={"modern_oom_report": True})
    add("signed-badness", since="5.9",
        commit="9066e5cfb73c mm, oom: make the calculation of oom badness more accurate",
        doc="badness is a signed score: a process at 0 or below is still chosen over one "
            "lower, not scored 1",
        options={"victim": {"signed_badness": True}})
    add("no-pagefault-oom", since="5.16",
        commit="60e2793d440a mm, oom: do not trigger out_of_memory from the #PF",
        doc="a failed user fault retries instead of invoking the global OOM killer",
        kernel={"pagefault_oom_no_kill": True})
    add("reap-mlocked", since="5.18", commit="a213e5cf71cb mm/munlock: delete "
                                             "munlock_vma_pages_all(), allow oomreap",
        doc="VM_LOCKED VMAs are reaped, and exit_mmap() no longer munlocks them in a pass of "
            "its own first", options={"vma_filter": {"reap_mlocked": True}},
        kernel={"no_munlock_pass": True})
    add("oom-reaper-delay", since="5.18",
        commit="oom_kill.c: futex: delay the OOM reaper to allow time for proper futex cleanup",
        doc="each victim is queued 2 s after the kill (OOM_REAPER_DELAY), unless its exit set "
            "MMF_OOM_SKIP by then", options={"reaper": {"delay": "2s"}})
    add("reap-top-down", since="6.18", commit="mm/oom_kill: The OOM reaper traverses the VMA "
                                              "maple tree in reverse order",
        doc="the reaper walks the VMAs from the top of the address space",
        kernel={"reap_top_down": True})


@hookimpl
def workbench_register_policies(registry: object) -> None:
    _follow_ups(registry)
    base = {"victim": "linux", "reaper": "none", "vma_filter": "linux"}
    registry.add_preset("no-reaper", **base, follow_ups=NO_REAPER,
                        doc="Linux 4.5 as released: no OOM reaper")
    registry.add_preset("patch", **base, follow_ups=PATCH,
                        doc="Linux 4.5 plus the oom reaper patch alone (aac453635549)")
    registry.add_preset("v4.6", **base, follow_ups=V4_6,
                        doc="Linux 4.6 as released: the reaper's LIFO list, TIF_MEMDIE cleared "
                            "after a successful reap, its log lines")
    registry.add_preset("modern", **base, follow_ups=MODERN,
                        doc="Linux 6.19: MMF_OOM_SKIP, the 2 s reaper delay, mlocked VMAs "
                            "reaped, no child sacrifice, every sharer killed, partial reserves")
