"""The public API for policy plugins: everything a policy needs, in one module.

    from workbench.api import ABORT, Policy, Victim, hookimpl

Names here are a contract: they keep their meaning across releases, and the
modules they come from may move.  The kernel objects a policy is handed are
described by the read-only views below (typing Protocols): the attributes
listed are the ones a policy may read; anything else on those objects is the
simulator's own and may change.  A policy never writes to kernel objects: the
kernel carries out every decision itself, in virtual time (docs/plugins.md).
"""

from __future__ import annotations

from typing import Iterator, Protocol

from workbench.config import Dur, Rate, Size
from workbench.kernel.oom_kill import (OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN, find_lock_task_mm,
                                       process_shares_mm, task_will_free_mem)
from workbench.plugins.reaper import Linux as LinuxReaper
from workbench.plugins.victim import Linux as LinuxVictim
from workbench.plugins.vma_filter import Linux as LinuxVmaFilter
from workbench.policy import (ABORT, CONCERNS, AfterReap, MemInfo, NoOptions, OomControl, Policy,
                              ReapWork, Retry, UserKill, UserspaceView, Victim, ZapDetails,
                              hookimpl)
from workbench.registry import OPTIONAL_HOOKS, REQUIRED_HOOKS, PluginError, PolicyRegistry
from workbench.units import PAGE_SIZE, Duration
from workbench.workload.spec import MachineSpec

__all__ = [
    "ABORT", "AfterReap", "CONCERNS", "Dur", "Duration", "LinuxReaper", "LinuxVictim",
    "LinuxVmaFilter", "MachineSpec", "MemCgroupView", "MemInfo", "MmView", "NoOptions",
    "OOM_SCORE_ADJ_MAX", "OOM_SCORE_ADJ_MIN", "OPTIONAL_HOOKS", "OomControl", "OomControlView",
    "PAGE_SIZE", "PluginError", "Policy", "PolicyRegistry", "ProcessView", "REQUIRED_HOOKS",
    "Rate", "ReapWork", "Retry", "Size", "TaskView", "UserKill", "UserspaceView", "Victim",
    "VmaView", "ZapDetails", "find_lock_task_mm", "hookimpl", "process_shares_mm",
    "task_will_free_mem",
]

# The built-in `linux` policies, to subclass: LinuxVictim.badness(proc, oc)
# is oom_badness() and LinuxVictim.unkillable(proc, oc) oom_unkillable_task();
# a subclass keeps the defaults of the Linux options its own Options lack.
# find_lock_task_mm(proc): a live thread of proc that still has its mm, or
# None; task_will_free_mem(task): 4.5's "exiting with an mm" test;
# process_shares_mm(proc, mm): whether any thread of proc uses mm.

# Every count of memory below is in pages of PAGE_SIZE (4 KiB, x86-64).


class VmaView(Protocol):
    """A vm_area_struct: one mapping of an mm (MmView.vmas, in address order)."""

    @property
    def name(self) -> str:
        """The scenario's name for it (heap, stack, a file name...)."""
    @property
    def kind(self) -> str:
        """"anon", "file", "shmem" or "hugetlb"."""
    @property
    def size(self) -> int:
        """Its length in pages (vm_end - vm_start)."""
    @property
    def locked(self) -> bool:
        """VM_LOCKED (mlock)."""
    @property
    def shared(self) -> bool:
        """VM_SHARED: a MAP_SHARED mapping."""
    @property
    def anonymous(self) -> bool:
        """vma_is_anonymous(): private anonymous memory (no vm_ops)."""
    @property
    def hugetlb_page(self) -> bool:
        """is_vm_hugetlb_page(): the reaper can never zap it page by page."""
    @property
    def anon(self) -> int:
        """Anonymous pages resident here."""
    @property
    def file(self) -> int:
        """Page-cache pages mapped here."""
    @property
    def dirty(self) -> int:
        """Of those, the ones whose pte is dirty."""
    @property
    def shmem(self) -> int:
        """Shared-memory pages mapped here."""
    @property
    def hugetlb(self) -> int:
        """Hugetlb pages (no RSS counter holds them in 4.5)."""
    @property
    def swap(self) -> int:
        """Swap entries (0 while swap is not modelled)."""
    @property
    def resident(self) -> int:
        """anon + file + shmem + hugetlb."""
    @property
    def reaped(self) -> bool:
        """The OOM reaper has zapped pages of it."""


class MmView(Protocol):
    """An mm_struct: an address space, its counters and references."""

    @property
    def id(self) -> int:
        """Events name an mm by the pid of its first owner."""
    @property
    def vmas(self) -> list[VmaView]:
        """Its mappings in address order."""
    @property
    def anon(self) -> int:
        """MM_ANONPAGES."""
    @property
    def file(self) -> int:
        """MM_FILEPAGES."""
    @property
    def shmem(self) -> int:
        """MM_SHMEMPAGES."""
    @property
    def swapents(self) -> int:
        """MM_SWAPENTS."""
    @property
    def nr_ptes(self) -> int:
        """Page-table (PTE) pages."""
    @property
    def nr_pmds(self) -> int:
        """PMD pages."""
    @property
    def total_vm(self) -> int:
        """Pages mapped, resident or not."""
    @property
    def mm_users(self) -> int:
        """Users of the address space; 0 once exit_mmap() has begun."""
    @property
    def mm_count(self) -> int:
        """Pins on the struct itself (the reaper's work holds one)."""
    @property
    def oom_skip(self) -> bool:
        """MMF_OOM_SKIP (4.9 and later kernels only)."""

    def get_mm_rss(self) -> int:
        """anon + file + shmem, as get_mm_rss()."""


class MemCgroupView(Protocol):
    """A memory cgroup (cgroup v2 semantics as 4.5 implements them)."""

    @property
    def name(self) -> str:
        """Its path without the leading /."""
    @property
    def limit(self) -> int | None:
        """memory.max in pages; None for the root."""
    @property
    def usage(self) -> int:
        """Pages charged."""
    @property
    def oom_group(self) -> bool:
        """memory.oom.group (read by the kernel only from 4.19)."""


class ProcessView(Protocol):
    """A thread group: what the OOM killer reads of a process (signal_struct)."""

    @property
    def pid(self) -> int:
        """The tgid."""
    @property
    def comm(self) -> str:
        """What the kernel prints: the scenario's `comm`, else its process name."""
    @property
    def uid(self) -> int:
        """Its user id."""
    @property
    def cap_sys_admin(self) -> bool:
        """has_capability_noaudit(CAP_SYS_ADMIN): the scenario's `cap_sys_admin`, else uid 0."""
    @property
    def oom_score_adj(self) -> int:
        """-1000 (OOM_SCORE_ADJ_MIN: never kill) to 1000."""
    @property
    def parent(self) -> ProcessView | None:
        """Who forked it."""
    @property
    def children(self) -> list[ProcessView]:
        """Processes it forked, in fork order."""
    @property
    def threads(self) -> list[TaskView]:
        """Its threads, the leader first (dead ones included)."""
    @property
    def kthread(self) -> bool:
        """PF_KTHREAD: a kernel thread (never killed)."""
    @property
    def init(self) -> bool:
        """is_global_init(): pid 1 (never killed)."""
    @property
    def in_vfork(self) -> bool:
        """A vfork() child whose parent waits for it."""
    @property
    def cgroup(self) -> MemCgroupView | None:
        """Its memory cgroup (None: the root)."""
    @property
    def mm(self) -> MmView | None:
        """The mm it was created with."""
    @property
    def group_exit(self) -> bool:
        """SIGNAL_GROUP_EXIT: SIGKILL or exit_group() is under way."""
    @property
    def alive(self) -> bool:
        """Some thread has not finished exiting."""
    @property
    def oom_mm(self) -> MmView | None:
        """signal->oom_mm (4.9 and later): the mm it was killed with."""
    @property
    def core_dumping(self) -> bool:
        """SIGNAL_GROUP_COREDUMP."""


class TaskView(Protocol):
    """A task_struct: one thread."""

    @property
    def pid(self) -> int:
        """The thread's pid."""
    @property
    def tgid(self) -> int:
        """Its process's pid."""
    @property
    def comm(self) -> str:
        """Its process's name."""
    @property
    def name(self) -> str:
        """The scenario's name for the thread."""
    @property
    def process(self) -> ProcessView:
        """Its thread group."""
    @property
    def mm(self) -> MmView | None:
        """Its address space; None once exit_mm() has run, and for kthreads."""
    @property
    def exiting(self) -> bool:
        """PF_EXITING."""
    @property
    def tif_memdie(self) -> bool:
        """TIF_MEMDIE: an OOM victim with access to the memory reserves."""
    @property
    def state(self) -> str:
        """"R", "S" (interruptible), "D" (uninterruptible), "K" (killable) or "X" (dead)."""
    @property
    def waiting_on(self) -> str:
        """What a blocked task waits for ("mmap_sem:42 write", "sleep"...)."""
    @property
    def is_leader(self) -> bool:
        """The thread-group leader."""

    def fatal_signal_pending(self) -> bool:
        """SIGKILL is pending or being handled."""


class OomControlView(Protocol):
    """What workbench_select_bad_process and the other victim hooks get (struct oom_control)."""

    @property
    def current(self) -> TaskView:
        """The allocating task that called out_of_memory()."""
    @property
    def gfp_mask(self) -> int:
        """The allocation's gfp flags."""
    @property
    def order(self) -> int:
        """The allocation's order."""
    @property
    def totalpages(self) -> int:
        """RAM pages for a global OOM; the memcg limit for a memcg OOM."""
    @property
    def memcg(self) -> MemCgroupView | None:
        """The memcg over its limit, or None for a global OOM."""

    def threads(self) -> Iterator[TaskView]:
        """for_each_process_thread(), in task-list order; each thread a step."""
    def processes(self) -> Iterator[ProcessView]:
        """for_each_process(), in task-list order; each process a step."""
    def in_scope(self, task: TaskView) -> bool:
        """False for a task outside the memcg being scanned."""

