"""Creating processes and the mm reference counts (kernel/fork.c).

Pids follow docs/config.md: 1 is init, then the kernel's threads, then the
scenario's processes in file order, each process's threads numbered after
its leader.  A process exists for the OOM killer only from its start time,
when it is forked: its resident pages are faulted in at once and its threads
begin their programs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.kernel import exit as kexit
from workbench.kernel import memcontrol, mmap, oom_kill, swap, userspace
from workbench.kernel.mm import MmStruct, Vma
from workbench.kernel.sched import (
    TASK_INTERRUPTIBLE,
    TASK_KILLABLE,
    Process,
    Task,
    WaitQueue,
)
from workbench.units import kb
from workbench.workload import program
from workbench.workload.spec import ProcessSpec

if TYPE_CHECKING:
    import trio

    from workbench.kernel.core import Kernel


class Boot:
    """Builds every process of the scenario with its pid, and forks each at
    its start time."""

    def __init__(self, k: Kernel):
        self.k = k
        self.all_processes: list[Process] = []
        self.by_name: dict[str, Process] = {}
        self._specs: list[tuple[Process, ProcessSpec]] = []
        self._spec_of: dict[str, ProcessSpec] = {}
        specs = list(k.scenario.processes)
        declared_init = next((s for s in specs if s.init), None)
        self.init = self._create(declared_init, 1) if declared_init else self._implicit_init()
        next_pid = 2
        if k.policies.reaper_enabled():
            k.oom_reaper_th = oom_kill.oom_init(k, next_pid)
            self.all_processes.append(k.oom_reaper_th.process)
            next_pid += 1
        if k.policies.userspace_enabled():
            k.userspace_th = userspace.userspace_init(k)     # no pid: off the task list
        # Explicit pids (validated not to collide) are taken first; the others
        # get the next free range in file order.
        taken = [(s.pid, s.pid + len(s.threads)) for s in specs
                 if s.pid is not None and s is not declared_init]
        for spec in specs:
            if spec is declared_init:
                continue
            if spec.pid is not None:
                self._create(spec, spec.pid)
                continue
            n = len(spec.threads)
            while clash := next((hi for lo, hi in taken if next_pid < hi and lo < next_pid + n),
                                None):
                next_pid = clash
            next_pid += len(self._create(spec, next_pid).threads)
        # Parents and shared mms may come later in the file: link once all exist.
        for proc, spec in self._specs:
            self._link(proc, spec)

    def _implicit_init(self) -> Process:
        """pid 1 when the scenario declares none: asleep for ever, unkillable."""
        init = Process(1, "init", uid=0, oom_score_adj=0, parent=None, init=True)
        init.mm = MmStruct(self.k, 1, [])
        task = Task(1, init, "init", init.mm)
        task.state, task.waiting_on = TASK_INTERRUPTIBLE, "idle"
        init.mm.mm_users = 1
        self.k.tasklist.add(init)
        self.all_processes.append(init)
        self.by_name["init"] = init
        return init

    def _create(self, spec: ProcessSpec, pid: int) -> Process:
        """The process with its pid and threads; an mm of its own unless it
        uses another's (CLONE_VM, vfork, a use_mm kthread)."""
        proc = Process(pid, spec.shown_comm, uid=spec.uid, oom_score_adj=0, parent=None,
                       kthread=spec.kthread, init=spec.init, vfork=spec.vfork,
                       cgroup=self.k.memcgs.get(spec.cgroup), name=spec.name,
                       cap_sys_admin=spec.cap_sys_admin)
        if not spec.shares_mm_with and not spec.kthread:
            proc.mm = MmStruct(self.k, pid, [Vma(v.name, v.kind, v.size, locked=v.locked,
                                                 shared=v.shared) for v in spec.vmas])
            proc.mm.memcg = proc.cgroup
            proc.mm.fixed_pgtables = spec.pgtables is not None
        for i, t in enumerate(spec.threads):
            Task(pid + i, proc, t.name, proc.mm)
        self.all_processes.append(proc)
        self.by_name[spec.name] = proc
        self._spec_of[spec.name] = spec
        self._specs.append((proc, spec))
        return proc

    def _link(self, proc: Process, spec: ProcessSpec) -> None:
        if spec.parent:
            proc.parent = self.by_name[spec.parent]
        if spec.shares_mm_with:
            owner = spec.shares_mm_with
            while owner in self._spec_of and self._spec_of[owner].shares_mm_with:
                owner = self._spec_of[owner].shares_mm_with      # validation forbids cycles
            proc.mm = self.by_name[owner].mm
            for t in proc.threads:
                t.mm = proc.mm

    def start(self, nursery: trio.Nursery) -> None:
        k = self.k
        if k.oom_reaper_th is not None:
            k.tasklist.add(k.oom_reaper_th.process)
            k.spawn(oom_kill.oom_reaper, k, k.oom_reaper_th)
        if k.userspace_th is not None:
            k.spawn(userspace.userspace_daemon, k, k.userspace_th)
        for proc, spec in self._fork_order():
            if spec.by_vfork_step:
                continue                        # its parent's vfork step forks it
            start = spec.start_ns
            if spec.start_jitter_ns:
                start += k.rng(proc.name, "start").randint(0, spec.start_jitter_ns)
            if start == 0:
                self._fork(proc, spec)
            else:
                k.spawn(self._fork_at, proc, spec, start)

    def pending_forks(self) -> bool:
        """A process forked at its start time that has not started yet (one a
        vfork step forks comes with its parent's thread, which is live)."""
        return any(not proc.forked and not spec.by_vfork_step for proc, spec in self._specs)

    def _fork_order(self) -> list[tuple[Process, ProcessSpec]]:
        """File order, except that a parent or mm owner forks before the
        processes that need it (it is the one that clones them)."""
        done: dict[str, None] = {}
        order: list[tuple[Process, ProcessSpec]] = []

        def visit(proc: Process, spec: ProcessSpec) -> None:
            if spec.name in done:
                return
            done[spec.name] = None
            for ref in (spec.parent, spec.shares_mm_with):
                if ref in self._spec_of:
                    visit(self.by_name[ref], self._spec_of[ref])
            order.append((proc, spec))

        for proc, spec in self._specs:
            visit(proc, spec)
        return order

    async def vfork(self, parent: Task, child: str) -> None:
        """vfork(): fork the child on the parent's mm, then wait, killable,
        until the child releases the mm (kernel/fork.c wait_for_vfork_done())."""
        proc = self.by_name[child]
        proc.vfork_done = WaitQueue(self.k)
        self._fork(proc, self._spec_of[child])
        await proc.vfork_done.wait(parent, TASK_KILLABLE, f"vfork:{child}")

    async def _fork_at(self, proc: Process, spec: ProcessSpec, start: int) -> None:
        await self.k.clock.wait_until(start)
        self._fork(proc, spec)

    def _fork(self, proc: Process, spec: ProcessSpec) -> None:
        """copy_process(): the process joins the task list and its threads run."""
        k = self.k
        if spec.shares_mm_with and (proc.mm.freed or proc.mm.mm_users == 0):
            k.scenario_error(f"process {proc.comm} starts after the users of the mm it shares "
                             f"with {spec.shares_mm_with} have exited")
        if (proc.parent is None or not proc.parent.alive) and not proc.init and not proc.kthread:
            proc.parent = self.init
        if proc.parent is not None:
            proc.parent.children.append(proc)
        if spec.oom_score_adj is not None:
            proc.oom_score_adj = spec.oom_score_adj
        elif proc.parent is not None:
            proc.oom_score_adj = proc.parent.oom_score_adj   # copy_signal()
        mm = proc.mm
        if mm is not None:
            if not spec.shares_mm_with:
                _populate(k, proc, spec)
                k.file_vmas.extend((mm, v) for v in mm.vmas if v.kind == "file")
            mm.mm_users += len(proc.threads)
        k.tasklist.add(proc)
        proc.forked = True
        memcontrol.attach(k, proc)
        k.log.emit("fork", pid=proc.pid, comm=proc.comm,
                   ppid=proc.parent.pid if proc.parent else 0, uid=proc.uid,
                   oom_score_adj=proc.oom_score_adj, mm=mm.id if mm else None,
                   cgroup=proc.cgroup.name if proc.cgroup else None,
                   threads=[t.pid for t in proc.threads], kthread=proc.kthread,
                   vfork=proc.in_vfork)
        for task, thread in zip(proc.threads, spec.threads):
            if thread.robust_list:                    # set_robust_list()
                task.robust_list = mm.vma(thread.robust_list)
            k.spawn(_thread, k, task, thread.program)


def _populate(k: Kernel, proc: Process, spec: ProcessSpec) -> None:
    """The VMAs' `resident` pages, present when the process starts, their
    `swapped` pages as swap entries, and a `pgtables` override's pages."""
    mm = proc.mm
    if spec.pgtables:
        got = k.zone.take(spec.pgtables, -1)
        if got < spec.pgtables:
            k.zone.give(got)
            k.scenario_error(f"process {proc.comm}: its {kb(spec.pgtables)}kB of pgtables do "
                             f"not fit in the {kb(got)}kB free at its start")
        mm.nr_ptes = spec.pgtables      # counted as PTE pages: nr_pmds stays 0
        k.zone.pgtables += spec.pgtables
    for vma, v in zip(mm.vmas, spec.vmas):
        if v.swapped:
            swap.populate(k, mm, vma, v.swapped)
        if not v.resident:
            continue
        ptes = mm.add_pages(vma, v.resident)
        vma.dirty = v.dirty
        if vma.hugetlb_page:
            continue                  # from the hugetlb pool reserved at boot
        need = v.resident + ptes
        got = k.zone.take(need, -1)
        if got < need:
            # `resident` is the scenario's promise that the pages are there:
            # one it cannot keep is the scenario's problem, not the kernel's.
            k.zone.give(got)
            k.scenario_error(f"process {proc.comm}: the {kb(need)}kB resident in vma "
                             f"{vma.name} (with page tables) do not fit in the {kb(got)}kB "
                             f"free at its start")
        k.zone.pgtables += ptes
        memcontrol.force_charge(k, mm.memcg, v.resident)


async def _thread(k: Kernel, task: Task, steps: tuple) -> None:
    """A simulated thread: its program, then do_exit()."""
    # trio: a run's module, not a config's (sched.py)
    import trio
    task.trio_task = trio.lowlevel.current_task()
    with task.signal_scope:
        await program.run(k, task, steps)
    if task.fatal_signal_pending():
        # Signal delivery on the way back to user space: meanwhile other CPUs
        # run - the OOM reaper just woken, say - so who gets to the mm first
        # is the order Trio runs this instant's tasks in, chosen by the seed.
        await trio.lowlevel.checkpoint()
    kexit.release_held_locks(k, task)
    await kexit.do_exit(k, task)


# -- mm reference counts ------------------------------------------------------------

async def mmput(k: Kernel, task: Task, mm: MmStruct) -> None:
    """Drop an mm_users reference; the last one tears the address space down
    in the caller's context (the seed's reaper included: its mmput() may be the last one)."""
    if not mm.check_alive("mmput"):
        return
    mm.mm_users -= 1
    if mm.mm_users == 0:
        await __mmput(k, task, mm)


async def __mmput(k: Kernel, task: Task, mm: MmStruct) -> None:
    await mmap.exit_mmap(k, task, mm)
    mm.mmdrop(None)
