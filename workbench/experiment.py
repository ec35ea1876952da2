"""An experiment: its scenarios, its arms (plugin sets) and seeds, resolved.

`load_experiment()` reads the experiment file and every scenario it names,
validates all of them, and raises one ConfigError listing every problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workbench import config as C
from workbench.interrupt import Interrupt
from workbench.log import dumps
from workbench.plugin import Plugins, policy_raised
from workbench.policy import CONCERNS
from workbench.workload.scenario import resolve_scenario
from workbench.workload.spec import ScenarioSpec


@dataclass(frozen=True)
class ArmSpec:
    name: str
    preset: str
    policies: dict[str, type]          # concern -> policy class
    options: dict[str, BaseModel]      # concern -> validated options

    def instantiate(self, machine: Any) -> dict[str, Any]:
        """One run's policy objects; a constructor that raises is that policy's error."""
        out = {}
        for c in CONCERNS:
            cls = self.policies[c]
            try:
                out[c] = cls(self.options[c], machine)
            except BaseException as e:
                if Interrupt.genuine(e):
                    raise
                raise policy_raised(cls.name, "__init__", e) from e
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "preset": self.preset}
        for c in CONCERNS:
            out[c] = self.policies[c].name
        out["options"] = {c: self.options[c].model_dump(mode="json") for c in CONCERNS}
        return out


@dataclass(frozen=True)
class Experiment:
    path: Path
    title: str
    seeds: tuple[int, ...]
    scenarios: tuple[ScenarioSpec, ...]
    arms: tuple[ArmSpec, ...]
    out: Path


def load_experiment(path: Path, plugins: Plugins) -> Experiment:
    problems: list[str] = []
    data = C.read_toml(path, problems)
    if data is None:
        raise C.ConfigError(problems)
    return experiment_from_data(data, path, plugins)


def experiment_from_data(data: dict[str, Any], path: Path, plugins: Plugins) -> Experiment:
    """The experiment a parsed file holds; `path` names it in messages and
    anchors its scenario globs."""
    problems: list[str] = []
    exp = C.validate(C.ExperimentFile, data, str(path), problems) or C.ExperimentFile.salvage(data)
    arm_models = [C.validate(C.Arm, a, str(path), problems, prefix=f"arm[{i}]")
                  for i, a in enumerate(exp.arm)]
    arms = tuple(a for a in (_resolve_arm(m, i, str(path), plugins, problems)
                             for i, m in enumerate(arm_models) if m is not None) if a is not None)
    arm_names = [m.name for m in arm_models if m is not None]
    _unique(arm_names, "arm", "name", str(path), problems)
    scenarios = _load_scenarios(path, exp, arm_names, set(plugins.registry.presets), problems)
    _unique([s.name for s in scenarios], "scenarios", "scenario name", str(path), problems)
    for s in scenarios:                 # what the log header will hold must serialise
        try:
            dumps({"scenario": s.to_json(), "expect": s.expect})
        except Exception as e:
            problems.append(f"{s.source}: a value the log cannot hold: {e}")
    _unique([str(seed) for seed in exp.seeds], "seeds", "seed", str(path), problems)
    if not exp.scenarios and not exp.scenario:
        problems.append(f"{path}: scenarios: no scenario to run: expected scenarios = "
                        "[\"GLOB\", ...] naming scenario files, or [[scenario]] tables")
    if problems:
        raise C.ConfigError(problems)
    out = Path(exp.out) if exp.out else Path("runs") / path.stem
    return Experiment(path, exp.title, tuple(exp.seeds), tuple(scenarios), arms, out)


def _load_scenarios(path: Path, exp: C.ExperimentFile, arms: list[str], presets: set[str],
                    problems: list[str]) -> list[ScenarioSpec]:
    out = []
    for i, data in enumerate(exp.scenario):
        out.append((data, str(path), f"scenario[{i}].", path.name))
    for file in C.expand_scenario_globs(path, exp.scenarios, problems):
        data = C.read_toml(file, problems)
        if data is not None:
            out.append((data, str(file), "", os.path.relpath(file, path.parent)))
    specs = []
    for data, where, prefix, source in out:
        model = C.validate(C.Scenario, data, where, problems, prefix=prefix.rstrip("."))
        if model is not None:
            specs.append(resolve_scenario(model, source, where, exp, problems, prefix))
        elif (salvaged := C.Scenario.salvage(data)) is not None:
            # Check what can be checked of the rest; such a scenario never runs.
            model = salvaged.scenario
            resolve_scenario(model, source, where, exp, problems, prefix, salvaged)
        else:
            continue
        for arm in model.expect:
            if arm not in arms and arm not in presets:
                problems.append(f"{where}: {prefix}expect.{arm}: no arm or preset named {arm!r} "
                                f"(arms: {', '.join(arms)})")
    return specs


def _resolve_arm(arm: C.Arm, i: int, where: str, plugins: Plugins,
                 problems: list[str]) -> ArmSpec | None:
    registry = plugins.registry
    preset = registry.presets.get(arm.preset)
    if preset is None:
        problems.append(f"{where}: arm[{i}].preset: unknown preset {arm.preset!r} "
                        f"(known: {', '.join(sorted(registry.presets))})")
        return None
    policies, options = {}, {}
    for concern in CONCERNS:
        name = getattr(arm, concern) or getattr(preset, concern)
        cls = registry.policies[concern].get(name)
        if cls is None:
            problems.append(f"{where}: arm[{i}].{concern}: unknown {concern} policy {name!r} "
                            f"(known: {', '.join(sorted(registry.policies[concern]))})")
            continue
        policies[concern] = cls
        options[concern] = _policy_options(cls, getattr(arm.options, concern), where, problems,
                                           f"arm[{i}].options.{concern}")
    if len(policies) < len(CONCERNS) or None in options.values():
        return None
    return ArmSpec(arm.name, arm.preset, policies, options)


def _policy_options(cls: type, table: dict[str, Any], where: str, problems: list[str],
                    prefix: str) -> BaseModel | None:
    """The policy's Options model validated from its table, and known to
    serialise into the log header: a validator that raises something other
    than ValueError, or options JSON cannot hold, are the policy's mistakes,
    reported at start-up."""
    try:
        options = C.validate(cls.Options, table, where, problems, prefix=prefix)
        if options is not None:
            dumps(options.model_dump(mode="json"))
        return options
    except Exception as e:
        problems.append(f"{where}: {prefix}: policy {cls.name!r} cannot take these options: "
                        f"{type(e).__name__}: {e}")
        return None


def _unique(names: list[str], key: str, what: str, where: str, problems: list[str]) -> None:
    """Names are directories: two that differ only by case would share one on
    a case-insensitive file system."""
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            same = seen[name.lower()]
            twice = "appears twice" if same == name else f"and {same!r} differ only by case"
            problems.append(f"{where}: {key}: {what} {name!r} {twice}")
        seen.setdefault(name.lower(), name)
