"""The plugin-authoring kit: discovery, registration checks, `plugins --format json`,
workbench.api, workbench.testing's fixtures and conformance checks."""

from __future__ import annotations

import json
import textwrap

import pytest
from workbench.plugins.reaper import Seed as SeedReaper
from workbench.plugins.victim import Linux
from workbench.plugins.vma_filter import Linux as LinuxFilter

from workbench import cli
from workbench.api import ABORT, Policy, Retry, Victim, ZapDetails, hookimpl
from workbench.conformance import check
from workbench.discovery import load_plugins
from workbench.registry import policy_problems

LOCAL_PLUGIN = '''
from workbench.api import Policy, Victim, hookimpl
from workbench.plugins.victim import Linux


class Oldest(Linux):
    """Kill the first eligible process in task-list order."""

    name = "oldest"

    @hookimpl
    def workbench_select_bad_process(self, oc):
        for task in oc.threads():
            if task.mm is not None and not self.unkillable(task.process, oc):
                return Victim(task, 1)
        return None


@hookimpl
def workbench_register_policies(registry):
    registry.add_policy(Oldest)
'''

EXPERIMENT = '''
seeds = [1]
{extra}
[[scenario]]
name = "hog"
[machine]
memory = "256MiB"
[[scenario.process]]
name = "hog"
[[scenario.process.vma]]
name = "heap"
kind = "anon"
size = "1GiB"
[[scenario.process.thread]]
name = "main"
program = [{{ alloc = "1GiB", vma = "heap" }}]
[[arm]]
name = "local"
victim = "oldest"
'''


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_plugins_dir_in_the_config_loads_its_files_and_the_run_names_them(tmp_path, capsys):
    write(tmp_path / "mine" / "oldest.py", LOCAL_PLUGIN)
    write(tmp_path / "mine" / "_helpers.py", "raise RuntimeError('not a plugin')")
    exp = write(tmp_path / "exp.toml", EXPERIMENT.format(extra='plugins_dir = "mine"\n'
                                                         f'out = "{tmp_path / "out"}"'))
    assert cli.main(["run", str(exp)]) == 0, capsys.readouterr().err
    log = (tmp_path / "out" / "hog" / "local" / "seed-1.jsonl").read_text().splitlines()
    header = json.loads(log[0])
    (local,) = [p for p in header["plugins"] if p["name"] == "oldest"]
    assert local["module"] == "workbench_local_plugins.oldest" and local["file"] == "oldest.py"
    assert len(local["sha256"]) == 16
    assert json.loads(log[-1])["outcome"] == "recovered"


def test_plugins_dir_on_the_command_line_and_disable_in_the_config(tmp_path, capsys):
    write(tmp_path / "mine" / "oldest.py", LOCAL_PLUGIN)
    exp = write(tmp_path / "exp.toml", EXPERIMENT.format(extra='disable = ["oldest"]'))
    assert cli.main(["validate", str(exp), "--plugins-dir", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    assert "unknown victim policy 'oldest'" in err
    exp = write(tmp_path / "exp.toml", EXPERIMENT.format(extra=""))
    assert cli.main(["validate", str(exp), "--plugins-dir", str(tmp_path / "mine")]) == 0


@pytest.mark.parametrize("extra, problem", [
    ('plugins_dir = "nowhere"', "plugins_dir: '{tmp}/nowhere' is not a directory"),
    ("plugins_dir = 3", "plugins_dir"),
    ('disable = "oldest"', "disable: Input should be a valid list"),
    ('disable = ["victim"]', "disable: 'victim' is a built-in plugin"),
])
def test_bad_plugin_settings_are_errors_naming_the_file_and_key(tmp_path, capsys, extra, problem):
    exp = write(tmp_path / "exp.toml", EXPERIMENT.format(extra=extra))
    assert cli.main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err
    assert problem.format(tmp=tmp_path) in err and "Traceback" not in err


def test_the_autoload_switch_skips_third_party_entry_points_only(monkeypatch):
    from importlib import metadata

    import workbench.discovery
    real = metadata.entry_points
    extra = metadata.EntryPoint(name="zzz", value="tests.test_plugin_kit", group="workbench")
    monkeypatch.setattr(workbench.discovery.metadata, "entry_points",
                        lambda group: [*real(group=group), extra])
    assert "zzz" in dict(load_plugins().pm.list_name_plugin())
    monkeypatch.setenv("WORKBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = load_plugins()
    assert "zzz" not in dict(plugins.pm.list_name_plugin())
    assert "patch" in plugins.registry.presets


def test_a_broken_local_plugin_is_named_with_its_file_and_the_rest_load(tmp_path, capsys):
    write(tmp_path / "mine" / "broken.py", "import no_such_thing_here\n")
    write(tmp_path / "mine" / "oldest.py", LOCAL_PLUGIN)
    assert cli.main(["plugins", "--plugins-dir", str(tmp_path / "mine")]) == 0
    out, err = capsys.readouterr()
    assert (f"warning: plugin 'broken' (file {tmp_path}/mine/broken.py): cannot be imported: "
            "ModuleNotFoundError: No module named 'no_such_thing_here'") in err
    assert "oldest" in out and "Traceback" not in err


# -- registration checks ------------------------------------------------------------

class Misspelled(Linux):
    """Misspells a hook."""

    name = "misspelled"

    @hookimpl
    def workbench_select_bad_proces(self, oc):
        return ABORT


class OtherConcern(Linux):
    """Answers a reaper hook."""

    name = "other-concern"

    @hookimpl
    def workbench_reaper_next(self):
        return None


class Unmarked(LinuxFilter):
    """Forgot @hookimpl."""

    name = "unmarked"

    def workbench_reap_vma(self, vma, mm):
        return ZapDetails()


class Missing(Policy):
    """Has no hooks."""

    name, concern = "missing", "vma_filter"


class HalfReaper(Policy):
    """A reaper that runs but cannot say what it does after a failed attempt."""

    name, concern = "half", "reaper"

    @hookimpl
    def workbench_reaper_enabled(self):
        return True

    @hookimpl
    def workbench_reaper_queue(self, work):
        return True


class WrongArgs(LinuxFilter):
    """Asks for an argument nobody passes."""

    name = "wrong-args"

    @hookimpl
    def workbench_reap_vma(self, vma, mm, task):
        return None


@pytest.mark.parametrize("cls, problem", [
    (Misspelled, "workbench_select_bad_proces is not a workbench hook (did you mean "
                 "'workbench_select_bad_process'?)"),
    (OtherConcern, "workbench_reaper_next is a hook of concern 'reaper'"),
    (Unmarked, "workbench_reap_vma is not marked @hookimpl"),
    (Missing, "missing required hook workbench_reap_vma"),
    (HalfReaper, "missing workbench_reaper_next, workbench_reaper_retry, workbench_reaper_done"),
    (WrongArgs, "workbench_reap_vma takes 'task', which the workbench does not pass"),
])
def test_a_policy_class_is_checked_when_it_is_registered(cls, problem):
    assert any(problem in p for p in policy_problems(cls)), policy_problems(cls)

    class Registers:
        @hookimpl
        def workbench_register_policies(self, registry):
            registry.add_policy(cls)

    plugins = load_plugins([Registers()])
    (broken,) = plugins.broken
    assert problem in broken.error and cls.name not in plugins.registry.policies[cls.concern]


def test_a_module_level_decision_hook_is_refused():
    import types
    module = types.ModuleType("flat_plugin")
    module.workbench_select_bad_process = hookimpl(lambda oc: ABORT)
    (broken,) = load_plugins([module]).broken
    assert broken.name == "flat_plugin" and "is a policy hook" in broken.error


# -- workbench plugins --format json -------------------------------------------------

def test_plugins_json_lists_policies_with_origin_options_and_presets(capsys):
    assert cli.main(["plugins", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    reaper = {p["name"]: p for p in data["policies"]["reaper"]}
    assert reaper["linux"]["origin"]["kind"] == "built-in"
    attempts = {o["name"]: o for o in reaper["linux"]["options"]}["attempts"]
    assert attempts == {"name": "attempts", "type": "int", "default": 10,
                        "help": "down_read_trylock attempts before giving up"}
    assert {o["name"]: o for o in reaper["linux"]["options"]}["delay"]["default"] == "0ns"
    assert reaper["seed"]["alias_of"] == "linux"
    presets = {p["name"]: p for p in data["presets"]}
    assert presets["patch"]["follow_ups"] == ["oom-reaper"]
    assert data["broken"] == [] and data["follow_ups"][0]["name"] == "oom-reaper"


# -- workbench.testing --------------------------------------------------------------

def test_the_fixture_runs_library_scenarios_by_name(workbench_run):
    r = workbench_run("s01", preset="no-reaper")
    assert r.summary["killed"] == ["hog"] and r.summary["reaped_kb"] == 0


def test_an_installed_plugin_passed_again_is_not_registered_twice(workbench_run):
    import workbench.plugins.reaper as installed
    r = workbench_run("s01", plugins=[installed])
    assert r.summary["outcome"] == "recovered"


def test_the_built_in_policies_conform(workbench_conformance):
    for concern in ("victim", "reaper", "vma_filter"):
        workbench_conformance(concern, "linux")


class Greedy(Linux):
    """Ignores the abort rule and oom_score_adj: always the biggest mm."""

    name = "greedy"

    @hookimpl
    def workbench_select_bad_process(self, oc):
        tasks = [t for t in oc.threads() if t.mm is not None and oc.in_scope(t)
                 and not t.process.kthread and not t.process.init and t.state != "X"]
        if not tasks:
            return None
        return Victim(max(tasks, key=lambda t: t.mm.get_mm_rss()), 1)


class NoAbort(Linux):
    """The 4.5 badness, but never waits for a pending victim."""

    name = "no-abort"

    @hookimpl
    def workbench_select_bad_process(self, oc):
        best, best_points = None, 0
        for task in oc.threads():
            if task.mm is None or task.tif_memdie or self.unkillable(task.process, oc):
                continue
            points = self.badness(task.process, oc)
            if points > best_points:
                best, best_points = task, points
        return Victim(best, best_points) if best else None


class Stubborn(SeedReaper):
    """Never gives up."""

    name = "stubborn"

    @hookimpl
    def workbench_reaper_retry(self, work, attempt):
        return Retry(1_000_000_000, True)


class ZapsShared(LinuxFilter):
    """Zaps shared mappings without saying so."""

    name = "zaps-shared"

    @hookimpl
    def workbench_reap_vma(self, vma, mm):
        return None if vma.hugetlb_page else ZapDetails()


class Breakers:
    @hookimpl
    def workbench_register_policies(self, registry):
        for cls in (Greedy, NoAbort, Stubborn, ZapsShared):
            registry.add_policy(cls)


@pytest.mark.parametrize("concern, policy, problem", [
    ("victim", "greedy", "whose oom_score_adj is -1000"),
    ("victim", "greedy", "the selector must return ABORT"),
    ("victim", "no-abort", "killed 'bystander' while victim 'victim' was pending"),
    ("reaper", "stubborn", "neither reaped nor given up by the end of the run"),
    ("vma_filter", "zaps-shared", "zaps a shared-file VMA"),
])
def test_conformance_finds_what_breaks_the_rules(concern, policy, problem):
    problems = check(concern, policy, plugins=[Breakers()], presets=("patch", "modern"),
                     seeds=(1,))
    assert any(problem in p for p in problems), problems


# -- workbench.api ----------------------------------------------------------------

def _members(protocol):
    return [n for n, v in vars(protocol).items()
            if not n.startswith("_") and (isinstance(v, property) or callable(v))]


def test_the_documented_views_describe_real_kernel_objects(workbench_run):
    import workbench.api as api
    seen = {}

    class Looks(api.LinuxVictim):
        """Records what a selector is handed."""

        name = "looks"

        @api.hookimpl
        def workbench_select_bad_process(self, oc):
            for task in oc.threads():
                if task.mm is not None and task.process.cgroup is not None:
                    seen.update(oc=oc, task=task, process=task.process, mm=task.mm,
                                vma=task.mm.vmas[0], memcg=task.process.cgroup)
            return super().workbench_select_bad_process(oc)

    class Plugin:
        @api.hookimpl
        def workbench_register_policies(self, registry):
            registry.add_policy(Looks)

    workbench_run("s06-parallel", arm={"victim": "looks"}, plugins=[Plugin()])
    views = {"oc": api.OomControlView, "task": api.TaskView, "process": api.ProcessView,
             "mm": api.MmView, "vma": api.VmaView, "memcg": api.MemCgroupView}
    missing = [f"{views[k].__name__}.{m}" for k, obj in seen.items()
               for m in _members(views[k]) if not hasattr(obj, m)]
    assert len(seen) == 6 and not missing
    for protocol in views.values():              # every attribute documented
        assert all(getattr(protocol, m).__doc__ for m in _members(protocol)), protocol


def test_the_readme_names_keep_working():
    import workbench.api as api
    import workbench.policy as policy
    for name in ("Policy", "ReapWork", "Retry", "hookimpl", "Victim", "ABORT", "ZapDetails",
                 "AfterReap"):
        assert getattr(api, name) is getattr(policy, name)
    assert set(api.__all__) <= set(dir(api))


# -- docs/plugins.md ------------------------------------------------------------------

def test_the_plugin_guide_examples_run(workbench_run, workbench_conformance):
    """The guide's policy module and its two tests, as written."""
    import re
    import types
    from pathlib import Path
    text = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    module = types.ModuleType("guide_plugin")
    exec(compile(blocks[0], "docs/plugins.md", "exec"), module.__dict__)
    tests = {}
    exec(compile(blocks[2], "docs/plugins.md", "exec"), tests)
    with_plugin = {"run": lambda s, **kw: workbench_run(s, plugins=[module], **kw),
                   "conform": lambda c, p, **kw: workbench_conformance(c, p, plugins=[module],
                                                                       **kw)}
    tests["test_most_resident_spares_the_named"](with_plugin["run"])
    tests["test_most_resident_conforms"](with_plugin["conform"])


def test_a_plugins_dir_file_that_is_no_module_name_is_set_aside(tmp_path):
    write(tmp_path / "mine" / "my-plugin.py", LOCAL_PLUGIN)
    write(tmp_path / "mine" / "oldest.py", LOCAL_PLUGIN)
    plugins = load_plugins(plugins_dirs=[tmp_path / "mine"])
    (broken,) = plugins.broken
    assert broken.name == "my-plugin" and "not a Python module name" in broken.error
    assert "oldest" in plugins.registry.policies["victim"]


class FewerArgs(LinuxFilter):
    """Takes only the VMA, as pluggy allows."""

    name = "fewer-args"

    @hookimpl
    def workbench_reap_vma(self, vma):
        return None if vma.shared or vma.hugetlb_page else ZapDetails()


def test_conformance_calls_a_hook_with_the_arguments_it_takes():
    class Plugin:
        @hookimpl
        def workbench_register_policies(self, registry):
            registry.add_policy(FewerArgs)

    assert check("vma_filter", "fewer-args", plugins=[Plugin()], presets=("patch",),
                 seeds=(1,)) == []


def test_plugins_lists_a_subclass_with_hooks_of_its_own_with_its_options(capsys):
    assert cli.main(["plugins", "--format", "json"]) == 0
    victims = {p["name"]: p for p in json.loads(capsys.readouterr().out)["policies"]["victim"]}
    assert victims["linux-4.5"]["alias_of"] == "linux"
    assert "alias_of" not in victims["oom_kill_allocating_task"]
