"""`workbench compare`: arms side by side over the seeds, from the logs alone.

Runs from one or more run directories are grouped by scenario and arm.  Runs
of the same scenario and arm whose definitions differ (the scenario's
processes and cgroups, the machine, the limits, the arm's policies and
options) are never mixed: the first definition met is kept and the others
are named.  Each group gets outcome counts, the median and 95th percentile of
`recovery_s` and `max_stall_s`, and means of the other metrics; against the
baseline arm, the difference of the medians of `max_stall_s` with a
bootstrap 95% confidence interval, resampled with a generator seeded by the
scenario and arm names, so that the output is the same every time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from workbench.logs import RunLog

BOOTSTRAP = 2000          # resamples
ENOUGH_SEEDS = 5          # fewer on either side: say that it is too few to tell


@dataclass
class Group:
    scenario: str
    arm: str
    definition: str                 # what runs must share to be compared
    runs: list[RunLog] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r.summary[key] for r in self.runs if r.summary[key] is not None]


def group_runs(runs: list[RunLog]) -> tuple[list[Group], list[str]]:
    """Groups by (scenario, arm) in the order met, and a note for each run
    left out (another definition, or a seed already counted)."""
    groups: dict[tuple[str, str], Group] = {}
    notes: list[str] = []
    for run in runs:
        key = (run.scenario, run.arm)
        definition = _definition(run)
        group = groups.setdefault(key, Group(run.scenario, run.arm, definition))
        if definition != group.definition:
            notes.append(f"{run.path}: {run.scenario} / {run.arm} is defined differently here "
                         f"than in {group.runs[0].path} (scenario, machine, limits or arm): "
                         "not compared with it")
        elif any(r.seed == run.seed for r in group.runs):
            notes.append(f"{run.path}: seed {run.seed} of {run.scenario} / {run.arm} is "
                         f"already counted from {next(r for r in group.runs if r.seed == run.seed).path}")
        else:
            group.runs.append(run)
    return list(groups.values()), notes


def _definition(run: RunLog) -> str:
    config = run.events[0].get("config", {})
    scenario = dict(config.get("scenario", {}))
    for free_text in ("description", "source"):
        scenario.pop(free_text, None)
    arm = dict(config.get("arm", {}))
    arm.pop("name", None)
    return json.dumps({"scenario": scenario, "machine": config.get("machine"),
                       "limits": config.get("limits"), "arm": arm}, sort_keys=True)


def rows(groups: list[Group], baseline: str | None) -> list[dict[str, Any]]:
    """One row per group: the statistics, and the difference to the baseline arm."""
    base = {g.scenario: g for g in groups if g.arm == baseline}
    out = []
    for g in sorted(groups, key=lambda g: g.scenario):
        n = len(g.runs)
        row: dict[str, Any] = {
            "scenario": g.scenario, "arm": g.arm, "runs": n, "outcomes": _outcomes(g),
            "recovery_s_median": _median(g.values("recovery_s")),
            "recovery_s_p95": _p95(g.values("recovery_s")),
            "max_stall_s_median": _median(g.values("max_stall_s")),
            "max_stall_s_p95": _p95(g.values("max_stall_s")),
            "kills_mean": _mean(g.values("kills")),
            "reaped_kb_mean": _mean(g.values("reaped_kb")),
            "reap_failures_mean": _mean(g.values("reap_failures")),
            "reaper_dropped_mean": _mean(g.values("reaper_dropped")),
            "baseline": None, "max_stall_s_diff": None, "ci_low": None, "ci_high": None,
            "note": ""}
        b = base.get(g.scenario)
        if b is not None and b is not g:
            row.update(_versus(g, b))
        out.append(row)
    return out


def _versus(g: Group, b: Group) -> dict[str, Any]:
    mine, theirs = g.values("max_stall_s"), b.values("max_stall_s")
    diff = _median(mine) - _median(theirs)
    rng = random.Random(f"{g.scenario}:{g.arm}:{b.arm}")
    boot = sorted(statistics.median(rng.choices(mine, k=len(mine)))
                  - statistics.median(rng.choices(theirs, k=len(theirs)))
                  for _ in range(BOOTSTRAP))
    note = ""
    if min(len(mine), len(theirs)) < ENOUGH_SEEDS:
        note = (f"too few seeds to tell: {len(mine)} against {len(theirs)} "
                f"(want {ENOUGH_SEEDS} or more each)")
    return {"baseline": b.arm, "max_stall_s_diff": round(diff, 9),
            "ci_low": round(boot[int(0.025 * BOOTSTRAP)], 9),
            "ci_high": round(boot[int(0.975 * BOOTSTRAP) - 1], 9), "note": note}


def _outcomes(g: Group) -> str:
    counts: dict[str, int] = {}
    for r in g.runs:
        counts[r.summary["outcome"]] = counts.get(r.summary["outcome"], 0) + 1
    n = len(g.runs)
    return ", ".join(f"{o} {c}/{n}" for o, c in sorted(counts.items(), key=lambda x: (-x[1], x[0])))


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 9) if values else None


def _p95(values: list[float]) -> float | None:
    """The nearest-rank 95th percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


# -- formats ------------------------------------------------------------------------

COLUMNS = ("scenario", "arm", "runs", "outcomes", "recovery_s_median", "recovery_s_p95",
           "max_stall_s_median", "max_stall_s_p95", "kills_mean", "reaped_kb_mean",
           "reap_failures_mean", "reaper_dropped_mean", "baseline", "max_stall_s_diff",
           "ci_low", "ci_high", "note")
_SHORT = {"scenario": "scenario", "arm": "arm", "runs": "runs", "outcomes": "outcomes",
          "recovery_s_median": "recovery med", "recovery_s_p95": "p95",
          "max_stall_s_median": "max stall med", "max_stall_s_p95": "p95",
          "kills_mean": "kills", "reaped_kb_mean": "reaped kB", "reap_failures_mean": "reap fail",
          "reaper_dropped_mean": "dropped", "max_stall_s_diff": "stall vs baseline",
          "ci_low": "95% CI"}


def render(table: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(table, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in table)
        return buf.getvalue()
    header = [_SHORT[c] for c in COLUMNS if c in _SHORT]
    lines = [[_text(r, c) for c in COLUMNS if c in _SHORT] for r in table]
    notes = [f"{r['scenario']} / {r['arm']}: {r['note']}" for r in table if r["note"]]
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                for line in lines]
        return "\n".join(out + [""] + [f"- {n}" for n in notes]) + "\n"
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
           for row in [header] + lines]
    return "\n".join(out + ([""] + notes if notes else [])) + "\n"


def _text(row: dict[str, Any], column: str) -> str:
    if column == "ci_low":
        if row["ci_low"] is None:
            return "-"
        return f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    value = row[column]
    if value is None:
        return "-"
    if column == "max_stall_s_diff":
        return f"{value:+.3f}s vs {row['baseline']}"
    if column.endswith(("_median", "_p95")):
        return f"{value:.3f}s"
    return str(value)
