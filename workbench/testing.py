"""Testing policy plugins (and the workbench itself) with pytest.

A pytest plugin: put `pytest_plugins = ["workbench.testing"]` in your
top-level conftest.py and use the fixtures

    def test_my_reaper(workbench_run):
        run = workbench_run("s04", arm={"reaper": "my-reaper"})
        assert run.summary["outcome"] == "recovered"
        assert run.count("reap_attempt") == 1

    def test_my_reaper_conforms(workbench_conformance):
        workbench_conformance("reaper", "my-reaper")

A scenario is a library name or its unique beginning ("s04",
"s06-parallel"), a path to
a scenario file, TOML text or a dict.  Installed plugins load as they do for
`workbench run`; `plugins=[...]` adds plugin objects that are not installed.
`run_scenario()` and `assert_conforms()` are the same without fixtures.

`Call` is a program step that runs a coroutine inside the simulated kernel as
the thread that reaches it, for tests of kernel functions themselves.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import pytest

from workbench.discovery import Plugins, load_plugins
from workbench.experiment import Experiment, experiment_from_data
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


LIBRARY = "workbench.library"      # configs/scenarios/, installed as package data


def library() -> dict[str, Any]:
    """The scenario library: file stem -> its file (an importlib.resources
    Traversable: .read_text())."""
    return {f.name[:-5]: f for f in sorted(resources.files(LIBRARY).iterdir(),
                                           key=lambda f: f.name) if f.name.endswith(".toml")}


def scenario_data(scenario: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A scenario given by library name, path, TOML text or dict, parsed."""
    if isinstance(scenario, dict):
        return scenario
    if isinstance(scenario, str) and scenario.endswith(".toml") and "\n" not in scenario:
        scenario = Path(scenario)
    if isinstance(scenario, Path):
        return tomllib.loads(scenario.read_text(encoding="utf-8"))
    if "\n" in scenario or "=" in scenario:
        return tomllib.loads(scenario)
    books = library()                         # read only the one it names
    names = [scenario] if scenario in books else [n for n in books if n.startswith(scenario)]
    if len(names) != 1:
        raise LookupError(f"no library scenario {scenario!r} (known: {', '.join(books)})"
                          if not names else f"{scenario!r} names several: {', '.join(names)}")
    return tomllib.loads(books[names[0]].read_text(encoding="utf-8"))


def experiment(scenario: str | Path | dict[str, Any], base: Path, *, preset: str = "patch",
               arm: dict[str, Any] | None = None, seed: int = 1,
               plugins: Plugins | None = None) -> Experiment:
    """An experiment of one scenario and one arm."""
    arm_table = {"name": "arm", "preset": preset, **(arm or {})}
    return experiment_from_data({"scenario": [scenario_data(scenario)], "arm": [arm_table],
                                 "seeds": [seed]}, base / "experiment.toml",
                                plugins or load_plugins())


def run_scenario(scenario: str | Path | dict[str, Any], tmp_path: Path, *,
                 preset: str = "patch", arm: dict[str, Any] | None = None, seed: int = 1,
                 plugins: Iterable[Any] = (),
                 calls: dict[str, Callable[[Any, Any], Awaitable[Any]]] | None = None) -> Run:
    """Run one scenario under one arm and seed; read its log back.

    `plugins` are extra plugin objects (modules or instances) registered as
    if they came from entry points (one already installed is not registered
    twice).  `calls` replaces the program of the named threads
    ("process/thread") with a Call step."""
    return run_loaded(scenario, tmp_path, load_plugins(plugins), preset=preset, arm=arm,
                      seed=seed, calls=calls)


def run_loaded(scenario: str | Path | dict[str, Any], tmp_path: Path, plugins: Plugins, *,
               preset: str = "patch", arm: dict[str, Any] | None = None, seed: int = 1,
               calls: dict[str, Callable[[Any, Any], Awaitable[Any]]] | None = None) -> Run:
    """run_scenario() with plugins already loaded (many runs, one load)."""
    exp = experiment(scenario, tmp_path, preset=preset, arm=arm, seed=seed, plugins=plugins)
    spec = exp.scenarios[0]
    if calls:
        spec = _with_calls(spec, calls)
    result = run_one(spec, exp.arms[0], seed, tmp_path / "runs", plugins.describe())
    with open(result.path, "rb") as f:
        events = [json.loads(line) for line in f]
    return Run(result, events)


def assert_conforms(concern: str, policy: str, *, plugins: Iterable[Any] = (),
                    options: dict[str, Any] | None = None, **kw: Any) -> None:
    """Fail with every problem workbench.conformance finds in the policy."""
    from workbench.conformance import check
    problems = check(concern, policy, plugins=plugins, options=options, **kw)
    assert not problems, f"{concern} policy {policy!r} does not conform:\n  " + \
        "\n  ".join(problems)


# -- the pytest plugin ----------------------------------------------------------------

@pytest.fixture
def workbench_run(tmp_path: Path) -> Callable[..., Run]:
    """workbench_run(scenario, *, preset, arm, seed, plugins, calls) -> Run,
    each run in a directory of its own under tmp_path."""
    counter = iter(range(1 << 30))

    def run(scenario: str | Path | dict[str, Any], **kw: Any) -> Run:
        d = tmp_path / f"run-{next(counter)}"
        d.mkdir()
        return run_scenario(scenario, d, **kw)
    return run


@pytest.fixture
def workbench_conformance() -> Callable[..., None]:
    """workbench_conformance(concern, policy, *, plugins, options): assert_conforms."""
    return assert_conforms


def _with_calls(spec: Any, calls: dict[str, Callable]) -> Any:
    processes = []
    for p in spec.processes:
        threads = tuple(replace(t, program=(Call(calls[f"{p.name}/{t.name}"]),))
                        if f"{p.name}/{t.name}" in calls else t for t in p.threads)
        processes.append(replace(p, threads=threads))
    return replace(spec, processes=tuple(processes))
