"""Reaper policies: how killed mms reach the oom_reaper thread, how it retries,
and what it tells the OOM killer when done."""

from __future__ import annotations

from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from workbench.config import Dur
from workbench.units import KTIME_MAX, Duration
from workbench.policy import AfterReap, Policy, ReapWork, Retry, hookimpl
from workbench.workload.spec import MachineSpec

Verdict = Literal["nothing", "exit_oom_victim", "oom_skip"]


class NoReaper(Policy):
    """No oom_reaper thread: Linux 4.5 before the patch."""

    name = "none"
    concern = "reaper"

    @hookimpl
    def workbench_reaper_enabled(self) -> bool:
        return False


class LinuxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: Literal["slot", "lifo", "fifo"] = Field(
        "slot", description="slot: the seed's one mm_to_reap, a second mm is dropped; lifo: "
        "4.6's oom_reaper_list, pushed and popped at the head; fifo: in order (no kernel)")
    attempts: int = Field(10, ge=1, description="down_read_trylock attempts before giving up")
    sleep: Dur | None = Field(None, description="sleep after a failed attempt (default HZ/10)")
    delay: Dur = Field(Duration(), description="wait before queuing (5.18 OOM_REAPER_DELAY, 2s)")
    after_reap: Verdict = Field("nothing", description="what a successful reap tells the OOM "
                                "killer (4.6: exit_oom_victim; 4.9: oom_skip)")
    after_give_up: Verdict = Field("nothing", description="what giving up tells the OOM killer "
                                   "(4.7: exit_oom_victim; 4.9: oom_skip)")

    @field_validator("sleep")
    @classmethod
    def _sleeps(cls, v: Duration | None) -> Duration | None:
        # schedule_timeout_idle() of 0 returns at once: the retries would spin
        # without virtual time passing.
        if v is not None and not (v.ns or v.jiffies):
            raise ValueError("expected a duration of more than 0")
        return v


_VERDICTS = {"nothing": AfterReap(), "exit_oom_victim": AfterReap(exit_oom_victim=True),
             "oom_skip": AfterReap(oom_skip=True)}


class Linux(Policy):
    """The oom_reaper as Linux has had it.  The defaults are the seed: one
    mm_to_reap slot filled by cmpxchg (a second mm is dropped), 10 attempts
    HZ/10 apart, the slot cleared when done, nothing told to the OOM killer.
    4.6's list, 5.18's delay and what a reap tells the killer are options."""

    name = "linux"
    concern = "reaper"
    Options = LinuxOptions

    def __init__(self, options: LinuxOptions, machine: MachineSpec):
        super().__init__(options, machine)

        def option(name: str):   # a subclass with Options of its own keeps the defaults
            return getattr(options, name, LinuxOptions.model_fields[name].default)

        self.queue = option("queue")
        self.attempts = option("attempts")
        sleep = option("sleep")
        # schedule_timeout_idle(HZ/10): whole jiffies
        self.sleep_ns = (sleep.to_ns(machine.hz) if sleep is not None
                         else machine.hz // 10 * machine.jiffy_ns)
        self.delay_ns = option("delay").to_ns(machine.hz)
        self.after = {True: _VERDICTS[option("after_reap")],
                      False: _VERDICTS[option("after_give_up")]}
        self.mm_to_reap: ReapWork | None = None            # queue = "slot"
        self.oom_reaper_list: deque[ReapWork] = deque()     # queue = "lifo" | "fifo"

    @hookimpl
    def workbench_reaper_enabled(self) -> bool:
        return True

    @hookimpl
    def workbench_reaper_delay(self, work: ReapWork) -> int:
        return self.delay_ns

    @hookimpl
    def workbench_reaper_queue(self, work: ReapWork) -> bool:
        if self.queue == "slot":
            if self.mm_to_reap is not None:      # cmpxchg(&mm_to_reap, NULL, mm) failed
                return False
            self.mm_to_reap = work
            return True
        # 4.6 wake_oom_reaper(): a task already on the list is not added twice.
        if any(w.task is work.task for w in self.oom_reaper_list):
            return False
        if self.queue == "lifo":
            self.oom_reaper_list.appendleft(work)   # tsk->oom_reaper_list = oom_reaper_list
        else:
            self.oom_reaper_list.append(work)
        return True

    @hookimpl
    def workbench_reaper_next(self) -> ReapWork | None:
        if self.queue == "slot":
            return self.mm_to_reap                   # stays in the slot while it is reaped
        # 4.6 oom_reaper(): the head is taken off the list before the reap
        return self.oom_reaper_list.popleft() if self.oom_reaper_list else None

    @hookimpl
    def workbench_reaper_retry(self, work: ReapWork, attempt: int) -> Retry:
        # while (attempts++ < MAX_OOM_REAP_RETRIES && !__oom_reap_task(tsk))
        #         schedule_timeout_idle(HZ/10);
        return Retry(self.sleep_ns, attempt < self.attempts)

    @hookimpl
    def workbench_reaper_done(self, work: ReapWork, reaped: bool) -> AfterReap:
        if self.mm_to_reap is work:
            self.mm_to_reap = None                   # WRITE_ONCE(mm_to_reap, NULL)
        return self.after[reaped]


class BackoffOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: Literal["slot", "lifo", "fifo"] = Field(
        "slot", description="as `linux`: slot (default, so that against the seed only the "
        "retry schedule differs), lifo or fifo")
    initial: Dur | None = Field(None, description="the sleep after the first failed attempt "
                                "(default HZ/10, the seed's)")
    cap: Dur = Field(Duration(ns=1_000_000_000), description="the longest sleep: each failed "
                     "attempt doubles the sleep up to this")
    attempts: int = Field(10, ge=1, description="down_read_trylock attempts before giving up")
    budget: Dur | None = Field(None, description="give up rather than sleep past this much "
                               "virtual time of retry sleeps in all (default: no limit)")
    delay: Dur = Field(Duration(), description="as `linux`")
    after_reap: Verdict = Field("nothing", description="as `linux`")
    after_give_up: Verdict = Field("nothing", description="as `linux`")

    @field_validator("initial", "cap", "budget")
    @classmethod
    def _positive(cls, v: Duration | None) -> Duration | None:
        # A zero sleep would make the retries spin without virtual time passing.
        if v is not None and not (v.ns or v.jiffies):
            raise ValueError("expected a duration of more than 0")
        return v

    @model_validator(mode="after")
    def _cap_at_least_initial(self) -> BackoffOptions:
        # Both in ns when neither is in jiffies; HZ/10 (no initial) is checked at no hz.
        i, c = self.initial, self.cap
        if i is not None and not i.jiffies and not c.jiffies and c.ns < i.ns:
            raise ValueError(f"expected cap ({c}) of at least initial ({i})")
        return self


class Backoff(Linux):
    """The seed's reaper with exponential back-off: after the n-th failed
    mmap_sem trylock it sleeps initial * 2**(n-1), at most cap, and gives up
    after `attempts` attempts or when the next sleep would take the retry
    sleeps past `budget`.  It gives up without the seed's last sleep (that
    sleep only holds the slot longer).  Queue, delay and what it tells the
    OOM killer are `linux`'s options."""

    name = "backoff"
    Options = BackoffOptions

    def __init__(self, options: BackoffOptions, machine: MachineSpec):
        super().__init__(options, machine)
        hz = machine.hz
        # schedule_timeout_idle() sleeps whole jiffies: round each sleep up to one.
        self.initial_ns = (options.initial.to_ns(hz) if options.initial is not None
                           else self.sleep_ns)
        self.cap_ns = max(options.cap.to_ns(hz), self.initial_ns)
        self.budget_ns = options.budget.to_ns(hz) if options.budget is not None else None
        self.jiffy_ns = machine.jiffy_ns
        self.slept: dict[int, int] = {}       # id(work) -> retry sleep so far

    def backoff_ns(self, attempt: int) -> int:
        """initial * 2**(attempt-1), capped, in whole jiffies."""
        ns = min(self.initial_ns << min(attempt - 1, 62), self.cap_ns)
        return min(-(-ns // self.jiffy_ns) * self.jiffy_ns, KTIME_MAX)

    @hookimpl
    def workbench_reaper_retry(self, work: ReapWork, attempt: int) -> Retry:
        sleep = self.backoff_ns(attempt)
        slept = self.slept.get(id(work), 0)
        over = self.budget_ns is not None and slept + sleep > self.budget_ns
        if attempt >= self.attempts or over:
            self.slept.pop(id(work), None)
            return Retry(0, False)
        self.slept[id(work)] = slept + sleep
        return Retry(sleep, True)

    @hookimpl
    def workbench_reaper_done(self, work: ReapWork, reaped: bool) -> AfterReap:
        self.slept.pop(id(work), None)
        return super().workbench_reaper_done(work, reaped)


class Seed(Linux):
    """The seed's reaper (aac453635549): the defaults of `linux` (the name
    older configs use)."""

    name = "seed"


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(NoReaper)
    registry.add_policy(Linux)
    registry.add_policy(Seed)
    registry.add_policy(Backoff)
