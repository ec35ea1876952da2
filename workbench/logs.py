"""Reading a run directory's event logs back: `workbench report` and `workbench dmesg`.

A run directory is what `workbench run` wrote to `out`: one
`<scenario>/<arm>/seed-<n>.jsonl` per run.  Reading never re-simulates: a log is
read line by line, and one that is unfinished (still `.jsonl.tmp`), cut short
(no `summary` line) or not JSON is named, and the others are still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import orjson

from workbench.metrics import Metrics


@dataclass(frozen=True)
class RunLog:
    """One run's log, read back."""

    path: Path
    scenario: str
    arm: str
    seed: int
    events: list[dict[str, Any]]

    @cached_property
    def summary(self) -> dict[str, Any]:
        """The summary recomputed from the events (docs/metrics.md)."""
        metrics = Metrics()
        for e in self.events:
            if e["event"] != "summary":
                metrics.feed(e)
        return metrics.summary()


def read_run_dir(run_dir: Path) -> tuple[list[RunLog], list[str]]:
    """Every log under run_dir in (scenario, arm, seed) order, and a problem
    line for each that cannot be read."""
    problems: list[str] = []
    if not run_dir.is_dir():
        return [], [f"{run_dir}: not a directory of run logs"]
    runs = []
    for path in _log_files(run_dir):
        if path.name.endswith(".tmp"):
            problems.append(f"{path}: unfinished: the run did not end (interrupted or still "
                            "running)")
            continue
        run, problem = _read(path)
        if problem:
            problems.append(f"{path}: {problem}")
        else:
            runs.append(run)
    if not runs and not problems:
        problems.append(f"{run_dir}: no run logs (<scenario>/<arm>/seed-<n>.jsonl) in it")
    runs.sort(key=lambda r: (r.scenario, r.arm, r.seed))
    return runs, problems


def _log_files(run_dir: Path) -> Iterator[Path]:
    for pattern in ("*/*/seed-*.jsonl", "*/*/seed-*.jsonl.tmp"):
        yield from sorted(p for p in run_dir.glob(pattern) if p.is_file())


def _read(path: Path) -> tuple[RunLog | None, str | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    events = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None, f"line {n} is not JSON: the log is damaged or cut short"
        if not isinstance(event, dict) or "event" not in event or "t" not in event:
            return None, f"line {n} is not an event of the workbench's log"
        events.append(event)
    if not events or events[0]["event"] != "header":
        return None, "no header line: not a run log"
    if events[-1]["event"] != "summary":
        return None, "no summary line at the end: the log is cut short"
    first = events[0]
    try:
        return RunLog(path, str(first["scenario"]), str(first["arm"]), int(first["seed"]),
                      events), None
    except (KeyError, TypeError, ValueError):
        return None, "its header names no scenario, arm and seed"


def read_events(path: Path) -> list[dict[str, Any]] | None:
    """A finished log's events, or None if it cannot be read."""
    run, _ = _read(path)
    return run.events if run is not None else None


def kernel_log(run: RunLog) -> Iterator[str]:
    """The run as dmesg shows it: each line the modelled kernel printed, with
    printk's "[%5lu.%06lu] " timestamp of virtual time."""
    for e in run.events:
        msg = e.get("msg")
        if msg is None:
            continue
        usec = round(e["t"] * 1_000_000_000) // 1000
        yield f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {msg}"
