"""The plugin contract: named policies, presets, options, errors."""

from __future__ import annotations

import pytest
from helpers import process, scenario
from pydantic import BaseModel, ConfigDict
from workbench.plugins.victim import Linux45

from workbench.config import ConfigError
from workbench.discovery import load_plugins
from workbench.policy import ABORT, Policy, Retry, Victim, hookimpl
from workbench.testing import experiment

HOG_AND_SLEEPERS = scenario(
    "s",
    process("old", heap="32MiB", resident="32MiB", program=['{ sleep = "1s" }']),
    process("young", heap="8MiB", resident="8MiB", program=['{ sleep = "1s" }']),
    process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }']))


class Youngest(Linux45):
    """Kill the most recently started eligible process (a third party's idea)."""

    name = "youngest"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        spare: list[str] = []

    @hookimpl
    def workbench_select_bad_process(self, oc):
        if any(task.tif_memdie for task in oc.threads()):
            return ABORT
        eligible = [t for t in oc.threads() if t.mm is not None and not self.unkillable(t.process, oc)
                    and t.comm not in self.options.spare]
        return Victim(eligible[-1], 1) if eligible else None


class Broken(Linux45):
    """Raises."""

    name = "broken"

    @hookimpl
    def workbench_select_bad_process(self, oc):
        raise RuntimeError("boom")


class Wrong(Linux45):
    """Answers nonsense."""

    name = "wrong"

    @hookimpl
    def workbench_select_bad_process(self, oc):
        return "the big one"


class ThirdParty:
    @hookimpl
    def workbench_register_policies(self, registry):
        for cls in (Youngest, Broken, Wrong):
            registry.add_policy(cls)
        registry.add_preset("youngest-first", victim="youngest", reaper="seed",
                            vma_filter="seed", doc="kill the newest process")


def test_a_third_party_policy_is_chosen_by_name(run):
    r = run(HOG_AND_SLEEPERS, arm={"victim": "youngest"}, plugins=[ThirdParty()])
    assert r.summary["killed"][0] == "hog"
    assert r.events[0]["config"]["arm"]["victim"] == "youngest"
    assert {"name": "ThirdParty", "module": "tests.test_plugins", "dist": ""} in r.events[0]["plugins"]


def test_a_third_party_preset_and_its_options(run):
    r = run(HOG_AND_SLEEPERS, preset="youngest-first",
            arm={"options": {"victim": {"spare": ["hog"]}}}, plugins=[ThirdParty()])
    assert r.summary["killed"][0] == "young"
    assert r.events[0]["config"]["arm"]["options"]["victim"] == {"spare": ["hog"]}


def test_options_are_validated_by_the_plugin(tmp_path):
    with pytest.raises(ConfigError) as e:
        experiment(HOG_AND_SLEEPERS, tmp_path, preset="youngest-first",
                   arm={"options": {"victim": {"spare": "hog", "colour": 1}}},
                   plugins=load_plugins([ThirdParty()]))
    assert any("arm[0].options.victim.spare: Input should be a valid list" in p
               for p in e.value.problems)
    assert any("arm[0].options.victim.colour: unknown key" in p for p in e.value.problems)


def test_unknown_names_list_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as e:
        experiment(HOG_AND_SLEEPERS, tmp_path, arm={"victim": "oldest", "reaper": "fifo"})
    assert any("arm[0].victim: unknown victim policy 'oldest' (known: largest-rss, linux, linux-4.5, oom_kill_allocating_task)" in p
               for p in e.value.problems)
    assert any("arm[0].reaper: unknown reaper policy 'fifo' (known: backoff, linux, none, seed)" in p
               for p in e.value.problems)


@pytest.mark.parametrize("policy, problem", [
    ("broken", "policy 'broken' (workbench_select_bad_process): RuntimeError: boom"),
    ("wrong", "policy 'wrong' (workbench_select_bad_process): returned 'the big one', "
              "expected a Victim of a live task in scope (points an int from -2**63 to 2**63-1), ABORT or None"),
])
def test_a_policy_that_raises_or_answers_wrongly_ends_the_run_with_error(run, policy, problem):
    r = run(HOG_AND_SLEEPERS, arm={"victim": policy}, plugins=[ThirdParty()])
    assert r.summary["outcome"] == "error" and r.summary["errors"] == [problem]
    error = r.first("error")
    assert error["policy"] == policy and r.events[-1]["event"] == "summary"


def test_duplicate_names_and_dangling_presets_set_the_plugin_aside_naming_it():
    class Twice:
        @hookimpl
        def workbench_register_policies(self, registry):
            registry.add_policy(Youngest)
            registry.add_policy(Linux45)

    plugins = load_plugins([Twice()])
    assert [str(b).split(".<locals>.")[-1] for b in plugins.broken] == [
        "Twice' (object): victim policy 'linux-4.5' is already registered by plugin "
        "'victim'"]
    assert "youngest" not in plugins.registry.policies["victim"]    # nothing half-registered
    assert "patch" in plugins.registry.presets

    class Dangling:
        @hookimpl
        def workbench_register_policies(self, registry):
            registry.add_preset("odd", victim="linux-4.5", reaper="lifo", vma_filter="seed")

    plugins = load_plugins([Dangling()])
    assert [b.error for b in plugins.broken] == ["preset 'odd' names unknown reaper policy 'lifo'"]
    assert "odd" not in plugins.registry.presets


def test_built_ins_come_through_the_entry_point_group():
    plugins = load_plugins()
    names = {p["name"]: p["module"] for p in plugins.describe()}
    assert names == {"presets": "workbench.plugins.presets", "reaper": "workbench.plugins.reaper",
                     "victim": "workbench.plugins.victim",
                     "vma_filter": "workbench.plugins.vma_filter",
                     "userspace": "workbench.plugins.userspace"}
    assert set(plugins.registry.presets) == {"patch", "no-reaper", "v4.6", "modern"}
    patch = plugins.registry.presets["patch"]
    assert (patch.victim, patch.reaper, patch.vma_filter, patch.userspace) == (
        "linux", "none", "linux", "none")
    assert patch.follow_ups == ("oom-reaper",)


def test_policies_subclass_the_documented_base():
    assert issubclass(Linux45, Policy)


# The plugin README.md shows, verbatim.
class Lifo(Policy):
    """A LIFO list of mms: none is dropped."""
    name, concern = "lifo", "reaper"

    def __init__(self, options, machine):
        super().__init__(options, machine)
        self.queue = []

    @hookimpl
    def workbench_reaper_enabled(self): return True
    @hookimpl
    def workbench_reaper_queue(self, work): self.queue.append(work); return True
    @hookimpl
    def workbench_reaper_next(self): return self.queue.pop() if self.queue else None
    @hookimpl
    def workbench_reaper_retry(self, work, attempt): return Retry(100_000_000, attempt < 10)
    @hookimpl
    def workbench_reaper_done(self, work, reaped): pass


class LifoPlugin:
    @hookimpl
    def workbench_register_policies(self, registry):
        registry.add_policy(Lifo)


def test_the_readmes_lifo_reaper_reaps_every_parallel_memcg_victim(tmp_path):
    from pathlib import Path

    from workbench.testing import run_scenario
    s06 = (Path(__file__).parent.parent / "configs/scenarios/s06-parallel-memcg-ooms.toml")
    r = run_scenario(s06.read_text(), tmp_path, arm={"reaper": "lifo"}, plugins=[LifoPlugin()])
    assert r.summary["reaper_dropped"] == 0 and r.summary["reap_attempts"] == 3
    assert r.summary["outcome"] == "recovered" and r.summary["cgroups_recovered"] == 3
    queued = [e["comm"] for e in r.of("reaper_queued")]
    reaped = [e["comm"] for e in r.of("reap_attempt")]
    assert reaped == queued[::-1]             # the three OOMs come before the reaper runs


def test_a_plugin_that_cannot_be_imported_is_named_and_the_others_still_load(monkeypatch,
                                                                           capsys):
    from importlib import metadata

    import workbench.discovery
    from workbench import cli
    real = metadata.entry_points
    broken = metadata.EntryPoint(name="aaa-broken", value="no_such_module_here",
                                 group="workbench")
    monkeypatch.setattr(workbench.discovery.metadata, "entry_points",
                        lambda group: [*real(group=group), broken])
    plugins = load_plugins()
    assert "patch" in plugins.registry.presets
    assert [str(b) for b in plugins.broken] == [
        "plugin 'aaa-broken' (no_such_module_here): cannot be imported: "
        "ModuleNotFoundError: No module named 'no_such_module_here'"]
    assert cli.main(["plugins"]) == 0
    err = capsys.readouterr().err
    assert "warning: plugin 'aaa-broken'" in err and "Traceback" not in err


def test_a_registration_hook_that_raises_is_set_aside_at_start_up_naming_the_plugin():
    class Raises:
        @hookimpl
        def workbench_register_policies(self, registry):
            registry.add_policy(Youngest)
            raise RuntimeError("half-installed")

    plugins = load_plugins([Raises()])
    (broken,) = plugins.broken
    assert str(broken).split(".<locals>.")[-1] == ("Raises' (object): workbench_register_policies raised "
                           "RuntimeError: half-installed")
    assert "half-installed" in broken.traceback and "test_plugins.py" in broken.traceback
    assert "youngest" not in plugins.registry.policies["victim"]
