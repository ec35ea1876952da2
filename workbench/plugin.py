"""Loading plugins, the named-policy registry, and a run's typed policy facade.

Built-in plugins come through the entry-point group "workbench" exactly like
third-party ones (pyproject.toml).  Each registers named policy classes
through workbench_register_policies (tox's tox_register_tox_env pattern).
A run instantiates the three policies its arm chose and registers them with a
plugin manager of its own, so each decision hook has exactly one answer;
`RunPolicies` is the kernel's typed door to those hooks, and checks every
answer, turning a raise or a wrong type into a PolicyError naming the policy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from workbench import hookspecs
from workbench.policy import ABORT, CONCERNS, ReapWork, Retry, Victim, ZapDetails

PROJECT = "workbench"


class PluginError(Exception):
    """A plugin broke the registration contract (reported at start-up)."""


class PolicyError(Exception):
    """A policy raised or answered wrongly during a run: outcome "error"."""

    def __init__(self, policy: str, hook: str, problem: str):
        super().__init__(f"policy {policy!r} ({hook}): {problem}")
        self.policy = policy
        self.hook = hook
        self.problem = problem


@dataclass(frozen=True)
class Preset:
    name: str
    victim: str
    reaper: str
    vma_filter: str
    doc: str
    plugin: str


@dataclass
class PolicyRegistry:
    """Named policies and presets, filled by workbench_register_policies."""

    policies: dict[str, dict[str, type]] = field(
        default_factory=lambda: {c: {} for c in CONCERNS})
    presets: dict[str, Preset] = field(default_factory=dict)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    current_plugin: str = ""

    def add_policy(self, cls: type) -> None:
        concern, name = getattr(cls, "concern", None), getattr(cls, "name", None)
        if concern not in CONCERNS or not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self.current_plugin!r}: {cls!r} needs a str `name` and "
                              f"a `concern` in {CONCERNS}")
        if name in self.policies[concern]:
            raise PluginError(f"plugin {self.current_plugin!r}: {concern} policy {name!r} is "
                              f"already registered by {self.owner[concern, name]!r}")
        self.policies[concern][name] = cls
        self.owner[concern, name] = self.current_plugin

    def add_preset(self, name: str, *, victim: str, reaper: str, vma_filter: str,
                   doc: str = "") -> None:
        if name in self.presets:
            raise PluginError(f"plugin {self.current_plugin!r}: preset {name!r} is already "
                              f"registered by {self.presets[name].plugin!r}")
        self.presets[name] = Preset(name, victim, reaper, vma_filter, doc, self.current_plugin)

    def check_presets(self) -> None:
        for p in self.presets.values():
            for concern in CONCERNS:
                if getattr(p, concern) not in self.policies[concern]:
                    raise PluginError(f"plugin {p.plugin!r}: preset {p.name!r} names unknown "
                                      f"{concern} policy {getattr(p, concern)!r}")


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    registry: PolicyRegistry

    def describe(self) -> list[dict[str, str]]:
        """The registered plugins in a fixed order, for the log header."""
        dists = {p: d for p, d in self.pm.list_plugin_distinfo()}
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda x: x[0]):
            dist = dists.get(plugin)
            module = getattr(plugin, "__name__", None) or type(plugin).__module__
            out.append({"name": name, "module": module,
                        "dist": f"{dist.project_name} {dist.version}" if dist else ""})
        return out


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(extra: Iterable[Any] = ()) -> Plugins:
    """Load the entry-point plugins (plus `extra` plugin objects, for tests)
    and collect their policies."""
    pm = new_plugin_manager()
    pm.load_setuptools_entrypoints(PROJECT)
    for plugin in extra:       # named by module or class, never by id(): headers stay stable
        pm.register(plugin, name=getattr(plugin, "__name__", type(plugin).__qualname__))
    registry = PolicyRegistry()
    for impl in reversed(pm.hook.workbench_register_policies.get_hookimpls()):
        registry.current_plugin = impl.plugin_name
        impl.function(registry=registry)
    registry.check_presets()
    return Plugins(pm, registry)


@functools.cache
def package_versions() -> dict[str, str]:
    out = {}
    for dist in ("oom-workbench", "trio", "pluggy", "structlog", "orjson", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


class RunPolicies:
    """One run's policies behind typed calls; every answer is checked."""

    def __init__(self, chosen: dict[str, Any]):
        self.names = {c: type(p).name for c, p in chosen.items()}
        self._pm = new_plugin_manager()
        for concern in CONCERNS:
            self._pm.register(chosen[concern], name=f"{concern}:{self.names[concern]}")
        self._hook = self._pm.hook

    def _call(self, concern: str, hook: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._hook, hook)(**kwargs)
        except Exception as e:  # a plugin's bug ends the run, not the workbench
            raise PolicyError(self.names[concern], hook, f"{type(e).__name__}: {e}") from e

    def _wrong(self, concern: str, hook: str, expected: str, got: Any) -> PolicyError:
        return PolicyError(self.names[concern], hook, f"returned {got!r}, expected {expected}")

    # victim selection

    def select_bad_process(self, oc: Any) -> Victim | object | None:
        r = self._call("victim", "workbench_select_bad_process", oc=oc)
        if r is None or r is ABORT or (isinstance(r, Victim) and _eligible(r, oc)):
            return r
        raise self._wrong("victim", "workbench_select_bad_process",
                          "a Victim of a live task in scope, ABORT or None", r)

    def sacrifice_child(self, oc: Any, victim: Victim) -> Victim:
        r = self._call("victim", "workbench_oom_sacrifice_child", oc=oc, victim=victim)
        if isinstance(r, Victim) and _eligible(r, oc):
            return r
        raise self._wrong("victim", "workbench_oom_sacrifice_child", "a Victim", r)

    def kill_sharer(self, oc: Any, victim: Any, process: Any) -> bool:
        r = self._call("victim", "workbench_oom_kill_sharer", oc=oc, victim=victim,
                       process=process)
        if isinstance(r, bool):
            return r
        raise self._wrong("victim", "workbench_oom_kill_sharer", "True or False", r)

    # the OOM reaper

    def reaper_enabled(self) -> bool:
        r = self._call("reaper", "workbench_reaper_enabled")
        if isinstance(r, bool):
            return r
        raise self._wrong("reaper", "workbench_reaper_enabled", "True or False", r)

    def reaper_queue(self, work: ReapWork) -> bool:
        r = self._call("reaper", "workbench_reaper_queue", work=work)
        if isinstance(r, bool):
            return r
        raise self._wrong("reaper", "workbench_reaper_queue", "True or False", r)

    def reaper_next(self) -> ReapWork | None:
        r = self._call("reaper", "workbench_reaper_next")
        if r is None or isinstance(r, ReapWork):
            return r
        raise self._wrong("reaper", "workbench_reaper_next", "a ReapWork or None", r)

    def reaper_retry(self, work: ReapWork, attempt: int) -> Retry:
        r = self._call("reaper", "workbench_reaper_retry", work=work, attempt=attempt)
        if isinstance(r, Retry) and isinstance(r.sleep_ns, int) and r.sleep_ns >= 0:
            return r
        raise self._wrong("reaper", "workbench_reaper_retry", "a Retry with sleep_ns >= 0", r)

    def reaper_done(self, work: ReapWork, reaped: bool) -> None:
        r = self._call("reaper", "workbench_reaper_done", work=work, reaped=reaped)
        if r is not None:
            raise self._wrong("reaper", "workbench_reaper_done", "None", r)

    # the VMA filter

    def reap_vma(self, vma: Any, mm: Any) -> ZapDetails | None:
        r = self._call("vma_filter", "workbench_reap_vma", vma=vma, mm=mm)
        if r is None:
            return None
        if isinstance(r, ZapDetails) and not vma.hugetlb_page:
            return r
        raise self._wrong("vma_filter", "workbench_reap_vma",
                          "ZapDetails or None (hugetlb VMAs cannot be zapped page by page)", r)


def _eligible(victim: Victim, oc: Any) -> bool:
    task = victim.task
    return (isinstance(victim.points, int) and task.mm is not None and oc.in_scope(task)
            and not task.process.kthread and not task.process.init)
