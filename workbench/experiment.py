"""An experiment: its scenarios, its arms (plugin sets) and seeds, resolved.

`load_experiment()` reads the experiment file and every scenario it names,
validates all of them, and raises one ConfigError listing every problem.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workbench import config as C
from workbench.discovery import Plugins
from workbench.interrupt import Interrupt
from workbench.kernel.features import Features
from workbench.log import dumps
from workbench.plugin import policy_raised
from workbench.policy import CONCERNS
from workbench.workload.scenario import resolve_scenario
from workbench.workload.spec import ScenarioSpec


@dataclass(frozen=True)
class ArmSpec:
    name: str
    preset: str
    policies: dict[str, type]          # concern -> policy class
    options: dict[str, BaseModel]      # concern -> validated options
    follow_ups: tuple[str, ...] = ()   # applied, in catalogue order
    features: Features = Features()    # the kernel switches they turn on
    pure_preset: bool = True           # nothing changed from the preset: its expectations hold
    not_applied: tuple[str, ...] = ()  # follow-ups whose options the arm's own policy lacks

    def expect_key(self, expect: dict[str, Any]) -> str | None:
        """Which of a scenario's expect tables this arm answers to: its own
        name, else its preset's when the arm is that preset unchanged."""
        if self.name in expect:
            return self.name
        return self.preset if self.pure_preset and self.preset in expect else None

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
        out: dict[str, Any] = {"name": self.name, "preset": self.preset,
                               "follow_ups": list(self.follow_ups)}
        for c in CONCERNS:
            out[c] = self.policies[c].name
        out["kernel"] = self.features.changed()
        if self.not_applied:
            out["follow_ups_not_applied"] = list(self.not_applied)
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
        _dotted_expect(data, set(arms) | presets, where, prefix, problems)
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


def _dotted_expect(data: Any, names: set[str], where: str, prefix: str,
                   problems: list[str]) -> None:
    """[expect.v4.6] is expect -> v4 -> 6 to TOML: say how to write it."""
    expect = data.get("expect") if isinstance(data, dict) else None
    if not isinstance(expect, dict):
        return
    for key, table in expect.items():
        if key in names or not isinstance(table, dict):
            continue
        for sub in table:
            if f"{key}.{sub}" in names:
                problems.append(f"{where}: {prefix}expect.{key}.{sub}: write "
                                f"[expect.\"{key}.{sub}\"]: TOML splits a bare key at each dot")


def _set_aside(plugins: Plugins) -> str:
    names = [b.name for b in plugins.broken]
    if not names:
        return ""
    return (f"; plugin{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))} could not "
            "be loaded (see the warnings)")


def _resolve_arm(arm: C.Arm, i: int, where: str, plugins: Plugins,
                 problems: list[str]) -> ArmSpec | None:
    """The arm's policies and kernel switches: the preset's base policies,
    its follow-ups with the arm's changes applied in catalogue order (each
    may put a policy in place, set its options and turn kernel switches on),
    then the arm's own policy names and options on top."""
    registry = plugins.registry
    preset = registry.presets.get(arm.preset)
    if preset is None:
        problems.append(f"{where}: arm[{i}].preset: unknown preset {arm.preset!r} "
                        f"(known: {', '.join(sorted(registry.presets))})" + _set_aside(plugins))
        return None
    follow_ups = _follow_ups(arm, i, preset, registry, where, problems)
    if follow_ups is None:
        return None
    chosen = {c: getattr(preset, c) for c in CONCERNS}
    kernel: dict[str, Any] = {}
    for f in follow_ups:
        chosen.update(f.policies)
        kernel.update(f.kernel)
    policies, options, skipped = {}, {}, set()
    for concern in CONCERNS:
        name = getattr(arm, concern) or chosen[concern]
        cls = registry.policies[concern].get(name)
        if cls is None:
            problems.append(f"{where}: arm[{i}].{concern}: unknown {concern} policy {name!r} "
                            f"(known: {', '.join(sorted(registry.policies[concern]))})"
                            + _set_aside(plugins))
            continue
        policies[concern] = cls
        table = _follow_up_options(cls, concern, follow_ups, name != chosen[concern], skipped)
        table.update(getattr(arm.options, concern))
        options[concern] = _policy_options(cls, table, where, problems,
                                           f"arm[{i}].options.{concern}")
    if len(policies) < len(CONCERNS) or None in options.values():
        return None
    pure = not arm.follow_ups and not any(getattr(arm, c) for c in CONCERNS) and not any(
        getattr(arm.options, c) for c in CONCERNS)
    return ArmSpec(arm.name, arm.preset, policies, options,
                   tuple(f.name for f in follow_ups if f.name not in skipped),
                   Features(**kernel), pure, tuple(f.name for f in follow_ups if f.name in skipped))


def _follow_ups(arm: C.Arm, i: int, preset: Any, registry: Any, where: str,
                problems: list[str]) -> list[Any] | None:
    """The preset's follow-ups with the arm's "+name" and "-name" applied, in
    catalogue order."""
    names = list(preset.follow_ups)
    ok = True
    for j, change in enumerate(arm.follow_ups):
        key = f"{where}: arm[{i}].follow_ups[{j}]"
        sign, name = change[:1], change[1:]
        if sign not in ("+", "-"):
            problems.append(f"{key}: expected \"+NAME\" to add a follow-up or \"-NAME\" to "
                            f"remove one, got {change!r}")
            ok = False
        elif name not in registry.follow_ups:
            close = difflib.get_close_matches(name, list(registry.follow_ups), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append(f"{key}: unknown follow-up {name!r} ({hint}`workbench plugins` "
                            "lists them)")
            ok = False
        elif sign == "+" and name in names:
            problems.append(f"{key}: preset {preset.name!r} already has {name!r}")
            ok = False
        elif sign == "-" and name not in names:
            problems.append(f"{key}: preset {preset.name!r} does not have {name!r} (it has: "
                            f"{', '.join(names) or 'none'})")
            ok = False
        elif sign == "+":
            names.append(name)
        else:
            names.remove(name)
    if not ok:
        return None
    order = list(registry.follow_ups)
    return [registry.follow_ups[n] for n in sorted(names, key=order.index)]


def _follow_up_options(cls: type, concern: str, follow_ups: list[Any], replaced: bool,
                       skipped: set[str]) -> dict[str, Any]:
    """The options the follow-ups set for this concern's policy.  A policy
    the arm chose itself owns its concern: options it does not have are
    left out, and the follow-up is recorded as not applied."""
    table: dict[str, Any] = {}
    fields = getattr(cls.Options, "model_fields", {})
    for f in follow_ups:
        for key, value in f.options.get(concern, {}).items():
            if key in fields or not replaced:       # a preset's own policy must take them
                table[key] = value
            else:
                skipped.add(f.name)
    return table


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
