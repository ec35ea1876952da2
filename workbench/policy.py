"""What policy plugins exchange with the simulated kernel.

A policy is a class with a `name`, a docstring (shown by `workbench plugins`),
an optional pydantic `Options` model for its `[arm.options.*]` table, and
hook implementations (workbench/hookspecs.py) as methods.  The workbench
makes one instance per run and registers it with that run's plugin manager,
so a policy may keep per-run state (the reaper's queue) on self.

Plugins read kernel objects (tasks, processes, mm_structs, VMAs) and must not
change them: the kernel carries out every decision itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Iterator

import pluggy
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from workbench.kernel.memcontrol import MemCgroup
    from workbench.kernel.mm import MmStruct
    from workbench.kernel.sched import Process, Task

hookimpl = pluggy.HookimplMarker("workbench")

CONCERNS = ("victim", "reaper", "vma_filter", "userspace")


class NoOptions(BaseModel):
    """A policy without options: any key in its options table is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy:
    """Base for policy classes (subclassing it is optional)."""

    name: ClassVar[str]
    concern: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, options: BaseModel, machine: object):
        self.options = options
        self.machine = machine


# -- victim selection -------------------------------------------------------------

class _Abort:
    def __repr__(self) -> str:
        return "ABORT"


ABORT = _Abort()
"""select_bad_process()'s (struct task_struct *)-1UL: a victim is pending, kill nothing."""


@dataclass(frozen=True)
class Victim:
    """A chosen task and its badness (oom_badness() points, in pages)."""

    task: Task
    points: int


@dataclass
class OomControl:
    """struct oom_control plus what a victim selector may read of the kernel."""

    current: Task
    gfp_mask: int
    order: int
    totalpages: int
    memcg: MemCgroup | None
    _kernel: object

    def threads(self) -> Iterator[Task]:
        """for_each_process_thread(): every live thread, processes in task-list
        (fork) order.  Each thread looked at counts as a step (limits.steps)."""
        k = self._kernel
        for task in k.for_each_thread():
            k.scanned()
            yield task

    def processes(self) -> Iterator[Process]:
        """for_each_process(), in task-list order; each one counts as a step."""
        k = self._kernel
        for proc in k.for_each_process():
            k.scanned()
            yield proc

    def pending_threads(self) -> list[Task]:
        """The live threads with TIF_MEMDIE or PF_EXITING, in for_each_process_thread()
        order: the only ones that can make a 4.5 scan abort, from the kernel's index
        (no walk, no steps).  A scan that aborts on one calls scanned_through()."""
        return self._kernel.tasklist.pending_threads()

    def victim_processes(self) -> list[Process]:
        """The live processes with signal->oom_mm (4.9), in for_each_process() order."""
        return self._kernel.tasklist.victim_processes()

    def scanned_through(self, entry: Task | Process) -> None:
        """Count the steps of a walk that stopped at entry, a thread from
        pending_threads() or a process from victim_processes(): every thread or
        process threads() or processes() would have yielded up to it."""
        k = self._kernel
        if entry in k.tasklist.processes:
            k.scanned(k.tasklist.processes_through(entry))
        else:
            k.scanned(k.tasklist.threads_through(entry))

    def in_scope(self, task: Task) -> bool:
        """False for a task outside the memcg being scanned (oom_unkillable_task)."""
        return self.memcg is None or task.process.cgroup is self.memcg


# -- the OOM reaper -------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ReapWork:
    """One mm handed to the OOM reaper, with the victim it was queued for
    (frozen: the kernel holds a pin on exactly this mm)."""

    mm: MmStruct
    task: Task


@dataclass(frozen=True)
class AfterReap:
    """What the reaper tells the OOM killer when it is done with an mm.

    exit_oom_victim: clear the queued task's TIF_MEMDIE and set its
    oom_score_adj to OOM_SCORE_ADJ_MIN, so the killer may pick another victim
    and never this one again (4.6 36324a990cf5, after a successful reap).
    oom_skip: set MMF_OOM_SKIP on the mm: the killer skips it and aborts no
    more on its victim (4.9, after every reap or give-up).  The seed tells
    nothing (both False)."""

    exit_oom_victim: bool = False
    oom_skip: bool = False


@dataclass(frozen=True)
class Retry:
    """After a failed reap attempt: sleep this long, then try again or give up."""

    sleep_ns: int
    again: bool


# -- the VMA filter ---------------------------------------------------------------------

@dataclass(frozen=True)
class ZapDetails:
    """struct zap_details as the seed extends it (mm/memory.c)."""

    ignore_dirty: bool = True           # leave file pages with a dirty pte alone
    check_swap_entries: bool = True     # free swap entries too


# -- userspace OOM killers ----------------------------------------------------------------

@dataclass(frozen=True)
class MemInfo:
    """/proc/meminfo as a userspace killer reads it, in kB (workbench/kernel/
    userspace.py meminfo() says how each is computed)."""

    mem_total_kb: int
    mem_free_kb: int
    mem_available_kb: int
    anon_pages_kb: int
    swap_total_kb: int = 0
    swap_free_kb: int = 0


@dataclass
class UserspaceView:
    """What a userspace killer sees at one poll: /proc/meminfo, the clock,
    and /proc/<pid> of every process.  memcg and totalpages are those of a
    global OomControl, so oom_badness()-style helpers (the `linux` victim
    policy's badness(), for /proc/pid/oom_score) accept it."""

    meminfo: MemInfo
    now_ns: int
    totalpages: int
    _kernel: object
    memcg: None = None

    def processes(self) -> Iterator[Process]:
        """/proc: every live process, in task-list order; each counts as a step."""
        k = self._kernel
        for proc in k.for_each_process():
            k.scanned()
            yield proc


@dataclass(frozen=True)
class UserKill:
    """A userspace killer's answer to one poll: SIGKILL `kill` (a live
    process, or None for nobody) now, then sleep sleep_ns (more than 0) until
    the next poll.  `reason` is logged with the kill."""

    sleep_ns: int
    kill: Process | None = None
    reason: str = ""
