"""Userspace OOM killers: daemons that kill before the kernel's OOM killer
runs (docs/kernel.md, "Userspace OOM killers").  `none` is a machine without
one, the default of every preset; `earlyoom` is rfjakob/earlyoom's poll loop."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.kernel.oom_kill import OOM_SCORE_ADJ_MIN, find_lock_task_mm
from workbench.kernel.sched import Process
from workbench.plugins.victim import Linux as LinuxVictim
from workbench.plugins.victim import LinuxOptions as LinuxVictimOptions
from workbench.policy import MemInfo, Policy, UserKill, UserspaceView, hookimpl

MS = 1_000_000

# earlyoom kill.c: --prefer/--avoid move oom_score by this much, or VmRSS by
# 3 GiB (in KiB) with --sort-by-rss.
OOM_SCORE_PREFER, OOM_SCORE_AVOID = 300, -300
VMRSS_PREFER, VMRSS_AVOID = 3145728, -3145728
TASK_COMM_LEN = 16


class NoUserspace(Policy):
    """No userspace OOM killer: the kernel's OOM killer alone (every preset)."""

    name = "none"
    concern = "userspace"

    @hookimpl
    def workbench_userspace_enabled(self) -> bool:
        return False


def _regex(v: str | None) -> str | None:
    if v is not None:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"expected a regular expression: {e}") from None
    return v


class EarlyoomOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mem_term_percent: float = Field(10, ge=0, le=100, description="-m: the SIGTERM level of "
                                    "MemAvailable, in percent; here it only sets the poll "
                                    "sleep (SIGTERM is not modelled)")
    mem_kill_percent: float | None = Field(None, ge=0, le=100, description="-m TERM,KILL: "
                                           "SIGKILL at or below this MemAvailable percent "
                                           "(default half of mem_term_percent)")
    prefer: str | None = Field(None, description="--prefer REGEX: +300 oom_score (+3 GiB "
                               "VmRSS with sort_by_rss) for a matching comm")
    avoid: str | None = Field(None, description="--avoid REGEX: -300 oom_score (-3 GiB VmRSS)")
    ignore: str | None = Field(None, description="--ignore REGEX: never kill a matching comm")
    sort_by_rss: bool = Field(False, description="--sort-by-rss: the largest VmRSS wins, not "
                              "the largest oom_score")

    _regexes = field_validator("prefer", "avoid", "ignore")(_regex)

    @model_validator(mode="after")
    def _kill_at_most_term(self) -> EarlyoomOptions:
        if self.mem_kill_percent is not None and self.mem_kill_percent > self.mem_term_percent:
            raise ValueError(f"expected mem_kill_percent ({self.mem_kill_percent:g}) of at "
                             f"most mem_term_percent ({self.mem_term_percent:g})")
        return self


class Earlyoom(Policy):
    """earlyoom (rfjakob/earlyoom main.c poll_loop(), kill.c): at or below
    mem_kill_percent of MemAvailable (and of free swap: with no swap, always)
    SIGKILL the process with the highest /proc/pid/oom_score (--prefer and
    --avoid move it by 300; --sort-by-rss ranks by VmRSS), skipping pids up to
    2, kthreads, OOM_SCORE_ADJ_MIN and --ignore; then wait for it to exit
    (100 ms polls, at most 10 s) before looking again.  It sleeps
    mem_headroom_KiB / 6000 ms between polls, clamped to 100..1000 ms."""

    name = "earlyoom"
    concern = "userspace"
    Options = EarlyoomOptions

    def __init__(self, options: EarlyoomOptions, machine: object):
        super().__init__(options, machine)
        self.term = options.mem_term_percent
        # main.c: "-m 10" sets the SIGKILL level to half the SIGTERM level.
        self.kill = (options.mem_kill_percent if options.mem_kill_percent is not None
                     else self.term / 2)
        self.prefer, self.avoid, self.ignore = (re.compile(r) if r is not None else None
                                                for r in (options.prefer, options.avoid,
                                                          options.ignore))
        # /proc/pid/oom_score is 4.5's oom_badness() * 1000 / totalpages
        # (fs/proc/base.c proc_oom_score()), whatever the arm's victim policy.
        self.kernel_badness = LinuxVictim(LinuxVictimOptions(), machine)
        self.waiting: Process | None = None     # kill_wait(): the victim it waits for
        self.checks = 0
        self.after_wait_ns = 0

    @hookimpl
    def workbench_userspace_enabled(self) -> bool:
        return True

    @hookimpl
    def workbench_userspace_poll(self, view: UserspaceView) -> UserKill:
        if self.waiting is not None:
            return self.kill_wait()
        m = view.meminfo
        percent = mem_available_percent(m)
        # lowmem_sig(): memory and swap both at or below the SIGKILL level;
        # SwapFreePercent is 0 without swap, so at or below any level.  The swap
        # level (-s, default 10,5) is taken equal to the memory level here.
        swap = m.swap_free_kb * 100 / m.swap_total_kb if m.swap_total_kb else 0.0
        if percent > self.kill or swap > self.kill:
            return UserKill(self.sleep_time_ms(m, percent) * MS)
        victim = self.find_largest_process(view)
        # (poll_loop re-reads meminfo before the kill; no virtual time has passed.)
        if victim is None:
            # kill_process(): "Could not find a process to kill. Sleeping 1 second."
            return UserKill((1000 + self.sleep_time_ms(m, percent)) * MS)
        proc, score, rss_kb = victim
        self.waiting, self.checks = proc, 1       # kill_wait() checks at once, then sleeps
        self.after_wait_ns = self.sleep_time_ms(m, percent) * MS
        return UserKill(100 * MS, proc, f"mem {percent:.2f}% <= {self.kill:.2f}%: oom_score "
                                         f"{score}, oom_score_adj {proc.oom_score_adj}, "
                                         f"VmRSS {rss_kb // 1024} MiB")

    def kill_wait(self) -> UserKill:
        """kill.c kill_wait(): is_alive() every 100 ms, 100 times, then back to
        poll_loop(), which sleeps what the meminfo read before the kill said."""
        if self.checks >= 100 or not self.waiting.alive:      # "did not exit", or it exited
            self.waiting = None
            return UserKill(self.after_wait_ns)
        self.checks += 1
        return UserKill(100 * MS)

    def sleep_time_ms(self, m: MemInfo, percent: float) -> int:
        """main.c sleep_time_ms(): the headroom above the SIGTERM level at the
        fastest fill rate measured (6000 MiB/s; no swap headroom), clamped."""
        user_total = m.mem_available_kb + m.anon_pages_kb
        headroom_kib = max(int((percent - self.term) * user_total / 100), 0)
        return min(max(headroom_kib // 6000, 100), 1000)

    def find_largest_process(self, view: UserspaceView) -> tuple[Process, int, int] | None:
        """kill.c find_largest_process(): /proc in pid order; a later process
        wins only with a larger score, or an equal score and a larger VmRSS."""
        best = None
        best_key = None
        for proc in sorted(view.processes(), key=lambda p: p.pid):
            cand = self.candidate(proc, view)
            if cand is None:
                continue
            key = cand[1:] if not self.options.sort_by_rss else cand[:0:-1]
            if best_key is None or key > best_key:
                best, best_key = cand, key
        if best is None:
            return None
        proc, score, rss_kb = best
        return proc, score, rss_kb

    def candidate(self, proc: Process, view: UserspaceView) -> tuple[Process, int, int] | None:
        """is_larger()'s reading of one process: (process, oom_score, VmRSS kB)
        with --prefer/--avoid applied, or None if it is never a victim."""
        if proc.pid <= 2 or proc.kthread or proc.init:   # init, kthreadd and its children
            return None
        if proc.oom_score_adj == OOM_SCORE_ADJ_MIN:
            return None
        comm = proc.comm[:TASK_COMM_LEN - 1]
        if self.ignore is not None and self.ignore.search(comm):
            return None
        score = self.kernel_badness.badness(proc, view) * 1000 // view.totalpages
        task = find_lock_task_mm(proc)
        rss_kb = task.mm.get_mm_rss() * 4 if task is not None else 0
        sort_rss = self.options.sort_by_rss
        if self.prefer is not None and self.prefer.search(comm):
            rss_kb, score = (rss_kb + VMRSS_PREFER, score) if sort_rss else (rss_kb, score + OOM_SCORE_PREFER)
        if self.avoid is not None and self.avoid.search(comm):
            rss_kb, score = (rss_kb + VMRSS_AVOID, score) if sort_rss else (rss_kb, score + OOM_SCORE_AVOID)
        return proc, score, rss_kb


def mem_available_percent(m: MemInfo) -> float:
    """meminfo.c parse_meminfo(): MemAvailable as a percentage of "user
    memory", MemAvailable + AnonPages (earlyoom 1.8)."""
    user_total = m.mem_available_kb + m.anon_pages_kb
    return m.mem_available_kb * 100 / user_total if user_total else 100.0


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(NoUserspace)
    registry.add_policy(Earlyoom)
