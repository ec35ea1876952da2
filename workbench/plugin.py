"""A run's policies: the kernel's typed door to the decision hooks.

A run instantiates the policies its arm chose, one per concern (workbench/registry.py holds
the named classes, workbench/discovery.py loads the plugins that register
them) and registers them with a plugin manager of its own, so each decision
hook has exactly one answer.  `RunPolicies` checks every answer, turning a
raise or a wrong type into a PolicyError naming the policy.
"""

from __future__ import annotations

from typing import Any, Callable

from workbench.discovery import new_plugin_manager
from workbench.interrupt import Interrupt
from workbench.kernel.sched import TASK_DEAD, Halt, Process, Task
from workbench.log import scrub, short_traceback
from workbench.policy import (ABORT, CONCERNS, AfterReap, ReapWork, Retry, UserKill, Victim,
                              ZapDetails)
from workbench.registry import RUNNING_REAPER_HOOKS, RUNNING_USERSPACE_HOOKS
from workbench.units import INT64_MAX, KTIME_MAX


class PolicyError(Exception):
    """A policy raised or answered wrongly during a run: outcome "error"."""

    def __init__(self, policy: str, hook: str, problem: str, traceback: str | None = None):
        problem = scrub(problem)
        super().__init__(f"policy {policy!r} ({hook}): {problem}")
        self.policy = policy
        self.hook = hook
        self.problem = problem
        self.traceback = traceback

    def fields(self) -> dict[str, Any]:
        """The `error` event's fields."""
        out = {"policy": self.policy, "hook": self.hook, "problem": str(self)}
        if self.traceback:
            out["traceback"] = self.traceback
        return out


def policy_raised(policy: str, hook: str, e: BaseException) -> PolicyError:
    """A policy's own exception, whatever its class (SystemExit included)."""
    return PolicyError(policy, hook, f"{type(e).__name__}: {e}", short_traceback(e))


class RunPolicies:
    """One run's policies behind typed calls; every answer is checked, and
    anything a policy raises or answers wrongly - checking included -
    becomes a PolicyError naming it."""

    def __init__(self, chosen: dict[str, Any]):
        self.names = {c: type(p).name for c, p in chosen.items()}
        self._pm = new_plugin_manager()
        for concern in CONCERNS:
            try:
                self._pm.register(chosen[concern], name=f"{concern}:{self.names[concern]}")
            except Exception as e:          # pluggy: a hookimpl that does not fit its spec
                raise PolicyError(self.names[concern], "register", f"{type(e).__name__}: {e}")
        self._hook = self._pm.hook
        self.current: tuple[str, str] | None = None     # the hook being called, if any
        self.scans = 0                                  # tasks it has looked at
        self._queued: dict[int, ReapWork] = {}    # handed to the reaper policy, not done

    def _call(self, concern: str, hook: str, **kwargs: Any) -> Any:
        self.current, self.scans = (concern, hook), 0
        try:
            return getattr(self._hook, hook)(**kwargs)
        except BaseException as e:  # a plugin's bug ends the run, not the workbench
            if Interrupt.genuine(e) or isinstance(e, Halt):    # the kernel ended the run
                raise
            raise policy_raised(self.names[concern], hook, e) from e
        finally:
            self.current = None

    def scanned(self, n: int, floor: int, threads: Callable[[], int]) -> None:
        """n tasks looked at by the hook being called: more than
        max(floor, twice the task list's threads()) in one call - floor is
        limits.steps_per_instant - is that policy's fault, a scan that never
        ends.  The list's size is asked only past the floor (a hot path)."""
        self.scans += n
        if self.current is not None and self.scans > floor and self.scans > 2 * threads():
            concern, hook = self.current
            limit = max(floor, 2 * threads())
            halt = Halt("step limit")        # a BaseException: `except Exception` cannot stop it
            halt.policy_error = PolicyError(
                self.names[concern], hook, f"step limit: one call looked at more than {limit} "
                "tasks (limits.steps_per_instant, or twice the task list): a scan that never ends")
            raise halt

    def _answer(self, concern: str, hook: str, expected: str, r: Any,
                clean: Callable[[Any], Any]) -> Any:
        """clean(r): the answer as the kernel will use it, read once and
        checked (a fresh Victim, Retry or ZapDetails, so that an object
        whose attributes change after the check cannot slip past it), or
        WRONG.  A check that raises on r is a wrong answer too."""
        try:
            value = clean(r)
        except Exception:
            value = WRONG
        if value is not WRONG:
            return value
        raise PolicyError(self.names[concern], hook, f"returned {_show(r)}, expected {expected}")

    def holds(self, mm: Any) -> bool:
        """Whether the reaper policy queued work for mm that is not done."""
        return any(w.mm is mm for w in self._queued.values())

    # victim selection

    def select_bad_process(self, oc: Any) -> Victim | object | None:
        hook = "workbench_select_bad_process"
        return self._answer("victim", hook, f"a Victim of a live task in scope ({_POINTS}), "
                            "ABORT or None", self._call("victim", hook, oc=oc),
                            lambda r: r if r is None or r is ABORT else _victim(r, oc))

    def kill_allocating_task(self, oc: Any) -> bool:
        hook = "workbench_oom_kill_allocating_task"
        return self._answer("victim", hook, "True, False or None",
                            self._call("victim", hook, oc=oc),
                            lambda r: False if r is None else _bool(r))

    def sacrifice_child(self, oc: Any, victim: Victim) -> Victim:
        hook = "workbench_oom_sacrifice_child"
        return self._answer("victim", hook, f"a Victim of a live task in scope ({_POINTS})",
                            self._call("victim", hook, oc=oc, victim=victim),
                            lambda r: _victim(r, oc))

    def kill_sharer(self, oc: Any, victim: Any, process: Any) -> bool:
        hook = "workbench_oom_kill_sharer"
        return self._answer("victim", hook, "True or False",
                            self._call("victim", hook, oc=oc, victim=victim, process=process),
                            _bool)

    # the OOM reaper

    def reaper_enabled(self) -> bool:
        hook = "workbench_reaper_enabled"
        enabled = self._answer("reaper", hook, "True or False", self._call("reaper", hook), _bool)
        self._running("reaper", hook, enabled, RUNNING_REAPER_HOOKS)
        return enabled

    def _running(self, concern: str, hook: str, enabled: bool, needs: tuple[str, ...]) -> None:
        """An enabled reaper or daemon must implement the hooks it will be asked."""
        missing = [h for h in needs if enabled and not getattr(self._hook, h).get_hookimpls()]
        if missing:
            raise PolicyError(self.names[concern], hook, f"returned True, but a {concern} "
                              f"policy that runs needs {', '.join(missing)} too")

    def reaper_queue(self, work: ReapWork) -> bool:
        hook = "workbench_reaper_queue"
        queued = self._answer("reaper", hook, "True or False",
                              self._call("reaper", hook, work=work), _bool)
        if queued:
            self._queued[id(work)] = work
        return queued

    def reaper_delay(self, work: ReapWork) -> int:
        hook = "workbench_reaper_delay"
        return self._answer("reaper", hook, "an int of nanoseconds from 0 to 2**63-1",
                            self._call("reaper", hook, work=work),
                            lambda r: 0 if r is None else r if _is_int(r, 0, KTIME_MAX) else WRONG)

    def reaper_next(self) -> ReapWork | None:
        hook = "workbench_reaper_next"
        return self._answer("reaper", hook, "None or a ReapWork it queued and has not been "
                            "told is done", self._call("reaper", hook),
                            lambda r: r if r is None or self._queued.get(id(r)) is r else WRONG)

    def reaper_retry(self, work: ReapWork, attempt: int) -> Retry:
        hook = "workbench_reaper_retry"
        return self._answer("reaper", hook, "a Retry(sleep_ns, again) with an int sleep_ns "
                            "from 0 to 2**63-1 and a bool again",
                            self._call("reaper", hook, work=work, attempt=attempt), _retry)

    def reaper_done(self, work: ReapWork, reaped: bool) -> AfterReap:
        self._queued.pop(id(work), None)
        hook = "workbench_reaper_done"
        return self._answer("reaper", hook, "None or AfterReap with bool fields",
                            self._call("reaper", hook, work=work, reaped=reaped), _after_reap)

    # the VMA filter

    def reap_vma(self, vma: Any, mm: Any) -> ZapDetails | None:
        hook = "workbench_reap_vma"
        return self._answer("vma_filter", hook, "ZapDetails with bool fields, or None (hugetlb "
                            "VMAs cannot be zapped page by page)",
                            self._call("vma_filter", hook, vma=vma, mm=mm),
                            lambda r: r if r is None else _zap_details(r, vma))

    # the userspace OOM killer

    def userspace_enabled(self) -> bool:
        hook = "workbench_userspace_enabled"
        enabled = self._answer("userspace", hook, "True or False",
                               self._call("userspace", hook), _bool)
        self._running("userspace", hook, enabled, RUNNING_USERSPACE_HOOKS)
        return enabled

    def userspace_poll(self, view: Any) -> UserKill:
        hook = "workbench_userspace_poll"
        return self._answer("userspace", hook, "a UserKill(sleep_ns, kill, reason) with an int "
                            "sleep_ns from 1 to 2**63-1, kill None or a live process of this "
                            "run that is not init or a kthread, and a str reason",
                            self._call("userspace", hook, view=view),
                            lambda r: _user_kill(r, view._kernel))


WRONG = object()
"""What a clean function returns for an answer that breaks the contract."""

# oom_badness() was an unsigned long of pages, at least 1, until 5.9 made it a
# signed long; the log holds it as a signed 64-bit integer.
_POINTS = "points an int from -2**63 to 2**63-1"


def _bool(r: Any) -> bool | object:
    return r if type(r) is bool else WRONG


def _is_int(r: Any, lo: int, hi: int) -> bool:
    return type(r) is int and lo <= r <= hi


def _retry(r: Any) -> Retry | object:
    if not isinstance(r, Retry):
        return WRONG
    sleep_ns, again = r.sleep_ns, r.again
    if _is_int(sleep_ns, 0, KTIME_MAX) and type(again) is bool:
        return Retry(sleep_ns, again)
    return WRONG


def _after_reap(r: Any) -> AfterReap | object:
    if r is None:
        return AfterReap()
    if not isinstance(r, AfterReap):
        return WRONG
    exit_oom_victim, oom_skip = r.exit_oom_victim, r.oom_skip
    if type(exit_oom_victim) is bool and type(oom_skip) is bool:
        return AfterReap(exit_oom_victim, oom_skip)
    return WRONG


def _zap_details(r: Any, vma: Any) -> ZapDetails | object:
    if not isinstance(r, ZapDetails) or vma.hugetlb_page:
        return WRONG
    ignore_dirty, check_swap_entries = r.ignore_dirty, r.check_swap_entries
    if type(ignore_dirty) is bool and type(check_swap_entries) is bool:
        return ZapDetails(ignore_dirty, check_swap_entries)
    return WRONG


def _show(r: Any) -> str:
    try:
        text = scrub(repr(r))
    except Exception as e:
        text = f"<{type(r).__name__} whose repr raised {type(e).__name__}>"
    return text if len(text) <= 200 else text[:197] + "..."


def _victim(r: Any, oc: Any) -> Victim | object:
    """A Victim of a task of this run's kernel that the OOM killer may kill."""
    if not isinstance(r, Victim):
        return WRONG
    task, points = r.task, r.points
    if (_is_int(points, -INT64_MAX - 1, INT64_MAX) and isinstance(task, Task) and task.state != TASK_DEAD
            and task.mm is not None and task.mm.k is oc._kernel and oc.in_scope(task)
            and not task.process.kthread and not task.process.init):
        return Victim(task, points)
    return WRONG


def _user_kill(r: Any, kernel: Any) -> UserKill | object:
    if not isinstance(r, UserKill):
        return WRONG
    sleep_ns, kill, reason = r.sleep_ns, r.kill, r.reason
    if not _is_int(sleep_ns, 1, KTIME_MAX) or type(reason) is not str or len(reason) > 500:
        return WRONG
    if kill is not None and not (isinstance(kill, Process) and kill.alive and not kill.init
                                 and not kill.kthread
                                 and any(p is kill for p in kernel.processes)):
        return WRONG
    return UserKill(sleep_ns, kill, reason)
