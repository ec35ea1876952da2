"""Resolving a validated scenario file into a ScenarioSpec.

Checks what a schema cannot: names that must refer to something, counts
expanded into concrete processes, sizes and durations in the machine's units,
lock use that balances, memory that fits.  Every problem is appended as
"FILE: key.path: message"; nothing stops at the first.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workbench import config as C
from workbench.kernel import gfp as GFP
from workbench.units import PAGE_SIZE, format_duration, format_size, pages
from workbench.workload import program as P
from workbench.workload.spec import (CgroupSpec, LimitsSpec, MachineSpec, ProcessSpec,
                                     ScenarioSpec, ThreadSpec, VmaSpec)

COMM_LEN = 15                 # TASK_COMM_LEN - 1
MIN_STEP_NS = 10_000          # the finest quantum and reclaim_round
# The mm's mmap_sem among the locks a program holds: not a string, so that no
# mutex name can be taken for it.
MMAP_SEM = ("mmap_sem",)


class Problems:
    """Collects problem lines for one file."""

    def __init__(self, where: str, sink: list[str], prefix: str = ""):
        self.where = where
        self.sink = sink
        self.prefix = prefix            # "scenario[2]." for a scenario inline in the experiment

    def __call__(self, path: str, message: str) -> None:
        self.sink.append(f"{self.where}: {self.prefix}{path}: {message}")


def merge(default: C.MachinePatch | C.LimitsPatch, *patches: Any) -> dict[str, Any]:
    fields = type(default).model_fields
    out = {name: getattr(default, name) for name in fields}
    for patch in patches:
        out.update({name: getattr(patch, name) for name in fields
                    if getattr(patch, name) is not None})
    return out


def resolve_machine(values: dict[str, Any], problem: Problems) -> MachineSpec:
    hz = values["hz"]
    min_free = values["min_free"]
    min_free_kb = None if min_free == "auto" else min_free // 1024
    if min_free_kb is not None and min_free >= values["memory"]:
        problem("machine.min_free", "expected less than machine.memory")
    spec = MachineSpec(
        memory=values["memory"], hz=hz, min_free_kbytes=min_free_kb,
        fault_rate=values["fault_rate"], exit_rate=values["exit_rate"],
        reap_rate=values["reap_rate"], reclaim_rate=values["reclaim_rate"],
        reclaim_round_ns=values["reclaim_round"].to_ns(hz),
        quantum_ns=values["quantum"].to_ns(hz), swap=values["swap"],
        swappiness=values["swappiness"], swap_rate=values["swap_rate"],
        writeback_rate=values["writeback_rate"])
    # Finer steps model nothing more, and each costs a step (limits.steps).
    if spec.reclaim_round_ns < MIN_STEP_NS:
        problem("machine.reclaim_round", "expected a duration of at least 10us")
    if spec.quantum_ns < MIN_STEP_NS:
        problem("machine.quantum", "expected a duration of at least 10us")
    return spec


def resolve_limits(values: dict[str, Any], hz: int, problem: Problems) -> LimitsSpec:
    spec = LimitsSpec(time_ns=values["time"].to_ns(hz), stall_ns=values["stall"].to_ns(hz),
                      steps=values["steps"], steps_per_instant=values["steps_per_instant"])
    if spec.time_ns <= 0:
        problem("limits.time", "expected a duration of more than 0")
    if spec.stall_ns <= 0:
        problem("limits.stall", "expected a duration of more than 0")
    return spec


def resolve_scenario(model: C.Scenario, source: str, where: str, experiment: C.ExperimentFile,
                     problems: list[str], prefix: str = "",
                     salvaged: C.Salvaged | None = None) -> ScenarioSpec:
    """salvaged: what was valid of a broken file, so that its references
    are checked too, with paths into the file as written."""
    problem = Problems(where, problems, prefix)
    machine = resolve_machine(merge(C.MACHINE_DEFAULTS, experiment.machine, model.machine),
                              problem)
    limits = resolve_limits(merge(C.LIMITS_DEFAULTS, experiment.limits, model.limits),
                            machine.hz, problem)
    cgroups = _cgroups(model, problem)
    resolver = _Processes(model, machine, limits, {c.name for c in cgroups}, problem, salvaged)
    processes = resolver.resolve()
    _check_memory_fits(processes, machine, problem)
    # the log's kill lines name comms: a comm is as good as a name there
    shown = resolver.names | {p.shown_comm for p in processes}
    expect = {arm: _expect(e, f"expect.{arm}", shown, {c.name for c in cgroups},
                           problem) for arm, e in model.expect.items()}
    return ScenarioSpec(model.name, model.description, source, machine, limits, cgroups,
                        processes, expect)


def _cgroups(model: C.Scenario, problem: Problems) -> tuple[CgroupSpec, ...]:
    out, seen = [], set()
    for i, cg in enumerate(model.cgroup):
        if cg.name in seen:
            problem(f"cgroup[{i}].name", f"cgroup {cg.name!r} is defined twice")
        seen.add(cg.name)
        if cg.memory_max < PAGE_SIZE:
            problem(f"cgroup[{i}].memory_max", "expected at least one page (4KiB)")
        memsw = None
        if cg.memsw_max is not None:
            memsw = cg.memsw_max // PAGE_SIZE
            # mem_cgroup_resize_memsw_limit(): memsw.limit below memory.limit is -EINVAL
            if cg.memsw_max < cg.memory_max:
                problem(f"cgroup[{i}].memsw_max", "expected at least memory_max (the "
                        "memory+swap limit covers memory too)")
        out.append(CgroupSpec(cg.name, cg.memory_max // PAGE_SIZE, cg.oom_group, memsw))
    return tuple(out)


def _check_memory_fits(processes: tuple[ProcessSpec, ...], machine: MachineSpec,
                       problem: Problems) -> None:
    resident = sum(v.resident for p in processes for v in p.vmas)
    resident += sum(p.pgtables or 0 for p in processes)
    hugetlb = sum(v.size for p in processes for v in p.vmas if v.kind == "hugetlb")
    if (resident + hugetlb) * PAGE_SIZE > machine.memory:
        problem("process", "the VMAs' resident memory, pgtables and hugetlb pools exceed "
                           "machine.memory")
    swapped = sum(v.swapped for p in processes for v in p.vmas)
    if swapped and swapped > machine.swap_pages:
        problem("process", f"the VMAs' swapped pages ({format_size(swapped * PAGE_SIZE)}) "
                           f"exceed machine.swap ({format_size(machine.swap)})")


def _expect(e: C.Expect, path: str, names: set[str], cgroups: set[str],
            problem: Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in e.model_dump(exclude_none=True).items():
        if key in ("killed", "killed_sharers", "userspace_killed"):
            for j, name in enumerate(value):
                if name not in names:
                    problem(f"{path}.{key}[{j}]", f"no process named {name!r}")
            out[key] = value
        elif key == "outcome":
            out[key] = list(value)
        elif key == "cgroups":
            cg_out: dict[str, Any] = {}
            for name, cg in value.items():
                if name not in cgroups:
                    problem(f"{path}.cgroups.{name}", f"no cgroup named {name!r}")
                cg_out[name] = {}
                if "outcome" in cg:
                    cg_out[name]["outcome"] = [cg["outcome"]]
                if "max_stall_s" in cg:
                    cg_out[name]["max_stall_s"] = _range(cg["max_stall_s"])
            out[key] = cg_out
        else:
            out[key] = _range(value)
    return out


def _range(value: tuple) -> dict[str, float | None]:
    return {"min": value[0], "max": value[1]}


class _Processes:
    """Expands and checks [[process]] tables."""

    def __init__(self, model: C.Scenario, machine: MachineSpec, limits: LimitsSpec,
                 cgroups: set[str], problem: Problems, salvaged: C.Salvaged | None = None):
        self.model = model
        self.machine = machine
        self.limits = limits
        self.cgroups = cgroups
        self.problem = problem
        # concrete name -> (table index, model)
        self.entries: list[tuple[str, int, C.Process]] = []
        index = salvaged.index if salvaged else range(len(model.process))
        for i, p in zip(index, model.process):
            names = [p.name] if p.count is None else [f"{p.name}-{j}" for j in range(p.count)]
            for name in names:
                self.entries.append((name, i, p))
        self.names = {name for name, _, _ in self.entries}
        self.known = self.names | (salvaged.names if salvaged else set())
        self.by_name = {name: p for name, _, p in self.entries}
        self.declared_init = next((name for name, _, p in self.entries if p.init), None)
        self.vfork_steps: list[tuple[str, str, str]] = []   # (parent, child, key path)

    def resolve(self) -> tuple[ProcessSpec, ...]:
        seen: set[str] = set()
        out = []
        for name, i, p in self.entries:
            where = f"process[{i}]"
            if len(name) > COMM_LEN:
                self.problem(f"{where}.name", f"{name!r} is longer than {COMM_LEN} characters "
                                              f"(the kernel's comm)")
            if name in seen:
                self.problem(f"{where}.name", f"process {name!r} is defined twice")
            seen.add(name)
            out.append(self._process(name, where, p))
        if sum(p.init for _, _, p in self.entries) > 1:
            self.problem("process", "more than one process has init = true")
        # pid 1 and the oom_reaper kthread come first (fork.Boot)
        tasks = 2 + sum(len(p.thread) for _, _, p in self.entries)
        if tasks > C.PID_MAX_DEFAULT:
            self.problem("process", f"{tasks} threads (with init and the oom_reaper) exceed "
                                    f"{C.PID_MAX_DEFAULT}, the kernel's default pid_max")
        self._check_pids(out)
        self._check_sharing_cycles()
        self._check_start_order(out)
        return tuple(self._vforked(out))

    def _check_pids(self, specs: list[ProcessSpec]) -> None:
        """Explicit pids: 1 only for init, never 2 (the oom_reaper kthread's),
        each process's threads numbered after its leader within pid_max, and
        no two processes' pid ranges overlapping."""
        taken: list[tuple[int, int, str]] = []
        for (name, i, p), s in zip(self.entries, specs):
            if p.pid is None:
                continue
            where = f"process[{i}].pid"
            if p.count is not None:
                self.problem(where, "a pid names one process: not with count")
                continue
            last = p.pid + len(p.thread) - 1
            if p.init and p.pid != 1:
                self.problem(where, "init is pid 1")
            elif not p.init and p.pid < 3:
                self.problem(where, "expected at least 3 (1 is init, 2 the oom_reaper kthread)")
            elif last >= C.PID_MAX_DEFAULT:
                self.problem(where, f"its {len(p.thread)} threads take pids {p.pid} to {last}, "
                             f"past {C.PID_MAX_DEFAULT - 1} (pid_max is {C.PID_MAX_DEFAULT})")
            else:
                for lo, hi, other in taken:
                    if p.pid <= hi and lo <= last:
                        self.problem(where, f"pids {p.pid}..{last} (its threads) collide with "
                                     f"{other!r}'s {lo}..{hi}")
                        break
                taken.append((p.pid, last, name))

    def _vforked(self, specs: list[ProcessSpec]) -> list[ProcessSpec]:
        """Children that a parent's `vfork` step forks, checked and marked."""
        by_name = {s.name: s for s in specs}
        children: dict[str, str] = {}
        for parent, child, key in self.vfork_steps:
            c = by_name.get(child)
            if c is None:
                self.problem(key, f"no process named {child!r}")
            elif not (c.vfork and c.parent == parent):
                self.problem(key, f"{child!r} must be declared with vfork = true and "
                                  f"parent = {parent!r}")
            elif child in children:
                self.problem(key, f"{child!r} is already vforked at {children[child]}")
            elif c.start_ns or c.start_jitter_ns:
                self.problem(key, f"{child!r} starts when this step runs: give it no start")
            else:
                children[child] = key
        return [replace(s, by_vfork_step=True) if s.name in children else s for s in specs]

    def _check_start_order(self, specs: list[ProcessSpec]) -> None:
        """A parent forks its children, and a CLONE_VM sharer needs the mm's
        owner: neither may start later than the process it needs."""
        starts = {s.name: s.start_ns + s.start_jitter_ns for s in specs}
        for (name, i, _), s in zip(self.entries, specs):
            for key, ref in (("parent", s.parent), ("shares_mm_with", s.shares_mm_with)):
                if ref in starts and starts[ref] > s.start_ns:
                    self.problem(f"process[{i}].{key}", f"{ref!r} starts after {name!r}, "
                                 "which needs it at its start")

    def _process(self, name: str, where: str, p: C.Process) -> ProcessSpec:
        problem = self.problem
        hz = self.machine.hz
        for key in ("parent", "shares_mm_with"):
            ref = getattr(p, key)
            if ref is not None and ref not in self.known and not (key == "shares_mm_with"
                                                                 and ref == "init"):
                problem(f"{where}.{key}", f"no process named {ref!r}")
            if ref == name:
                problem(f"{where}.{key}", "a process cannot name itself")
        if p.shares_mm_with == "init" and "init" not in self.known and self.declared_init:
            problem(f"{where}.shares_mm_with", f"no process named 'init' (this scenario's init "
                                               f"is {self.declared_init!r})")
        if p.cgroup is not None and p.cgroup not in self.cgroups:
            problem(f"{where}.cgroup", f"no cgroup named {p.cgroup!r}")
        if p.vfork and p.parent is None:
            problem(f"{where}.vfork", "a vfork child needs a parent")
        if p.vfork and p.shares_mm_with not in (None, p.parent):
            problem(f"{where}.shares_mm_with", "a vfork child shares its parent's mm")
        shares = p.parent if p.vfork else p.shares_mm_with
        owner = self._mm_owner(shares)
        if owner is not None and owner.kthread:
            problem(f"{where}.{'parent' if p.vfork else 'shares_mm_with'}",
                    f"{shares!r} uses the mm of kthread {owner.name!r}, which has none to share")
        if (shares or p.kthread) and p.vma:
            problem(f"{where}.vma", "a process that uses another's mm, or a kthread, has no "
                                    "VMAs of its own")
        if p.init and (p.kthread or p.parent or shares or p.start.ns or p.start.jiffies):
            problem(f"{where}.init", "init starts at 0s with its own mm and no parent")
        vmas = self._vmas(where, p)
        vma_sizes = self._mm_vmas(p, shares)
        threads = []
        thread_names: set[str] = set()
        for j, t in enumerate(p.thread):
            if t.name in thread_names:
                problem(f"{where}.thread[{j}].name", f"thread {t.name!r} is defined twice")
            thread_names.add(t.name)
            steps = _Steps(self.machine, self.limits, vma_sizes,
                           has_mm=bool(shares) or not p.kthread,
                           problem=problem)
            program = steps.resolve(t.program, f"{where}.thread[{j}].program")
            self.vfork_steps += [(name, child, key) for child, key in steps.vforks]
            if t.robust_list is not None and t.robust_list not in vma_sizes:
                problem(f"{where}.thread[{j}].robust_list",
                        f"no vma named {t.robust_list!r} in this process's mm")
            if steps.core_dumps and len(p.thread) > 1:
                problem(steps.core_dumps[0], "core dumps are modelled for single-threaded "
                        "processes only (the other threads would wait in exit_mm())")
            if steps.robust_locks and t.robust_list is None:
                problem(steps.robust_locks[0], "a robust mutex goes on the thread's robust "
                        "list: give the thread robust_list = \"VMA\" (where its struct "
                        "pthread is)")
            threads.append(ThreadSpec(t.name, program, t.robust_list))
        if p.pgtables is not None and (shares or p.kthread):
            problem(f"{where}.pgtables", "a process that uses another's mm, or a kthread, has no "
                                         "page tables of its own")
        return ProcessSpec(
            name=name, start_ns=p.start.to_ns(hz), start_jitter_ns=p.start_jitter.to_ns(hz),
            uid=p.uid, oom_score_adj=p.oom_score_adj, parent=p.parent, cgroup=p.cgroup,
            kthread=p.kthread, init=p.init, shares_mm_with=shares, vfork=p.vfork,
            vmas=vmas, threads=tuple(threads), pid=p.pid, comm=p.comm,
            cap_sys_admin=p.cap_sys_admin,
            pgtables=None if p.pgtables is None else pages(p.pgtables))

    def _vmas(self, where: str, p: C.Process) -> tuple[VmaSpec, ...]:
        out, names = [], set()
        for j, v in enumerate(p.vma):
            path = f"{where}.vma[{j}]"
            if v.name in names:
                self.problem(f"{path}.name", f"vma {v.name!r} is defined twice")
            names.add(v.name)
            shared = v.shared if v.shared is not None else v.kind == "shmem"
            if v.kind == "anon" and shared:
                self.problem(f"{path}.shared", 'shared anonymous memory is shmem: use kind = "shmem"')
            if v.kind == "shmem" and not shared:
                self.problem(f"{path}.shared", 'a private mapping of a shmem file is a private '
                                               'file mapping: use kind = "file"')
            if v.size < PAGE_SIZE:
                self.problem(f"{path}.size", "expected at least one page (4KiB)")
            if v.resident > v.size:
                self.problem(f"{path}.resident", "expected at most the VMA's size")
            if v.dirty and v.kind != "file":
                self.problem(f"{path}.dirty", "only file VMAs have dirty page-cache pages")
            elif v.dirty > v.resident:
                self.problem(f"{path}.dirty", "expected at most the VMA's resident size")
            if v.swapped and v.kind != "anon":
                self.problem(f"{path}.swapped", "only anon VMAs have swap entries in their page "
                                                "tables (shmem swaps within its object)")
            elif v.swapped and v.locked:
                self.problem(f"{path}.swapped", "a VM_LOCKED VMA is never swapped out")
            elif v.swapped and pages(v.resident) + pages(v.swapped) > pages(v.size):
                self.problem(f"{path}.swapped", "expected at most the VMA's size less its "
                                                "resident pages")
            # mmap() rounds a length up to whole pages (PAGE_ALIGN), as faults do
            out.append(VmaSpec(v.name, v.kind, pages(v.size), pages(v.resident),
                               pages(v.dirty), v.locked, shared, pages(v.swapped)))
        return tuple(out)

    def _mm_owner(self, shares: str | None) -> C.Process | None:
        """The process at the end of a sharing chain: the one whose mm it is
        (None for no sharing, the implicit init, or a broken chain)."""
        seen: set[str] = set()
        p = None
        while shares is not None and shares in self.by_name and shares not in seen:
            seen.add(shares)
            p = self.by_name[shares]
            shares = p.parent if p.vfork else p.shares_mm_with
        return p

    def _mm_vmas(self, p: C.Process, shares: str | None) -> dict[str, int]:
        """The VMAs this process's threads can touch (own or shared mm): name -> bytes."""
        return {v.name: v.size for v in (self._mm_owner(shares) or p).vma}

    def _check_sharing_cycles(self) -> None:
        for name, i, p in self.entries:
            seen = {name}
            ref = p.parent if p.vfork else p.shares_mm_with
            while ref is not None and ref in self.by_name:
                if ref in seen:
                    self.problem(f"process[{i}].shares_mm_with", "mm sharing goes round in a circle")
                    break
                seen.add(ref)
                q = self.by_name[ref]
                ref = q.parent if q.vfork else q.shares_mm_with


class _Steps:
    """Turns a thread's program into run-time steps, checking references and lock use."""

    MAX_DEPTH = 16                      # repeat inside repeat

    def __init__(self, machine: MachineSpec, limits: LimitsSpec, vmas: dict[str, int],
                 has_mm: bool, problem: Problems):
        self.machine = machine
        self.limits = limits
        self.hz = machine.hz
        self.vmas = vmas
        self.has_mm = has_mm
        self.problem = problem
        self.depth = 0
        self.too_deep = False
        self.vforks: list[tuple[str, str]] = []   # (child, key path) of its vfork steps
        self.robust_locks: list[str] = []          # key paths of its robust futex_locks
        self.core_dumps: list[str] = []            # key paths of its core_dump steps

    def resolve(self, steps: list, path: str) -> tuple:
        held: list = []
        program = self._block(steps, path, held)
        return program

    def _block(self, steps: list, path: str, held: list) -> tuple:
        out = []
        for i, step in enumerate(steps):
            out.append(self._step(step, f"{path}[{i}]", held))
        return tuple(out)
    def _step(self, s: Any, path: str, held: list) -> Any:
        if isinstance(s, (C.AllocStep, C.FreeStep, C.MmapLockStep, C.MmapUnlockStep,
                          C.FutexLockStep, C.CoreDumpStep)):
            if not self.has_mm:
                self.problem(path, "a kthread without an mm (shares_mm_with) cannot touch user memory")
        if isinstance(s, (C.AllocStep, C.FreeStep)) and MMAP_SEM in held:
            self.problem(path, f"a {'fault' if isinstance(s, C.AllocStep) else 'munmap'} takes "
                               "mmap_sem, which this thread holds here: a self-deadlock")
        if isinstance(s, (C.AllocStep, C.FreeStep)) and s.vma not in self.vmas:
            self.problem(f"{path}.vma", f"no vma named {s.vma!r} in this process's mm")
        elif isinstance(s, C.AllocStep) and pages(s.alloc) > pages(self.vmas[s.vma]):
            self.problem(f"{path}.alloc", f"{format_size(s.alloc)} is more than vma {s.vma!r} "
                                          f"holds ({format_size(self.vmas[s.vma])}): the fault "
                                          "past its end would be a SIGSEGV")
        if isinstance(s, C.AllocStep):
            if not GFP.can_direct_reclaim(s.gfp):
                self.problem(f"{path}.gfp", "a page fault may sleep: expected flags that can "
                                            "reclaim, such as GFP_KERNEL (atomic allocations "
                                            "are kalloc steps)")
            return P.Alloc(pages(s.alloc), s.vma, s.gfp)
        if isinstance(s, C.KallocStep):
            return P.Kalloc(pages(s.kalloc), s.gfp)
        if isinstance(s, C.KfreeStep):
            return P.Kfree(pages(s.kfree))
        if isinstance(s, C.FreeStep):
            return P.Free(pages(s.free), s.vma)
        if isinstance(s, C.LockStep):
            if s.lock in held:
                self.problem(f"{path}.lock", f"{s.lock!r} is already held here: a self-deadlock")
            held.append(s.lock)
            return P.Lock(s.lock, s.mode)
        if isinstance(s, C.UnlockStep):
            if s.unlock not in held:
                self.problem(f"{path}.unlock", f"{s.unlock!r} is not held here")
            else:
                held.remove(s.unlock)
            return P.Unlock(s.unlock)
        if isinstance(s, C.MmapLockStep):
            if MMAP_SEM in held:
                self.problem(f"{path}.mmap_lock", "mmap_sem is already held here: a self-deadlock")
            held.append(MMAP_SEM)
            return P.MmapLock(s.mmap_lock == "write", s.mode)
        if isinstance(s, C.MmapUnlockStep):
            if MMAP_SEM not in held:
                self.problem(f"{path}.mmap_unlock", "mmap_sem is not held here")
            else:
                held.remove(MMAP_SEM)
            return P.MmapUnlock()
        if isinstance(s, C.FutexLockStep):
            key = f"futex:{s.futex_lock}"
            if key in held:
                self.problem(f"{path}.futex_lock", f"{s.futex_lock!r} is already held here: a "
                                                   "self-deadlock")
            held.append(key)
            if s.robust:
                self.robust_locks.append(f"{path}.robust")
            return P.FutexLock(s.futex_lock, s.robust)
        if isinstance(s, C.FutexUnlockStep):
            key = f"futex:{s.futex_unlock}"
            if key not in held:
                self.problem(f"{path}.futex_unlock", f"{s.futex_unlock!r} is not held here")
            else:
                held.remove(key)
            return P.FutexUnlock(s.futex_unlock)
        if isinstance(s, C.CoreDumpStep):
            if held:
                self.problem(f"{path}.core_dump", "a core dump happens on the way to exit: "
                                                  "release the locks first")
            self.core_dumps.append(f"{path}.core_dump")
            return P.CoreDump(s.core_dump)
        if isinstance(s, C.PipeReadStep):
            return P.PipeRead(s.pipe_read, s.gfp, s.rate or 0)
        if isinstance(s, C.VforkStep):
            if self.depth:
                self.problem(f"{path}.vfork", "a process is forked once: not inside a repeat")
            self.vforks.append((s.vfork, f"{path}.vfork"))
            return P.Vfork(s.vfork)
        if isinstance(s, C.SleepStep):
            return P.Sleep(s.sleep.to_ns(self.hz), s.mode, s.jitter.to_ns(self.hz))
        if isinstance(s, C.ExitStep):
            return P.Exit(s.exit)
        return self._repeat(s, path, held)

    def _repeat(self, s: C.RepeatStep, path: str, held: list) -> P.Repeat:
        before = list(held)
        self.depth += 1
        if self.depth > self.MAX_DEPTH:
            self.problem(path, f"repeat is nested more than {self.MAX_DEPTH} deep")
            self.too_deep = True        # the bodies are not known: no bound to check
            body: tuple = ()
        else:
            body = self._block(s.do, f"{path}.do", held)
        self.depth -= 1
        if held != before:
            self.problem(f"{path}.do", "the body must release every lock it takes (and no other)")
            held[:] = before
        repeat = P.Repeat(None if s.repeat == "forever" else s.repeat, body)
        if not self.too_deep:
            self._check_bounded(repeat, path)
        return repeat

    def _check_bounded(self, repeat: P.Repeat, path: str) -> None:
        """A loop must fit the run's step limits (kernel.core step()): one
        that takes no virtual time must end within limits.steps_per_instant,
        and any other within limits.steps by limits.time."""
        per_pass = _min_ns(repeat.body, self.machine)
        steps = _steps(repeat.body)
        lim = self.limits
        if per_pass == 0:
            if repeat.times is None:
                self.problem(f"{path}.do", 'a repeat = "forever" body needs a step that always '
                                           'takes virtual time: a sleep, or an alloc or kalloc '
                                           'that may reclaim')
            elif repeat.times * steps > lim.steps_per_instant:
                self.problem(f"{path}.repeat", f"{repeat.times} passes of a body that takes no "
                             f"virtual time are {repeat.times * steps} steps at one instant, "
                             f"more than limits.steps_per_instant ({lim.steps_per_instant})")
            return
        passes = lim.time_ns // per_pass + 1
        if repeat.times is not None:
            passes = min(passes, repeat.times)
        if passes * steps > lim.steps:
            self.problem(f"{path}.do", f"at least {format_duration(per_pass)} a pass, this loop "
                         f"may take {passes * steps} steps in limits.time "
                         f"({format_duration(lim.time_ns)}), more than limits.steps "
                         f"({lim.steps}): give its steps more time, or raise limits.steps")


def _min_ns(body: tuple, m: MachineSpec) -> int:
    """The least virtual time one pass through body takes: its sleeps, and
    for an allocation that may reclaim, one chunk faulted or one slow-path
    round - whichever is cheaper (0: it may spin at one instant)."""
    total = 0
    for step in body:
        if (isinstance(step, (P.Alloc, P.Kalloc)) and step.pages > 0
                and GFP.can_direct_reclaim(step.gfp)):
            chunk = min(step.pages, m.chunk(m.fault_rate))
            total += min(m.cost_ns(chunk, m.fault_rate), m.reclaim_round_ns)
        elif isinstance(step, P.Sleep):
            total += step.ns
        elif isinstance(step, P.Repeat):
            total += _min_ns(step.body, m) * (step.times or 1)
    return total


def _steps(body: tuple) -> int:
    """The least steps (kernel.core step()) one pass through body takes: one
    per program step, one more for each stretch of time a sleep spends."""
    return sum(1 + (_steps(s.body) * (s.times or 1) if isinstance(s, P.Repeat)
                    else int(isinstance(s, P.Sleep) and s.ns > 0)) for s in body)
