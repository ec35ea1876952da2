"""Outcomes and metrics (docs/metrics.md), computed from the event log alone.

`Metrics` is fed every event of a run, in order, and returns the summary.
The run itself feeds it as it logs, so the summary it writes is exactly what
a report recomputes later from the file.
"""

from __future__ import annotations

import math
from typing import Any

OUTCOMES = ("error", "panic", "lockup", "hang", "recovered", "no-oom")


class Metrics:
    def __init__(self) -> None:
        self.stall_limit = math.inf
        self.expect: dict[str, Any] | None = None
        self.oom_invocations = 0
        self.first_oom: float | None = None
        self.kills = 0
        self.killed: list[str] = []
        self.killed_sharers: list[str] = []
        self.segv: list[str] = []                       # faults past the end of a VMA
        self.fatal_at: dict[int, float] = {}            # tgid -> when a fatal signal came
        self.stalls: list[tuple[float, float]] = []   # (since, end); end inf when open
        self.max_stall = 0.0
        self.reaped_kb = 0
        self.reap_attempts = 0
        self.reap_failures = 0
        self.reaper_dropped = 0
        self.exit_freed_kb = 0
        self.core_dumps = 0
        self.core_incomplete = 0
        self.invariant_violations = 0
        self.panicked = False
        self.errors: list[str] = []
        self.waits: list[tuple[int, float, float]] = []   # (tgid, wait_s, end) of lock waits
        self.memcg_stalls: dict[str, list[float]] = {}
        self.memcg_spans: dict[str, list[tuple[float, float]]] = {}   # (since, end) per cgroup
        self.memcg_first_oom: dict[str, float] = {}
        self.victims: list[dict[str, Any]] = []         # per kill: when its memory came back
        self.userspace = False                          # the arm has a userspace OOM killer
        self.userspace_killed: list[str] = []
        self.reaper_busy = 0.0
        self._reaping: dict[int, float] = {}            # mm -> first attempt of this reap
        self.end = 0.0
        self._handlers = {name[3:]: getattr(self, name) for name in dir(self)
                          if name.startswith("on_")}

    def feed(self, event: dict) -> None:
        self.end = event["t"]
        handler = self._handlers.get(event["event"])
        if handler is not None:
            handler(event)

    # -- handlers ---------------------------------------------------------------

    def on_header(self, e: dict) -> None:
        self.stall_limit = e["config"]["limits"]["stall_s"]
        self.expect = e["config"].get("expect")
        self.userspace = e["config"].get("arm", {}).get("userspace", "none") != "none"
        for cg in e["config"]["scenario"].get("cgroups", []):
            self.memcg_stalls[cg["name"]] = []
            self.memcg_spans[cg["name"]] = []

    def on_out_of_memory(self, e: dict) -> None:
        self.oom_invocations += e.get("count", 1)     # a fold of aborted calls (log.py)
        if self.first_oom is None:
            self.first_oom = e["t"]
        if e.get("memcg") is not None:
            self.memcg_first_oom.setdefault(e["memcg"], e["t"])

    def on_kill(self, e: dict) -> None:
        self.kills += 1
        self.killed.append(e["comm"])
        self.victims.append({"comm": e["comm"], "pid": e.get("pid"), "mm": e.get("mm"),
                             "killed_s": e["t"], "freed_after_s": None, "freed_by": None})
        self._fatal(e)

    def on_userspace_kill(self, e: dict) -> None:
        self.userspace_killed.append(e["comm"])
        self._fatal(e)          # its stuck waits are excused, as an OOM victim's are

    def on_kill_sharer(self, e: dict) -> None:
        self.killed_sharers.append(e["comm"])
        self._fatal(e)

    def on_segv(self, e: dict) -> None:
        self.segv.append(f"{e['comm']} (vma {e['vma']})")
        self._fatal(e)

    def on_exit_group(self, e: dict) -> None:
        self._fatal(e)

    def _fatal(self, e: dict) -> None:
        self.fatal_at.setdefault(e["tgid"], e["t"])

    def on_alloc_stall(self, e: dict) -> None:
        end = math.inf if e["result"] == "open" else e["t"]
        self.stalls.append((e["since"], end))
        self.max_stall = max(self.max_stall, e["stall_s"])
        if e.get("memcg") in self.memcg_stalls:
            self.memcg_stalls[e["memcg"]].append(e["stall_s"])
            self.memcg_spans[e["memcg"]].append((e["since"], end))

    def on_reap_attempt(self, e: dict) -> None:
        self.reap_attempts += 1
        self._reaping.setdefault(e["mm"], e["t"])

    def on_reap_done(self, e: dict) -> None:
        self.reaped_kb += e["reaped_kb"]
        self._reap_ended(e)
        if e["reaped_kb"]:
            self._freed(e, "oom_reaper")

    def on_reap_give_up(self, e: dict) -> None:
        self.reap_failures += 1
        self._reap_ended(e)

    def on_reap_exit_race(self, e: dict) -> None:
        self._reap_ended(e)

    def _reap_ended(self, e: dict) -> None:
        """The reaper's attempts, sleeps between them and unmapping, for one mm."""
        since = self._reaping.pop(e["mm"], None)
        if since is not None:
            self.reaper_busy += e["t"] - since

    def _freed(self, e: dict, by: str) -> None:
        for v in self.victims:
            if v["mm"] == e["mm"] and v["freed_by"] is None:
                v["freed_after_s"] = round(e["t"] - v["killed_s"], 9)
                v["freed_by"] = by

    def on_reaper_dropped(self, e: dict) -> None:
        self.reaper_dropped += 1

    def on_core_dump(self, e: dict) -> None:
        self.core_dumps += 1
        self.core_incomplete += not e["complete"]

    def on_exit_mmap(self, e: dict) -> None:
        self.exit_freed_kb += e["freed_kb"]
        self._freed(e, "exit_mmap")

    def on_lock_wait(self, e: dict) -> None:
        self.waits.append((e["tgid"], e["wait_s"], e["t"]))

    def on_invariant(self, e: dict) -> None:
        self.invariant_violations += 1

    def on_error(self, e: dict) -> None:
        self.errors.append(e["problem"])

    def on_panic(self, e: dict) -> None:
        self.panicked = True

    # -- results ----------------------------------------------------------------

    def recovery_s(self) -> float | None:
        """First OOM invocation to the first moment after it when no
        allocation is stalled; None if that moment never came."""
        return _recovery(self.first_oom, self.stalls)

    def outcome(self) -> str:
        if self.errors or self.invariant_violations:
            return "error"
        if self.panicked:
            return "panic"
        if self.max_stall >= self.stall_limit:
            return "lockup"
        # A killed thread stuck for ever makes no hang: a wait still going on
        # when its process got a fatal signal is excused.
        if any(wait >= self.stall_limit and self.fatal_at.get(tgid, math.inf) > end
               for tgid, wait, end in self.waits):
            return "hang"
        return "recovered" if self.oom_invocations else "no-oom"

    def cgroups(self) -> dict[str, dict[str, Any]]:
        """Per memory cgroup whose charges stalled: its worst stall, and
        whether it recovered (no stall reached limits.stall)."""
        out = {}
        for name, stalls in self.memcg_stalls.items():
            if stalls:
                worst = max(stalls)
                out[name] = {"max_stall_s": worst,
                             "outcome": "lockup" if worst >= self.stall_limit else "recovered",
                             "recovery_s": _recovery(self.memcg_first_oom.get(name),
                                                     self.memcg_spans[name])}
        return out

    def summary(self) -> dict[str, Any]:
        cgroups = self.cgroups()
        s: dict[str, Any] = {
            "outcome": self.outcome(),
            "oom_invocations": self.oom_invocations,
            "kills": self.kills,
            "killed": self.killed,
            "killed_sharers": self.killed_sharers,
            "first_oom_s": self.first_oom,
            "recovery_s": self.recovery_s(),
            "max_stall_s": self.max_stall,
            "reaped_kb": self.reaped_kb,
            "reap_attempts": self.reap_attempts,
            "reap_failures": self.reap_failures,
            "reaper_dropped": self.reaper_dropped,
            "exit_freed_kb": self.exit_freed_kb,
            "segv": self.segv,
            "victims": [{k: v for k, v in victim.items() if k != "mm"}
                        for victim in self.victims],
            "reaper_busy_s": round(self.reaper_busy, 9),
            "core_dumps": self.core_dumps,
            "core_incomplete": self.core_incomplete,
            "invariant_violations": self.invariant_violations,
            "cgroups": cgroups,
            "cgroups_recovered": sum(c["outcome"] == "recovered" for c in cgroups.values()),
            "cgroups_locked_up": sum(c["outcome"] == "lockup" for c in cgroups.values()),
            "errors": self.errors,
            "end_s": self.end,
        }
        if self.userspace:      # only arms with one: other logs keep their summary
            s["userspace_kills"] = len(self.userspace_killed)
            s["userspace_killed"] = self.userspace_killed
        s["expectations"] = len(self.expect) if self.expect else 0
        s["expect_failed"] = check_expect(self.expect, s) if self.expect else []
        return s


def _recovery(first_oom: float | None, stalls: list[tuple[float, float]]) -> float | None:
    """From first_oom to the first moment after it when none of the stalls
    is still going on; None if that never came."""
    if first_oom is None:
        return None
    covered_until = first_oom
    for since, end in sorted(stalls):
        if since > covered_until:
            break
        covered_until = max(covered_until, end)
    if covered_until == math.inf:
        return None
    return round(covered_until - first_oom, 9)


def check_expect(expect: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """Each expectation that the summary does not meet, as a short sentence."""
    failed = []
    for key, want in expect.items():
        if key == "cgroups":
            for name, cg_want in want.items():
                got = summary["cgroups"].get(name, {"outcome": "recovered", "max_stall_s": 0.0})
                failed += [f"cgroup {name}: {f}" for f in check_expect(cg_want, got)]
            continue
        got = summary.get(key)
        if key == "outcome":
            if got not in want:
                failed.append(f"outcome {got}, expected {' or '.join(want)}")
        elif isinstance(want, dict):                      # { min, max }
            lo, hi = want.get("min"), want.get("max")
            if got is None or (lo is not None and got < lo) or (hi is not None and got > hi):
                failed.append(f"{key} {got}, expected {_range(lo, hi)}")
        elif got != want:
            failed.append(f"{key} {got}, expected {want}")
    return failed


def _range(lo: float | None, hi: float | None) -> str:
    if lo == hi:
        return f"{lo:g}"
    if lo is None:
        return f"at most {hi:g}"
    if hi is None:
        return f"at least {lo:g}"
    return f"{lo:g}..{hi:g}"
