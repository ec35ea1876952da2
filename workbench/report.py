"""The table `workbench run` prints: scenario x arm x seed -> what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

COLUMNS = (("scenario", 26), ("arm", 12), ("seed", 5), ("outcome", 10), ("kills", 6),
           ("recovery", 10), ("max stall", 10), ("reaped", 10), ("expect", 6))


class Table:
    def __init__(self, out: TextIO):
        self.out = out
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.rows = 0

    def row(self, result: Any) -> None:
        if self.rows == 0:
            self._line([name for name, _ in COLUMNS])
        self.rows += 1
        s = result.summary
        failed = s["expect_failed"]
        if s["outcome"] == "error":
            failed = failed + [f"error: {e}" for e in s["errors"]]
            if s["invariant_violations"]:
                failed.append(f"error: {s['invariant_violations']} kernel invariant "
                              "violation(s): see the log's invariant events")
        cells = [result.scenario, result.arm, str(result.seed), s["outcome"], str(s["kills"]),
                 _seconds(s["recovery_s"]), _seconds(s["max_stall_s"]), _kb(s["reaped_kb"]),
                 "FAIL" if failed else "ok"]
        self._line(cells)
        for f in failed:
            self.failures.append(f"{result.scenario} / {result.arm} / seed {result.seed}: {f}")
        for who in s["segv"]:
            self.notes.append(f"{result.scenario} / {result.arm} / seed {result.seed}: SIGSEGV: "
                              f"{who}: a fault past the end of the VMA killed it")

    def end(self, out_dir: Path) -> None:
        if self.notes:
            print("", file=self.out)
            for n in self.notes:
                print(n, file=self.out)
        if self.failures:
            print(f"\n{len(self.failures)} expectation(s) failed:", file=self.out)
            for f in self.failures:
                print(f"  {f}", file=self.out)
        print(f"\n{self.rows} runs; logs in {out_dir}/", file=self.out)

    def _line(self, cells: list[str]) -> None:
        print("  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS)).rstrip(), file=self.out,
              flush=True)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _kb(value: int) -> str:
    for unit, div in (("GiB", 1 << 20), ("MiB", 1 << 10)):
        if value >= div:
            return f"{value / div:.1f}{unit}"
    return f"{value}kB"
