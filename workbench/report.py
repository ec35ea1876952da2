"""The table `workbench run` prints: scenario x arm x seed -> what happened; with
several arms, then one cell per scenario and arm over the seeds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from workbench import explain

COLUMNS = (("scenario", 26), ("arm", 12), ("seed", 5), ("outcome", 10), ("kills", 6),
           ("recovery", 10), ("max stall", 10), ("reaped", 10), ("expect", 6))


class Table:
    def __init__(self, out: TextIO, arms: list[str] | None = None, quiet: bool = False,
                 total: int = 0):
        self.out = out
        self.arms = arms or []                 # the matrix's column order (else as met)
        self.quiet = quiet
        # runs done of total on stderr, on a terminal only
        self.progress = total if not quiet and sys.stderr.isatty() else 0
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.rows = 0
        self.cells: dict[str, dict[str, list[dict[str, Any]]]] = {}   # scenario -> arm -> runs

    def row(self, result: Any) -> None:
        self._clear_progress()
        if self.rows == 0:
            self._line([name for name, _ in COLUMNS])
        self.rows += 1
        s = result.summary
        self.cells.setdefault(result.scenario, {}).setdefault(result.arm, []).append(s)
        failed = s["expect_failed"]
        if s["outcome"] == "error":
            failed = failed + [f"error: {e}" for e in s["errors"]]
            if s["invariant_violations"]:
                failed.append(f"error: {s['invariant_violations']} kernel invariant "
                              "violation(s): see the log's invariant events")
        cells = [result.scenario, result.arm, str(result.seed), s["outcome"], _kills(s),
                 _seconds(s["recovery_s"]), _seconds(s["max_stall_s"]), _kb(s["reaped_kb"]),
                 "FAIL" if failed else ("ok" if s.get("expectations") else "-")]
        self._line(cells)
        if not self.quiet:
            for line in explain.why(self._events(result), s):
                print(f"    why: {line}", file=self.out)
        if self.progress:
            print(f"\r{self.rows}/{self.progress} runs done", end="", file=sys.stderr,
                  flush=True)
        for f in failed:
            self.failures.append(f"{result.scenario} / {result.arm} / seed {result.seed}: {f}")
        for who in s["segv"]:
            self.notes.append(f"{result.scenario} / {result.arm} / seed {result.seed}: SIGSEGV: "
                              f"{who}: a fault past the end of the VMA killed it")

    def end(self, out_dir: Path) -> None:
        self._clear_progress()
        if not self.quiet:
            self._matrix()
        if self.notes:
            print("", file=self.out)
            for n in self.notes:
                print(n, file=self.out)
        if self.failures:
            print(f"\n{len(self.failures)} expectation(s) failed:", file=self.out)
            for f in self.failures:
                print(f"  {f}", file=self.out)
        print(f"\n{self.rows} runs; logs in {out_dir}/", file=self.out)

    @staticmethod
    def _events(result: Any) -> list[dict[str, Any]]:
        """The run's events: a log read back has them; a fresh run's are read
        from its file, only for the rows that need explaining."""
        if result.summary["outcome"] not in ("lockup", "hang"):
            return []
        events = getattr(result, "events", None)
        if events is None and getattr(result, "path", None) is not None:
            from workbench.logs import read_events
            events = read_events(result.path)
        return events or []

    def _matrix(self) -> None:
        """Scenario x arm, each cell the outcomes and kills over the seeds."""
        arms = list(dict.fromkeys(self.arms + [a for by_arm in self.cells.values()
                                               for a in by_arm]))
        if len(arms) < 2:
            return
        title = "by scenario and arm"
        width = max(len(title), *(len(s) for s in self.cells)) + 2
        print(f"\n{title:<{width}}" + "".join(f"{a:<22}" for a in arms).rstrip(),
              file=self.out)
        for scenario in sorted(self.cells):
            by_arm = self.cells[scenario]
            cells = [_cell(by_arm.get(a, [])) for a in arms]
            print(f"{scenario:<{width}}" + "".join(f"{c:<22}" for c in cells).rstrip(),
                  file=self.out)

    def _clear_progress(self) -> None:
        if self.progress:
            print("\r\033[K", end="", file=sys.stderr, flush=True)

    def _line(self, cells: list[str]) -> None:
        if self.quiet:
            return
        print("  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS)).rstrip(), file=self.out,
              flush=True)


def _cell(runs: list[dict[str, Any]]) -> str:
    """"recovered k1", "lockup/recovered k1-3", with FAIL if an expectation failed."""
    if not runs:
        return "-"
    outcomes = "/".join(sorted({r["outcome"] for r in runs}))
    kills = sorted({r["kills"] for r in runs})
    text = f"{outcomes} k{kills[0]}" + (f"-{kills[-1]}" if len(kills) > 1 else "")
    if any("userspace_kills" in r for r in runs):      # an arm with a userspace killer
        user = sorted({r.get("userspace_kills", 0) for r in runs})
        text += f" u{user[0]}" + (f"-{user[-1]}" if len(user) > 1 else "")
    return text + (" FAIL" if any(r["expect_failed"] or r["outcome"] == "error" for r in runs)
                   else "")


def _kills(s: dict[str, Any]) -> str:
    """The OOM kills, and "uN" for a userspace killer's SIGKILLs when the arm has one."""
    if "userspace_kills" in s:
        return f"{s['kills']} u{s['userspace_kills']}"
    return str(s["kills"])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _kb(value: int) -> str:
    for unit, div in (("GiB", 1 << 20), ("MiB", 1 << 10)):
        if value >= div:
            return f"{value / div:.1f}{unit}"
    return f"{value}kB"
