"""Loading run directories for analysis: runs, and data frames when pandas or
polars is installed (`pip install 'oom-workbench[analysis]'`).

    from workbench.analysis import runs, summaries, events

    for run in runs("runs/history"):          # header, events, summary of each log
        print(run.scenario, run.arm, run.seed, run.summary["outcome"])
    df = summaries("runs/history")            # one row per run (pandas)
    kills = events("runs/history", "kill", library="polars")

Rows carry `experiment` (the run directory's name), `scenario`, `arm` and `seed`, then
the fields as docs/metrics.md and docs/events.md define them.  A log that cannot
be read raises LogError naming it; `runs(..., strict=False)` skips it instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from workbench.logs import RunLog, read_run_dir


class LogError(Exception):
    """A run directory, or a log in it, cannot be read."""


def runs(run_dir: str | Path, strict: bool = True) -> Iterator[RunLog]:
    """Each readable run of run_dir, in (scenario, arm, seed) order."""
    found, problems = read_run_dir(Path(run_dir))
    if problems and strict:
        raise LogError("; ".join(problems))
    yield from found


def summary_rows(run_dir: str | Path, strict: bool = True) -> list[dict[str, Any]]:
    """One dict per run: identity, then every summary field (nested ones as JSON text)."""
    name = Path(run_dir).resolve().name
    return [{"experiment": name, "scenario": r.scenario, "arm": r.arm, "seed": r.seed,
             **{k: _flat(v) for k, v in r.summary.items()}} for r in runs(run_dir, strict)]


def event_rows(run_dir: str | Path, event: str | None = None,
               strict: bool = True) -> list[dict[str, Any]]:
    """One dict per event (of one kind, or all but the header), with the run's identity."""
    name = Path(run_dir).resolve().name
    out = []
    for r in runs(run_dir, strict):
        for e in r.events:
            if e["event"] == "header" or (event is not None and e["event"] != event):
                continue
            out.append({"experiment": name, **{k: _flat(v) for k, v in e.items()}})
    return out


def summaries(run_dir: str | Path, library: str = "pandas", strict: bool = True) -> Any:
    return _frame(summary_rows(run_dir, strict), library)


def events(run_dir: str | Path, event: str | None = None, library: str = "pandas",
           strict: bool = True) -> Any:
    return _frame(event_rows(run_dir, event, strict), library)


def _flat(value: Any) -> Any:
    """Lists and tables as JSON text, so that every column is of one type."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _frame(rows: list[dict[str, Any]], library: str) -> Any:
    if library == "pandas":
        pandas = _need("pandas")
        return pandas.DataFrame.from_records(rows)
    if library == "polars":
        polars = _need("polars")
        columns = list(dict.fromkeys(k for row in rows for k in row))
        return polars.DataFrame([{c: row.get(c) for c in columns} for row in rows],
                                infer_schema_length=None)
    raise ValueError(f"library: expected 'pandas' or 'polars', got {library!r}")


def _need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{module} is not installed: pip install 'oom-workbench[analysis]' "
                          f"(or pip install {module})") from None
