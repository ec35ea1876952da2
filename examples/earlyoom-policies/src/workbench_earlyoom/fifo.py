"""`fifo`: a first-in first-out oom_reaper queue.

The seed's reaper has one mm_to_reap slot (a second victim's mm is dropped);
4.6's oom_reaper_list is LIFO.  No kernel had a FIFO list: this one reaps the
victims in the order they were killed, and drops none.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.api import (
    AfterReap,
    Dur,
    Duration,
    MachineSpec,
    Policy,
    ReapWork,
    Retry,
    hookimpl,
)

Verdict = Literal["nothing", "exit_oom_victim", "oom_skip"]
_VERDICTS = {"nothing": AfterReap(), "exit_oom_victim": AfterReap(exit_oom_victim=True),
             "oom_skip": AfterReap(oom_skip=True)}


class FifoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    attempts: int = Field(10, ge=1, description="down_read_trylock attempts per mm before "
                          "giving up on it")
    sleep: Dur = Field(Duration(ns=100_000_000), description="sleep after a failed attempt")
    delay: Dur = Field(Duration(), description="wait before queuing (5.18 OOM_REAPER_DELAY, "
                       "2s)")
    # attempts, sleep, delay and these two are the names the built-in `linux` reaper
    # uses: a preset's follow-ups that set them (v4.6, modern) set them here too.
    after_reap: Verdict = Field("nothing", description="what a successful reap tells the OOM "
                                "killer (4.6: exit_oom_victim; 4.9: oom_skip)")
    after_give_up: Verdict = Field("nothing", description="what giving up tells the OOM "
                                   "killer (4.7: exit_oom_victim; 4.9: oom_skip)")

    @field_validator("sleep")
    @classmethod
    def _sleeps(cls, v: Duration) -> Duration:
        # A zero sleep would retry without virtual time passing.
        if not (v.ns or v.jiffies):
            raise ValueError("expected a duration of more than 0")
        return v


class Fifo(Policy):
    """A FIFO list of killed mms: reaped in kill order, none dropped
    (`attempts` trylocks `sleep` apart for each)."""

    name = "fifo"
    concern = "reaper"
    Options = FifoOptions

    def __init__(self, options: FifoOptions, machine: MachineSpec):
        super().__init__(options, machine)
        self.attempts = options.attempts
        self.sleep_ns = options.sleep.to_ns(machine.hz)     # "3jiffies" needs HZ
        self.delay_ns = options.delay.to_ns(machine.hz)
        self.after = {True: _VERDICTS[options.after_reap],
                      False: _VERDICTS[options.after_give_up]}
        self.queue: deque[ReapWork] = deque()

    @hookimpl
    def workbench_reaper_enabled(self) -> bool:
        return True

    @hookimpl
    def workbench_reaper_delay(self, work: ReapWork) -> int:
        return self.delay_ns

    @hookimpl
    def workbench_reaper_queue(self, work: ReapWork) -> bool:
        # As 4.6's wake_oom_reaper(): a task already waiting is not queued twice
        # (that is not a dropped mm: its first entry is still there).
        if any(w.task is work.task for w in self.queue):
            return False
        self.queue.append(work)
        return True

    @hookimpl
    def workbench_reaper_next(self) -> ReapWork | None:
        return self.queue.popleft() if self.queue else None

    @hookimpl
    def workbench_reaper_retry(self, work: ReapWork, attempt: int) -> Retry:
        return Retry(self.sleep_ns, attempt < self.attempts)

    @hookimpl
    def workbench_reaper_done(self, work: ReapWork, reaped: bool) -> AfterReap:
        return self.after[reaped]
