"""Helpers for testing the workbench and third-party policy plugins with pytest.

    from workbench.testing import run_scenario

    def test_my_reaper(tmp_path):
        run = run_scenario(SCENARIO_TOML, tmp_path, arm={"reaper": "my-reaper"},
                           plugins=[my_plugin_module])
        assert run.summary["outcome"] == "recovered"
        assert run.count("reap_attempt") == 1

`Call` is a program step that runs a coroutine inside the simulated kernel as
the thread that reaches it, for tests of kernel functions themselves.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from workbench.experiment import Experiment, experiment_from_data
from workbench.plugin import Plugins, load_plugins
from workbench.runner import RunResult, run_one


@dataclass(frozen=True)
class Call:
    """A step that awaits fn(kernel, task) as the thread running it."""

    fn: Callable[[Any, Any], Awaitable[Any]]

    async def run(self, k: Any, task: Any) -> None:
        await self.fn(k, task)

    def to_json(self) -> dict[str, Any]:
        return {"call": getattr(self.fn, "__name__", "fn")}


@dataclass
class Run:
    """A finished run: its summary and every event of its log."""

    result: RunResult
    events: list[dict[str, Any]]

    @property
    def summary(self) -> dict[str, Any]:
        return self.result.summary

    def of(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """The events of one kind whose fields equal `match`."""
        return [e for e in self.events if e["event"] == event
                and all(e.get(k) == v for k, v in match.items())]

    def count(self, event: str, **match: Any) -> int:
        return len(self.of(event, **match))

    def first(self, event: str, **match: Any) -> dict[str, Any]:
        found = self.of(event, **match)
        assert found, f"no {event} event matching {match}"
        return found[0]


def experiment(scenario: str | dict[str, Any], base: Path, *, preset: str = "patch",
               arm: dict[str, Any] | None = None, seed: int = 1,
               plugins: Plugins | None = None) -> Experiment:
    """An experiment of one scenario (TOML text or a dict) and one arm."""
    data = tomllib.loads(scenario) if isinstance(scenario, str) else scenario
    arm_table = {"name": "arm", "preset": preset, **(arm or {})}
    return experiment_from_data({"scenario": [data], "arm": [arm_table], "seeds": [seed]},
                                base / "experiment.toml", plugins or load_plugins())


def run_scenario(scenario: str | dict[str, Any], tmp_path: Path, *, preset: str = "patch",
                 arm: dict[str, Any] | None = None, seed: int = 1,
                 plugins: Iterable[Any] = (),
                 calls: dict[str, Callable[[Any, Any], Awaitable[Any]]] | None = None) -> Run:
    """Run one scenario under one arm and seed; read its log back.

    `plugins` are extra plugin objects (modules or instances) registered as
    if they came from entry points.  `calls` replaces the program of the
    named threads ("process/thread") with a Call step."""
    loaded = load_plugins(plugins)
    exp = experiment(scenario, tmp_path, preset=preset, arm=arm, seed=seed, plugins=loaded)
    spec = exp.scenarios[0]
    if calls:
        spec = _with_calls(spec, calls)
    result = run_one(spec, exp.arms[0], seed, tmp_path / "runs", loaded.describe())
    with open(result.path, "rb") as f:
        events = [json.loads(line) for line in f]
    return Run(result, events)


def _with_calls(spec: Any, calls: dict[str, Callable]) -> Any:
    processes = []
    for p in spec.processes:
        threads = tuple(replace(t, program=(Call(calls[f"{p.name}/{t.name}"]),))
                        if f"{p.name}/{t.name}" in calls else t for t in p.threads)
        processes.append(replace(p, threads=threads))
    return replace(spec, processes=tuple(processes))
