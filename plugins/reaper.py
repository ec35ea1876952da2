"""Reaper policies: how killed mms reach the oom_reaper thread and how it retries."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from workbench.config import Dur
from workbench.units import Duration
from workbench.policy import Policy, ReapWork, Retry, hookimpl
from workbench.workload.spec import MachineSpec


class NoReaper(Policy):
    """No oom_reaper thread: Linux 4.5 before the patch."""

    name = "none"
    concern = "reaper"

    @hookimpl
    def workbench_reaper_enabled(self) -> bool:
        return False


class SeedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    attempts: int = Field(10, ge=1, description="down_read_trylock attempts before giving up")
    sleep: Dur | None = Field(None, description="sleep after a failed attempt (default HZ/10)")

    @field_validator("sleep")
    @classmethod
    def _sleeps(cls, v: Duration | None) -> Duration | None:
        # schedule_timeout_idle() of 0 returns at once: the retries would spin
        # without virtual time passing.
        if v is not None and not (v.ns or v.jiffies):
            raise ValueError("expected a duration of more than 0")
        return v


class SeedSlot(Policy):
    """The seed: one mm_to_reap slot filled by cmpxchg (a second mm is dropped), 10
    attempts HZ/10 apart, the slot cleared when done, nothing told to the OOM killer."""

    name = "seed"
    concern = "reaper"
    Options = SeedOptions

    def __init__(self, options: SeedOptions, machine: MachineSpec):
        super().__init__(options, machine)
        self.mm_to_reap: ReapWork | None = None
        self.attempts = options.attempts
        # schedule_timeout_idle(HZ/10): whole jiffies
        self.sleep_ns = (options.sleep.to_ns(machine.hz) if options.sleep is not None
                         else machine.hz // 10 * machine.jiffy_ns)

    @hookimpl
    def workbench_reaper_enabled(self) -> bool:
        return True

    @hookimpl
    def workbench_reaper_queue(self, work: ReapWork) -> bool:
        if self.mm_to_reap is not None:          # cmpxchg(&mm_to_reap, NULL, mm) failed
            return False
        self.mm_to_reap = work
        return True

    @hookimpl
    def workbench_reaper_next(self) -> ReapWork | None:
        return self.mm_to_reap                   # stays in the slot while it is reaped

    @hookimpl
    def workbench_reaper_retry(self, work: ReapWork, attempt: int) -> Retry:
        # while (attempts++ < 10 && !__oom_reap_vmas(mm)) schedule_timeout_idle(HZ/10);
        return Retry(self.sleep_ns, attempt < self.attempts)

    @hookimpl
    def workbench_reaper_done(self, work: ReapWork, reaped: bool) -> None:
        self.mm_to_reap = None                   # WRITE_ONCE(mm_to_reap, NULL)


@hookimpl
def workbench_register_policies(registry: object) -> None:
    registry.add_policy(NoReaper)
    registry.add_policy(SeedSlot)
