"""The registry that plugins fill at start-up, and what a policy class must be to enter it.

Each plugin's workbench_register_policies adds named policy classes, follow-ups
and presets (tox's tox_register_tox_env pattern).  A policy class is checked
when it is added, so that a misspelled hook, a hook of another concern or a
missing one is an error naming the plugin at start-up rather than a
"returned None" in the middle of a run.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable

from pydantic import BaseModel

from workbench import hookspecs
from workbench.kernel.features import Features
from workbench.policy import CONCERNS


class PluginError(Exception):
    """A plugin broke the registration contract (reported at start-up)."""


# The decision hooks of each concern (workbench/hookspecs.py).  A policy
# implements every required one; a reaper (or userspace) policy that answers
# its *_enabled hook with True needs the hooks of a running one too
# (RunPolicies checks that when the kernel boots).
REQUIRED_HOOKS: dict[str, tuple[str, ...]] = {
    "victim": ("workbench_select_bad_process", "workbench_oom_sacrifice_child",
               "workbench_oom_kill_sharer"),
    "reaper": ("workbench_reaper_enabled",),
    "vma_filter": ("workbench_reap_vma",),
    "userspace": ("workbench_userspace_enabled",),
}
RUNNING_REAPER_HOOKS = ("workbench_reaper_queue", "workbench_reaper_next",
                        "workbench_reaper_retry", "workbench_reaper_done")
RUNNING_USERSPACE_HOOKS = ("workbench_userspace_poll",)
OPTIONAL_HOOKS: dict[str, tuple[str, ...]] = {
    "victim": ("workbench_oom_kill_allocating_task",),
    "reaper": RUNNING_REAPER_HOOKS + ("workbench_reaper_delay",),
    "vma_filter": (),
    "userspace": RUNNING_USERSPACE_HOOKS,
}
PLUGIN_HOOKS = ("workbench_register_policies",)   # on the plugin object, not a policy


@functools.cache
def hook_specs() -> dict[str, inspect.Signature]:
    """Every hook the workbench calls, with its arguments."""
    return {name: inspect.signature(fn) for name, fn in vars(hookspecs).items()
            if name.startswith("workbench_") and callable(fn)}


def concern_of(hook: str) -> str | None:
    for concern in CONCERNS:
        if hook in REQUIRED_HOOKS[concern] or hook in OPTIONAL_HOOKS[concern]:
            return concern
    return None


def closest(name: str, known: Iterable[str]) -> str:
    """' (did you mean X?)' for a near miss, else ''."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def is_hookimpl(fn: object) -> bool:
    return getattr(fn, "workbench_impl", None) is not None


def hook_attributes(obj: object) -> dict[str, object]:
    """The workbench_* attributes of a class or plugin object."""
    return {name: getattr(obj, name) for name in dir(obj) if name.startswith("workbench_")}


def check_hook(name: str, fn: object, specs: dict[str, inspect.Signature]) -> str | None:
    """What is wrong with one workbench_* attribute, or None."""
    if name not in specs:
        return f"{name} is not a workbench hook{closest(name, specs)}"
    if not callable(fn):
        return f"{name} is not a function"
    if not is_hookimpl(fn):
        return f"{name} is not marked @hookimpl (workbench.api.hookimpl), so it would never be called"
    try:
        params = [p for p in inspect.signature(fn).parameters.values()]
    except (TypeError, ValueError):
        return None                       # a builtin or C function: pluggy checks it on register
    if params and params[0].name == "self" and inspect.isfunction(fn):
        params = params[1:]
    allowed = list(specs[name].parameters)
    extra = [p.name for p in params if p.name not in allowed]
    if extra:
        return (f"{name} takes {', '.join(map(repr, extra))}, which the workbench does not "
                f"pass (it passes: {', '.join(allowed) or 'nothing'})")
    return None


def policy_problems(cls: type) -> list[str]:
    """Everything that keeps cls from being a policy of its concern."""
    concern, name = getattr(cls, "concern", None), getattr(cls, "name", None)
    if concern not in CONCERNS or not isinstance(name, str) or not name:
        return [f"{cls!r} needs a str `name` and a `concern` in {CONCERNS}"]
    what = f"{concern} policy {name!r}"
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        return [f"{what}: Options must be a pydantic BaseModel class, not {options!r}"]
    specs = hook_specs()
    mine = set(REQUIRED_HOOKS[concern]) | set(OPTIONAL_HOOKS[concern])
    problems = []
    hooks = hook_attributes(cls)
    for hook, fn in sorted(hooks.items()):
        if hook in PLUGIN_HOOKS:
            problems.append(f"{what}: {hook} belongs on the plugin module, not on a policy")
        elif hook in specs and hook not in mine:
            problems.append(f"{what}: {hook} is a hook of concern {concern_of(hook)!r}; a "
                            f"{concern} policy answers {', '.join(sorted(mine))}")
        elif (problem := check_hook(hook, fn, specs)) is not None:
            problems.append(f"{what}: {problem}")
    missing = [h for h in REQUIRED_HOOKS[concern] if h not in hooks]
    if missing:
        problems.append(f"{what}: missing required hook{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(missing)}")
    running = [h for h in RUNNING_REAPER_HOOKS if h in hooks] if concern == "reaper" else []
    if running and len(running) < len(RUNNING_REAPER_HOOKS):
        absent = [h for h in RUNNING_REAPER_HOOKS if h not in hooks]
        problems.append(f"{what}: a reaper that runs needs all of "
                        f"{', '.join(RUNNING_REAPER_HOOKS)}; missing {', '.join(absent)}")
    return problems


def plugin_problems(plugin: object) -> list[str]:
    """A plugin object's hooks: only workbench_register_policies is called on it."""
    specs = hook_specs()
    problems = []
    for hook, fn in sorted(hook_attributes(plugin).items()):
        if not callable(fn) or isinstance(fn, type):
            continue                       # a policy class or a constant named workbench_*
        if hook in specs and hook not in PLUGIN_HOOKS and is_hookimpl(fn):
            problems.append(f"{hook} is a policy hook: it is called on the policy class an arm "
                            "chose, never on a plugin module; put it on a Policy subclass")
        elif hook not in specs or hook in PLUGIN_HOOKS:
            if (problem := check_hook(hook, fn, specs)) is not None:
                problems.append(problem)
    return problems


@dataclass(frozen=True)
class FollowUp:
    """One kernel change after 4.5, as a named unit (docs/history.md): the
    policies it puts in place, the options it sets on them, and the kernel
    switches (workbench/kernel/features.py) it turns on."""

    name: str
    since: str                                   # the first release that has it
    commit: str                                  # commit id or title
    doc: str
    policies: dict[str, str]                     # concern -> policy name
    options: dict[str, dict[str, Any]]           # concern -> option -> value
    kernel: dict[str, Any]                       # Features field -> value
    plugin: str


@dataclass(frozen=True)
class Preset:
    """Base policies plus follow-ups applied in catalogue order."""

    name: str
    victim: str
    reaper: str
    vma_filter: str
    follow_ups: tuple[str, ...]
    doc: str
    plugin: str
    userspace: str = "none"                      # no userspace OOM killer


@dataclass
class PolicyRegistry:
    """Named policies, follow-ups and presets, filled by workbench_register_policies."""

    policies: dict[str, dict[str, type]] = field(
        default_factory=lambda: {c: {} for c in CONCERNS})
    presets: dict[str, Preset] = field(default_factory=dict)
    follow_ups: dict[str, FollowUp] = field(default_factory=dict)   # in catalogue order
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    current_plugin: str = ""

    def add_policy(self, cls: type) -> None:
        """Register a policy class under its concern and name (checked now)."""
        problems = policy_problems(cls)
        if problems:
            raise PluginError("; ".join(problems))
        concern, name = cls.concern, cls.name
        if name in self.policies[concern]:
            raise PluginError(f"{concern} policy {name!r} is already registered by plugin "
                              f"{self.owner[concern, name]!r}")
        self.policies[concern][name] = cls
        self.owner[concern, name] = self.current_plugin

    def add_follow_up(self, name: str, *, since: str, commit: str, doc: str,
                      policies: dict[str, str] | None = None,
                      options: dict[str, dict[str, Any]] | None = None,
                      kernel: dict[str, Any] | None = None) -> None:
        """Register a follow-up; the catalogue keeps registration order,
        which is the order a preset applies them in (later ones win)."""
        where = f"follow-up {name!r}"
        if name in self.follow_ups:
            raise PluginError(f"{where} is already registered by plugin "
                              f"{self.follow_ups[name].plugin!r}")
        policies, options, kernel = dict(policies or {}), dict(options or {}), dict(kernel or {})
        unknown = (set(policies) | set(options)) - set(CONCERNS)
        if unknown:
            raise PluginError(f"{where}: unknown concern {sorted(unknown)[0]!r}")
        bad = set(kernel) - set(Features.names())
        if bad:
            raise PluginError(f"{where}: unknown kernel switch {sorted(bad)[0]!r} "
                              f"(known: {', '.join(Features.names())})")
        self.follow_ups[name] = FollowUp(name, since, commit, doc, policies, options, kernel,
                                         self.current_plugin)

    def add_preset(self, name: str, *, victim: str, reaper: str, vma_filter: str,
                   userspace: str = "none", follow_ups: Iterable[str] = (),
                   doc: str = "") -> None:
        if name in self.presets:
            raise PluginError(f"preset {name!r} is already registered by plugin "
                              f"{self.presets[name].plugin!r}")
        self.presets[name] = Preset(name, victim, reaper, vma_filter, tuple(follow_ups), doc,
                                    self.current_plugin, userspace)

    # -- one plugin at a time: a plugin that fails leaves nothing behind ----------

    def snapshot(self) -> tuple:
        return ({c: dict(p) for c, p in self.policies.items()}, dict(self.presets),
                dict(self.follow_ups), dict(self.owner))

    def restore(self, saved: tuple) -> None:
        self.policies, self.presets, self.follow_ups, self.owner = saved

    def dangling(self) -> dict[str, str]:
        """Plugin -> the first name its follow-ups or presets use that no
        plugin registered; such a plugin is then set aside as a whole."""
        out: dict[str, str] = {}
        for f in self.follow_ups.values():
            for concern, policy in f.policies.items():
                if policy not in self.policies[concern]:
                    out.setdefault(f.plugin, f"follow-up {f.name!r} names unknown {concern} "
                                             f"policy {policy!r}")
        for p in self.presets.values():
            for concern in CONCERNS:
                if getattr(p, concern) not in self.policies[concern]:
                    out.setdefault(p.plugin, f"preset {p.name!r} names unknown {concern} "
                                             f"policy {getattr(p, concern)!r}")
            for name in p.follow_ups:
                if name not in self.follow_ups:
                    out.setdefault(p.plugin, f"preset {p.name!r} names unknown follow-up "
                                             f"{name!r}")
        return out

    def remove_plugin(self, plugin: str) -> None:
        for concern, names in self.policies.items():
            for name in [n for n in names if self.owner[concern, n] == plugin]:
                del names[name], self.owner[concern, name]
        self.presets = {n: p for n, p in self.presets.items() if p.plugin != plugin}
        self.follow_ups = {n: f for n, f in self.follow_ups.items() if f.plugin != plugin}
