"""The simulated machine: boot, the task list, and the end of a run.

`Kernel` holds the global state the kernel files share (the zone, oom_lock,
the task list, the reaper's wait queue) and the run's plumbing: the clock,
the event log, the arm's policies.  The kernel's own logic lives in the
modules named after the files it models.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Awaitable, Callable, Iterator

import outcome
import trio

from workbench.kernel import fork, memcontrol, oom_kill
from workbench.kernel.coredump import Pipe
from workbench.kernel.features import Features
from workbench.kernel.futex import Futex
from workbench.kernel.locking import Mutex
from workbench.kernel.page_alloc import Zone, min_free_kbytes_for
from workbench.kernel.clock import Clock
from workbench.kernel.kswapd import Kswapd
from workbench.kernel.sched import TASK_DEAD, Halt, Process, Task, WaitQueue
from workbench.kernel.swap import SwapDevice
from workbench.kernel.tasklist import TaskList
from workbench.kernel.writeback import Flusher
from workbench.log import EventLog, LogWriteError, internal_error
from workbench.plugin import PolicyError, RunPolicies
from workbench.units import kb, seconds
from workbench.workload.spec import ScenarioSpec


MEMINFO_NS = 10_000_000          # 10 ms of virtual time between meminfo samples


class Kernel:
    def __init__(self, scenario: ScenarioSpec, policies: RunPolicies, seed: int, log: EventLog,
                 check_interrupt: Callable[[], None] = lambda: None,
                 features: Features = Features()):
        self.scenario = scenario
        self.features = features                    # the arm's follow-ups in the core
        self.machine = m = scenario.machine
        self.limits = scenario.limits
        self.policies = policies
        self.seed = seed
        self.log = log
        self.check_interrupt = check_interrupt      # raises KeyboardInterrupt after Ctrl-C
        self.clock = Clock(self)
        self.jiffy_ns = m.jiffy_ns
        self.fault_chunk = m.chunk(m.fault_rate)
        self.exit_chunk = m.chunk(m.exit_rate)
        self.reap_chunk = m.chunk(m.reap_rate)
        managed = m.memory // 4096
        min_free_kb = m.min_free_kbytes
        if min_free_kb is None:                         # "auto"; 0 is a setting of its own
            min_free_kb = min_free_kbytes_for(kb(managed))
        self.zone = Zone(self, managed, min_free_kb)
        # Persistent hugetlb pages are taken from the buddy allocator at boot
        # (hugetlb_init, after the watermarks are set) and never come back.
        self.zone.hugetlb = sum(v.size for p in scenario.processes for v in p.vmas
                                if v.kind == "hugetlb")
        self.zone.free -= self.zone.hugetlb
        self.swap = SwapDevice(self, m.swap_pages)      # swapon at boot: total_swap_pages
        self.kswapd = Kswapd(self)                      # started when first woken (kswapd.py)
        self.flusher = Flusher(self)                    # started when first woken (writeback.py)
        self.oom_lock = Mutex(self, "oom_lock")
        self.memcgs = memcontrol.Memcgs(self, scenario.cgroups)
        self.mutexes: dict[str, Mutex] = {}        # the workload's kernel mutexes, by name
        self.futexes: dict[str, Futex] = {}        # its user-space mutexes
        self.pipes: dict[str, Pipe] = {}           # its core-dump pipes
        self.file_vmas: list = []                  # (mm, vma) of mapped files, for reclaim
        self.tasklist = TaskList()                 # the task list, and the pending victims
        self.processes = self.tasklist.processes   # the forked processes, in fork order
        # DEFAULT_RATELIMIT_INTERVAL (5 * HZ), DEFAULT_RATELIMIT_BURST (10)
        self.oom_ratelimit = oom_kill.Ratelimit(5 * 1_000_000_000)
        self.nopage_ratelimit = oom_kill.Ratelimit(5 * 1_000_000_000)
        self.oom_reaper_wait = WaitQueue(self)
        self.oom_reaper_th: Task | None = None
        self.userspace_th: Task | None = None      # the arm's userspace OOM killer daemon
        self.reaper_timers: set = set()            # ReapWork waiting for OOM_REAPER_DELAY
        self.open_stalls: dict[int, list] = {}     # by id(rec), in the order they began
        self.steps = 0                             # see step()
        self._sampled_at = -MEMINFO_NS             # meminfo(): last sample and its values
        self._sampled: tuple = ()
        self.step_deadline = min(self.limits.steps_per_instant, self.limits.steps)
        self.halting = False
        self.finished = False
        self.refused_aborts: dict[Task, Callable[[], None]] = {}
        self._nursery: trio.Nursery | None = None
        self._boot = fork.Boot(self)
        self.init = self._boot.init

    # -- running ----------------------------------------------------------------

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._guard, self.clock.drive)
            # Guarded like every task: a fault while forking the first
            # processes must end the run, not leave D-state waiters behind.
            await self._guard(self._start)
        if self.clock.interrupted:
            raise KeyboardInterrupt       # Ctrl-C, seen by the clock between two passes

    async def _start(self) -> None:
        self._boot.start(self._nursery)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(self._guard, fn, *args)

    async def _guard(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run one simulation task; a policy's error or a broken invariant
        ends the run cleanly with outcome "error"."""
        try:
            await fn(*args)
        except (Exception, Halt) as e:      # Halt is a BaseException (kernel/sched.py)
            self._failed(e)

    def call_guarded(self, fn: Callable[[], None]) -> None:
        """What _guard does for a task, for the clock's work between two of
        Trio's passes (no task runs it, so nothing else would catch)."""
        try:
            fn()
        except (Exception, Halt) as e:  # noqa: BLE001  (as in _guard: every failure ends the run)
            self._failed(e)

    def _failed(self, e: BaseException) -> None:
        if isinstance(e, PolicyError):
            if not self.halting:
                self.log.emit("error", **e.fields())
                self.finish("error")
        elif isinstance(e, Halt):
            if not self.halting:
                error = getattr(e, "policy_error", None)     # a policy's scan that never ends
                if error is not None:
                    self.log.emit("error", **error.fields())
                self.finish("error" if error is not None else "halt")
        elif isinstance(e, LogWriteError):
            self.halt()                         # nothing more can be recorded: stop
        elif not self.halting:
            # A bug in the workbench itself: the run still ends with a
            # valid log, the traceback in it.
            self.log.emit("error", **internal_error(e))
            self.finish("error")

    # -- bounding the work of a run ------------------------------------------------

    def step(self, blame: tuple[str, str] | None = None) -> None:
        """Count one unit of work: a program step, an allocator round, a pass
        or retry of the reaper, a stretch of virtual time (Clock.sleep).  A
        loop that lets no virtual time pass never yields to the clock, so this
        is what stops it: past limits.steps, or limits.steps_per_instant at
        one virtual instant, the run ends with outcome "error".
        blame: the (concern, hook) whose answers drive the loop."""
        self.steps += 1
        if self.steps > self.step_deadline:
            self._step_limit(blame)

    def scanned(self, n: int = 1) -> None:
        """n tasks a scan looked at (a policy's walk of the task list, a wake-up
        walking a wait queue): bounded work per call, but N tasks x the calls
        of a long livelock add up, so it counts against limits.steps (not
        against steps_per_instant)."""
        self.steps += n
        self.step_deadline = min(self.step_deadline + n, self.limits.steps)
        self.policies.scanned(n, self.limits.steps_per_instant, self.tasklist.threads_ever)
        if self.steps > self.step_deadline:
            self._step_limit(None)

    def time_advanced(self) -> None:
        """The clock moves on from this instant: it gets its own steps_per_instant."""
        self.step_deadline = min(self.steps + self.limits.steps_per_instant, self.limits.steps)
        if self.clock.now >= self._sampled_at + MEMINFO_NS:
            self.meminfo()

    def meminfo(self) -> None:
        """The zone's free memory and each cgroup's usage, when they changed: at most
        one sample per MEMINFO_NS of virtual time, taken as the clock leaves an instant
        (what `workbench plot` draws; a livelock with nothing changing writes none)."""
        now = (self.zone.free, tuple(c.usage for c in self.memcgs.by_name.values()))
        self._sampled_at = self.clock.now
        if now == self._sampled:
            return
        self._sampled = now
        cgroups = {c.name: kb(c.usage) for c in self.memcgs.by_name.values()}
        self.log.emit("meminfo", free_kb=kb(self.zone.free), **({"cgroups": cgroups}
                                                               if cgroups else {}))

    def _step_limit(self, blame: tuple[str, str] | None) -> None:
        lim = self.limits
        if self.steps > lim.steps:
            problem = (f"step limit: more than limits.steps = {lim.steps} steps in the run "
                       f"(at {seconds(self.clock.now)}s of {seconds(lim.time_ns)}s); raise "
                       "limits.steps to let such a run go on")
        else:
            problem = (f"step limit: more than limits.steps_per_instant = "
                       f"{lim.steps_per_instant} steps at virtual time {seconds(self.clock.now)}s "
                       "with no time passing: a loop that takes no virtual time")
        if blame is not None and self.steps <= lim.steps:    # its answers stopped the clock
            concern, hook = blame
            raise PolicyError(self.policies.names[concern], hook, problem)
        self.run_error(problem)

    def rng(self, name: str, purpose: str) -> random.Random:
        """Workload randomness of one thread and purpose, from the run's seed
        alone: keyed by name, since pids differ between arms (the reaper kthread)."""
        return random.Random(f"{self.seed}:{purpose}:{name}")

    # -- the task list ------------------------------------------------------------

    def for_each_process(self) -> Iterator[Process]:
        return (p for p in self.processes if p.alive)

    def for_each_thread(self) -> Iterator[Task]:
        for p in self.processes:
            for t in p.threads:
                if t.state != TASK_DEAD:
                    yield t

    def user_threads(self) -> Iterator[Task]:
        """Live threads of the scenario's processes (not kthreads, not the idle init)."""
        return (t for t in self.for_each_thread()
                if not t.process.kthread and t.waiting_on != "idle")

    def has_blocked_threads(self) -> bool:
        return any(t.waiting_on for t in self.user_threads()) or bool(self.open_stalls)

    def pending_forks(self) -> bool:
        """Whether a scenario process is still to start at its start time."""
        return self._boot.pending_forks()

    def mutex(self, name: str) -> Mutex:
        if name not in self.mutexes:
            self.mutexes[name] = Mutex(self, name)
        return self.mutexes[name]

    async def vfork(self, parent: Task, child: str) -> None:
        await self._boot.vfork(parent, child)

    def futex(self, name: str) -> Futex:
        if name not in self.futexes:
            self.futexes[name] = Futex(self, name)
        return self.futexes[name]

    def pipe(self, name: str) -> Pipe:
        if name not in self.pipes:
            self.pipes[name] = Pipe(self, name)
        return self.pipes[name]

    # -- what the metrics need -------------------------------------------------------

    def stall_begin(self, task: Task, pages: int, gfp: int, memcg: Any = None) -> list:
        """An allocation request (one chunk) entered the slow path (docs/metrics.md: a stall)."""
        rec = [task, self.clock.now, pages, gfp, memcg]
        self.open_stalls[id(rec)] = rec
        return rec

    def stall_end(self, rec: list, ok: bool) -> None:
        del self.open_stalls[id(rec)]
        self._emit_stall(rec, "ok" if ok else "failed")

    def _emit_stall(self, rec: list, result: str) -> None:
        task, since, pages, gfp, memcg = rec
        fields = {"memcg": memcg.name} if memcg is not None else {}
        self.log.emit("alloc_stall", pid=task.pid, tgid=task.tgid, comm=task.comm,
                      since=seconds(since), stall_s=seconds(self.clock.now - since),
                      pages=pages, gfp_mask=gfp, order=0, result=result, **fields)

    def lock_waited(self, task: Task, lock: str, since: int, acquired: bool) -> None:
        if self.clock.now > since:
            self.log.emit("lock_wait", pid=task.pid, tgid=task.tgid, comm=task.comm, lock=lock,
                          since=seconds(since), wait_s=seconds(self.clock.now - since),
                          result="acquired" if acquired else "interrupted")

    # -- the end of a run -------------------------------------------------------------

    def violation(self, what: str) -> None:
        """A broken kernel invariant: logged, and the run stops (outcome error)."""
        self.log.emit("invariant", problem=what)
        if not self.halting:
            raise Halt(what)

    def scenario_error(self, problem: str) -> None:
        """The scenario asked for something that cannot happen; found at run time."""
        self.run_error(f"scenario: {self.scenario.source}: {problem}")

    def run_error(self, problem: str) -> None:
        """End the run with outcome "error" for a cause that is no policy's."""
        self.log.emit("error", policy="", hook="", problem=problem)
        self.finish("error")
        raise Halt(problem)

    def panic(self, msg: str) -> None:
        self.log.emit("panic", msg=f"Kernel panic - not syncing: {msg}")
        self.finish("panic")
        raise Halt(msg)

    def finish(self, reason: str) -> None:
        """Record what is still in progress, check for leaks, stop every task."""
        if self.finished:
            return
        self.finished = True
        self.meminfo()
        for rec in list(self.open_stalls.values()):
            self._emit_stall(rec, "open")
        now = self.clock.now
        for t in self.for_each_thread():
            if t.waiting_on.startswith(("mutex:", "mmap_sem:", "futex:")):
                self.log.emit("lock_wait", pid=t.pid, tgid=t.tgid, comm=t.comm,
                              lock=t.waiting_on, since=seconds(t.wait_since),
                              wait_s=seconds(now - t.wait_since), result="open")
            self.log.emit("task_state", pid=t.pid, tgid=t.tgid, comm=t.comm, thread=t.name,
                          state=t.state, waiting_on=t.waiting_on,
                          since=seconds(t.wait_since) if t.waiting_on else None,
                          tif_memdie=t.tif_memdie, killed=t.process.group_exit)
        self._check_mm_refs()
        if reason == "idle" and not any(self.user_threads()):
            self._check_pages()
        self.halt()

    def halt(self) -> None:
        """Stop every task: cancel them all, and end the D-state waits that
        already refused a SIGKILL (Trio will not ask them twice)."""
        if self.halting:
            return
        self.halting = True
        with contextlib.suppress(LogWriteError):    # kept in log.failure: the run's end says so
            self.log.flush()                    # the last folded OOM calls, before the end
        self.log.enabled = False
        try:
            for task, on_abort in list(self.refused_aborts.items()):
                on_abort()
                trio.lowlevel.reschedule(task.trio_task, outcome.Error(Halt("end of run")))
            self.refused_aborts.clear()
        finally:
            if self._nursery is not None:
                self._nursery.cancel_scope.cancel()

    def _all_mms(self) -> list:
        """The mms of every process forked so far (one that never started
        never had users, so it can neither leak nor hold pages)."""
        mms: dict[int, Any] = {}
        for p in self._boot.all_processes:
            if p.mm is not None and p.forked:
                mms.setdefault(id(p.mm), p.mm)
        return list(mms.values())

    def _check_mm_refs(self) -> None:
        """Every mm_struct whose users are gone has been freed, unless someone
        still at work holds it: the reaper, or a thread still in do_exit()."""
        # One walk of the threads, not one per mm: O(N), not O(N^2), at 10,000 processes.
        active = {id(t.active_mm) for t in self.for_each_thread() if t.active_mm is not None}
        for mm in self._all_mms():
            if mm.mm_users or mm.freed or self._reaper_holds(mm) or id(mm) in active:
                continue
            held = {who: n for who, n in mm.holders.items() if n}
            if held == {"oom_reaper": 1} and self.policies.holds(mm):
                self.log.emit("error", policy=self.policies.names["reaper"],
                              hook="workbench_reaper_next",
                              problem=f"mm {mm.id} was queued with the reaper policy and never "
                                      "handed to the oom_reaper thread: its pin leaked")
                continue
            self.log.emit("invariant", problem=f"mm {mm.id} leaked: mm_count {mm.mm_count} "
                          f"held by {held}")

    def _check_pages(self) -> None:
        """Every page is free or accounted somewhere (only once nothing is in
        flight: an allocation holds pages it has not accounted yet)."""
        used = (self.zone.kernel + self.zone.pgtables + self.zone.hugetlb
                + self.memcgs.page_cache())
        for mm in self._all_mms():
            used += mm.anon + mm.file + mm.shmem + sum(v.shmem_unmapped for v in mm.vmas)
        if used + self.zone.free != self.zone.managed:
            self.log.emit("invariant", problem=f"page accounting: free {self.zone.free} + used "
                          f"{used} != managed {self.zone.managed}")
        entries = sum(v.swap for mm in self._all_mms() for v in mm.vmas)
        if entries != self.swap.used:
            self.log.emit("invariant", problem=f"swap accounting: {entries} swap entries but "
                          f"{self.swap.used} slots in use")

    def _reaper_holds(self, mm: Any) -> bool:
        """The reaper thread is still at work on mm (its pin is not a leak)."""
        reaper = self.oom_reaper_th
        return mm.holders.get("oom_reaper", 0) > 0 and reaper is not None and (
            reaper.waiting_on != "idle" or any(w.mm is mm for w in self.reaper_timers))
