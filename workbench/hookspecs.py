"""Hook specifications of the workbench (project name "workbench").

Grouped by lifecycle, as pluggy's and pytest's are.  Registration runs once
per process; the decision hooks run inside a simulated kernel, synchronously,
and are answered by the one policy an arm chose for that concern (firstresult):
the kernel carries the decision out in virtual time.  Kernel objects passed
in are read-only to plugins.  A hook that raises or returns something invalid
ends that run with outcome "error", naming the policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from workbench.kernel.mm import MmStruct, Vma
    from workbench.kernel.sched import Process, Task
    from workbench.policy import (AfterReap, OomControl, ReapWork, Retry, UserKill, UserspaceView,
                                  Victim, ZapDetails)
    from workbench.registry import PolicyRegistry

hookspec = pluggy.HookspecMarker("workbench")


# -- registration ---------------------------------------------------------------

@hookspec
def workbench_register_policies(registry: PolicyRegistry) -> None:
    """Register named policies and presets.

    Called once when the plugins are loaded (entry-point group "workbench").
    Call ``registry.add_policy(cls)`` for each victim selector, reaper policy,
    VMA filter or userspace killer class (``cls.concern`` is "victim",
    "reaper", "vma_filter" or "userspace"; ``cls.name`` is what a config's
    arm names), and ``registry.add_preset(name, victim=..., reaper=...,
    vma_filter=..., doc=...)`` for each preset (``userspace=...`` is
    optional, "none" by default).  Returns nothing.
    """


# -- victim selection (concern "victim") -------------------------------------------

@hookspec(firstresult=True)
def workbench_select_bad_process(oc: OomControl) -> Victim | object | None:
    """Choose whom the OOM killer kills: select_bad_process() as a whole.

    Called by out_of_memory() (global, or for oc.memcg) with oom_lock held,
    after the fatal-signal/exiting shortcut.  The policy owns the scan
    (which tasks are eligible, oc.in_scope() for memcg OOMs), the rule that
    aborts while a victim is pending, and badness.  Return a
    ``Victim(task, points)``, ``ABORT`` to kill nothing this time (the
    allocator retries), or None when nothing is killable (the kernel panics).
    """


@hookspec(firstresult=True)
def workbench_oom_kill_allocating_task(oc: OomControl) -> bool:
    """Whether vm.oom_kill_allocating_task is set: kill the allocating task
    instead of scanning.

    Optional (no implementation: False).  Called by the global
    out_of_memory() after the fatal-signal/exiting shortcut and before
    workbench_select_bad_process; never for a memcg OOM.  When True and
    oc.current is eligible (it has an mm, is neither init nor a kthread, and
    its oom_score_adj is not OOM_SCORE_ADJ_MIN), the kernel kills it with
    points 0 and "Out of memory (oom_kill_allocating_task)", without
    scanning: a pending victim does not stop it.  Otherwise the scan runs.
    """


@hookspec(firstresult=True)
def workbench_oom_sacrifice_child(oc: OomControl, victim: Victim) -> Victim:
    """Whom to kill instead of the selected process.

    Called by oom_kill_process() after it printed "Kill process ... or
    sacrifice child".  Return ``victim`` itself, or a Victim for one of its
    children (4.5 prefers the child with the highest nonzero badness).
    """


@hookspec(firstresult=True)
def workbench_oom_kill_sharer(oc: OomControl, victim: Task, process: Process) -> bool:
    """Whether to SIGKILL another process that shares the victim's mm.

    Called by oom_kill_process() for every process outside the victim's
    thread group that uses the same mm (CLONE_VM, vfork, use_mm kthreads).
    Return True to kill it.  A sharer left alive keeps the memory in use,
    so the kernel then does not hand the mm to the OOM reaper (the seed's
    can_oom_reap = false).
    """


# -- the OOM reaper (concern "reaper") ---------------------------------------------

@hookspec(firstresult=True)
def workbench_reaper_enabled() -> bool:
    """Whether the oom_reaper kernel thread exists.

    Called once when the simulated kernel boots (oom_init).  False models a
    kernel without the reaper: wake_oom_reaper() then does nothing.
    """


@hookspec(firstresult=True)
def workbench_reaper_queue(work: ReapWork) -> bool:
    """Hand an mm to the reaper: wake_oom_reaper().

    Called by oom_kill_process() after pinning work.mm (mm_count).  Return
    True if the policy queued it (the kernel wakes the reaper), False if it
    dropped it (the kernel drops the pin and logs reaper_dropped).
    """


@hookspec(firstresult=True)
def workbench_reaper_delay(work: ReapWork) -> int:
    """How long to wait before queuing work: OOM_REAPER_DELAY (5.18, 2 s).

    Optional (no implementation: 0, queue at once).  Called by
    oom_kill_process() before workbench_reaper_queue.  With a delay the
    kernel arms a timer; when it fires, an mm that has MMF_OOM_SKIP by then
    (its exit got there first) is dropped without being queued.  Return
    nanoseconds, 0 or more.
    """


@hookspec(firstresult=True)
def workbench_reaper_next() -> ReapWork | None:
    """The work the reaper thread should do next, or None to sleep.

    Called by the oom_reaper thread each time it wakes.  Whether the work
    leaves the queue now or when it is done is the policy's choice (the
    seed's slot stays taken until the reap ends).
    """


@hookspec(firstresult=True)
def workbench_reaper_retry(work: ReapWork, attempt: int) -> Retry:
    """What to do after the attempt-th failed reap of work.

    Called when down_read_trylock(mmap_sem) failed.  Return
    ``Retry(sleep_ns, again)``: sleep that long (schedule_timeout_idle),
    then try again or give up.
    """


@hookspec(firstresult=True)
def workbench_reaper_done(work: ReapWork, reaped: bool) -> AfterReap | None:
    """The reaper finished with work: reaped, or gave up.

    Called after the last attempt, before the reaper drops its pin on the
    mm.  Return what to tell the OOM killer, an ``AfterReap``, or None for
    nothing.  The seed clears its slot here and tells the killer nothing;
    4.6 clears TIF_MEMDIE after a successful reap; 4.9 and later set
    MMF_OOM_SKIP either way.
    """


# -- the VMA filter (concern "vma_filter") ------------------------------------------

@hookspec(firstresult=True)
def workbench_reap_vma(vma: Vma, mm: MmStruct) -> ZapDetails | None:
    """Whether and how the reaper unmaps one VMA.

    Called by the reaper for each VMA of the victim's mm, in address
    order, with mmap_sem held for read.  Return ZapDetails to unmap the
    VMA's pages (anonymous pages and, with check_swap_entries, swap entries
    are freed; page-cache and shmem pages are only unmapped; with
    ignore_dirty, file pages with a dirty pte are left), or None to skip it.
    """


# -- userspace OOM killers (concern "userspace") ------------------------------------

@hookspec(firstresult=True)
def workbench_userspace_enabled() -> bool:
    """Whether a userspace OOM killer daemon runs on the machine.

    Called once when the simulated kernel boots.  False (the policy "none",
    every preset's) starts nothing.
    """


@hookspec(firstresult=True)
def workbench_userspace_poll(view: UserspaceView) -> UserKill:
    """One poll of the daemon: whom to SIGKILL now, and when to poll again.

    Called at boot and then after each sleep the previous answer asked for,
    while any scenario process lives or is still to start.  Return
    ``UserKill(sleep_ns, kill=None, reason="")``: the kernel sends SIGKILL to
    ``kill`` through kill(2) (no TIF_MEMDIE, no OOM reaper; a live process,
    not init or a kthread), logs userspace_kill, then sleeps the daemon
    sleep_ns (more than 0).
    """
