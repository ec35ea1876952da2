"""A faulty policy fails only its own arm's runs, named, or is refused at start-up.

Each policy here breaks the plugin contract in one way; `workbench run`
runs it beside the `patch` arm, and the patch arm's runs must all finish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import json

import pytest
from helpers import mmap_writer_victim, scenario
from pydantic import BaseModel, ConfigDict, field_validator
from workbench.plugins.reaper import Seed as SeedSlot
from workbench.plugins.victim import Linux45

import workbench.discovery
from workbench import cli
from workbench.policy import Retry, Victim, hookimpl

# The victim's mmap_sem is held for write for a while: the reaper must retry.
# A small steps_per_instant keeps the spinning reaper's log short.
SCENARIO = scenario("hog", mmap_writer_victim("300ms"), time="2s").replace(
    "[limits]\n", "[limits]\nsteps_per_instant = 2000\n")


def victim(name: str, select=None, **attrs: Any) -> type:
    body = dict(attrs, name=name, __doc__=f"Faulty: {name}.")
    if select is not None:
        body["workbench_select_bad_process"] = hookimpl(select)
    return type(name.title().replace("-", ""), (Linux45,), body)


def reaper(name: str, retry) -> type:
    return type(name.title().replace("-", ""), (SeedSlot,),
                {"name": name, "__doc__": f"Faulty: {name}.",
                 "workbench_reaper_retry": hookimpl(retry)})


def raising(exc: BaseException):
    def hook(self, oc):
        raise exc
    return hook


def answering(make):
    def hook(self, oc):
        return make(oc)
    return hook


def first_task(oc):
    return next(t for t in oc.threads() if t.comm == "victim")


class InitRaises(Linux45):
    """Faulty: its constructor raises."""

    name = "init-raises"

    def __init__(self, options, machine):
        raise RuntimeError("no constructor today")


class FakeVictim:
    def __init__(self, task):
        self.task, self.points = task, 1


def points_read_by(get) -> property:
    """Victim.points computed by get on every read (the dataclass's own
    assignment in __init__ is dropped)."""
    return property(get, lambda self, value: None)


def _raise(self):
    raise RuntimeError("ask me later")


def _fickle(self):
    reads = self.__dict__["reads"] = self.__dict__.get("reads", 0) + 1
    return 1 if reads == 1 else 10**30


class LyingVictim(Victim):
    points = points_read_by(_raise)


class MuteReaper(SeedSlot):
    """Faulty: never sleeps between attempts and never gives up."""

    name = "spin"

    @hookimpl
    def workbench_reaper_retry(self, work, attempt):
        return Retry(0, True)


RUN_FAULTS = {
    "init-raises": (InitRaises, "__init__", "RuntimeError: no constructor today"),
    "system-exit": (victim("system-exit", raising(SystemExit(3))), "workbench_select_bad_process",
                    "SystemExit: 3"),
    "keyboard": (victim("keyboard", raising(KeyboardInterrupt())), "workbench_select_bad_process",
                 "KeyboardInterrupt"),
    "generator-exit": (victim("generator-exit", raising(GeneratorExit())),
                       "workbench_select_bad_process", "GeneratorExit"),
    "huge-points": (victim("huge-points", answering(lambda oc: Victim(first_task(oc), 10**400))),
                    "workbench_select_bad_process", "points an int from -2**63"),
    "negative": (victim("negative", answering(lambda oc: Victim(first_task(oc), -2**63 - 1))),
                 "workbench_select_bad_process", "points an int from -2**63"),
    "bool-points": (victim("bool-points", answering(lambda oc: Victim(first_task(oc), True))),
                    "workbench_select_bad_process", "points an int from -2**63"),
    "fake-victim": (victim("fake-victim", answering(lambda oc: FakeVictim(first_task(oc)))),
                    "workbench_select_bad_process", "expected a Victim"),
    "fake-task": (victim("fake-task", answering(lambda oc: Victim(object(), 1))),
                  "workbench_select_bad_process", "expected a Victim"),
    "lying-victim": (victim("lying-victim",
                            answering(lambda oc: LyingVictim(first_task(oc), 1))),
                     "workbench_select_bad_process", "expected a Victim"),
    "spin": (MuteReaper, "workbench_reaper_retry", "step limit"),
    "sleep-true": (reaper("sleep-true", lambda self, work, attempt: Retry(True, False)),
                   "workbench_reaper_retry", "an int sleep_ns"),
    "again-no": (reaper("again-no", lambda self, work, attempt: Retry(1000, "no")),
                 "workbench_reaper_retry", "a bool again"),
}


class Registers:
    def __init__(self, *classes: type):
        self.classes = classes

    @hookimpl
    def workbench_register_policies(self, registry):
        for cls in self.classes:
            registry.add_policy(cls)


@pytest.fixture
def with_plugins(monkeypatch):
    """workbench.cli loading the built-ins plus these policies."""
    real = workbench.discovery.load_plugins

    def install(*classes: type) -> None:
        monkeypatch.setattr(workbench.discovery, "load_plugins",
                            lambda extra=(), **kw: real([Registers(*classes), *extra], **kw))
    return install


def experiment(tmp_path, concern: str, policy: str, options: str = "") -> str:
    (tmp_path / "hog.toml").write_text(SCENARIO)
    (tmp_path / "exp.toml").write_text(
        f'seeds = [1, 2]\nscenarios = ["hog.toml"]\nout = "{tmp_path / "out"}"\n'
        f'[[arm]]\nname = "patch"\n[[arm]]\nname = "faulty"\n{concern} = "{policy}"\n{options}')
    return str(tmp_path / "exp.toml")


def summaries(tmp_path, arm: str) -> list[dict]:
    import json
    return [json.loads(p.read_bytes().splitlines()[-1])
            for p in sorted((tmp_path / "out" / "hog" / arm).glob("seed-*.jsonl"))]


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("fault", sorted(RUN_FAULTS))
def test_a_faulty_policy_fails_only_its_own_runs_and_is_named(tmp_path, capsys, with_plugins,
                                                              fault, jobs):
    cls, hook, problem = RUN_FAULTS[fault]
    with_plugins(cls)
    rc = cli.main(["run", experiment(tmp_path, cls.concern, cls.name), "--jobs", jobs])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert [s["outcome"] for s in summaries(tmp_path, "patch")] == ["recovered", "recovered"]
    bad = summaries(tmp_path, "faulty")
    assert [s["outcome"] for s in bad] == ["error", "error"]
    for s in bad:
        assert s["errors"][0].startswith(f"policy {cls.name!r} ({hook}): ")
        assert problem in s["errors"][0]
    assert f"error: policy {cls.name!r}" in out


def test_a_raising_policy_leaves_its_traceback_in_the_log(tmp_path, capsys, with_plugins):
    with_plugins(RUN_FAULTS["system-exit"][0])
    cli.main(["run", experiment(tmp_path, "victim", "system-exit"), "--seed", "1"])
    import json
    events = [json.loads(line) for line in
              (tmp_path / "out" / "hog" / "faulty" / "seed-1.jsonl").read_bytes().splitlines()]
    error = next(e for e in events if e["event"] == "error")
    assert error["traceback"].startswith("Traceback (most recent call last):")
    assert "tests/test_faulty_policies.py" in error["traceback"] and str(tmp_path) not in \
        error["traceback"]


class TypeErrorOptions(SeedSlot):
    """Faulty: its options validator raises TypeError."""

    name = "typeerror-options"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        attempts: int = 10

        @field_validator("attempts")
        @classmethod
        def _check(cls, v):
            raise TypeError("attempts must be a Fraction")


class OpaqueOptions(SeedSlot):
    """Faulty: an option the log cannot hold."""

    name = "opaque-options"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        thing: Any = object()


@pytest.mark.parametrize("cls, problem", [
    (TypeErrorOptions, "TypeError: attempts must be a Fraction"),
    (OpaqueOptions, "cannot take these options"),
])
def test_policy_options_that_break_are_refused_at_start_up(tmp_path, capsys, with_plugins, cls,
                                                           problem):
    with_plugins(cls)
    rc = cli.main(["run", experiment(tmp_path, "reaper", cls.name,
                                     "[arm.options.reaper]\nattempts = 3\n"
                                     if cls is TypeErrorOptions else "")])
    _, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in err
    assert f"arm[1].options.reaper: policy {cls.name!r} cannot take these options" in err
    assert problem in err
    assert not (tmp_path / "out" / "hog").exists()


def test_a_policy_class_that_cannot_be_pickled_runs_in_the_parent_with_the_same_logs(
        tmp_path, capsys, with_plugins):
    def make_local() -> type:
        class Local(Linux45):
            """Defined inside a function: pickle cannot name it."""

            name = "local"
        return Local

    with_plugins(make_local())
    config = experiment(tmp_path, "victim", "local")
    assert cli.main(["run", config, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    assert cli.main(["run", config, "--jobs", "1", "--out", str(tmp_path / "one")]) == 0
    logs = sorted((tmp_path / "one").rglob("*.jsonl"))
    assert len(logs) == 4
    for path in logs:
        assert path.read_bytes() == (tmp_path / "two" / path.relative_to(tmp_path / "one")
                                     ).read_bytes()


class Fickle(Victim):
    """Reads as a sane Victim once, then as something else."""

    points = points_read_by(_fickle)


class Mutating(SeedSlot):
    """Faulty: swaps the mm of the work it was handed."""

    name = "mutating"

    @hookimpl
    def workbench_reaper_queue(self, work):
        work.mm = None
        return True


def test_an_answer_is_read_once_so_it_cannot_change_after_the_check(tmp_path, capsys,
                                                                   with_plugins):
    with_plugins(victim("fickle", answering(lambda oc: Fickle(first_task(oc), 1))))
    rc = cli.main(["run", experiment(tmp_path, "victim", "fickle"), "--seed", "1"])
    assert rc == 0, capsys.readouterr().out
    assert summaries(tmp_path, "faulty")[0]["killed"] == ["victim"]


def test_a_policy_cannot_change_the_work_the_kernel_pinned(tmp_path, capsys, with_plugins):
    with_plugins(Mutating)
    assert cli.main(["run", experiment(tmp_path, "reaper", "mutating"), "--seed", "1"]) == 1
    bad = summaries(tmp_path, "faulty")[0]
    assert bad["invariant_violations"] == 0
    assert bad["errors"][0].startswith("policy 'mutating' (workbench_reaper_queue): "
                                       "FrozenInstanceError")


def test_errors_hold_no_memory_addresses_so_logs_stay_identical(tmp_path, capsys, with_plugins):
    with_plugins(victim("opaque", answering(lambda oc: object())))
    config = experiment(tmp_path, "victim", "opaque")
    for out in ("a", "b"):
        cli.main(["run", config, "--seed", "1", "--out", str(tmp_path / out)])
    log = Path("hog") / "faulty" / "seed-1.jsonl"
    assert (tmp_path / "a" / log).read_bytes() == (tmp_path / "b" / log).read_bytes()
    assert b"0x" not in (tmp_path / "a" / log).read_bytes()


def _never_returns(self, oc):
    while True:
        pass


def _swallows_everything(self, oc):
    while True:
        try:
            for _ in oc.threads():
                pass
        except Exception:
            pass


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("select, problem", [
    (_never_returns, "WallClockLimit: the run took more than 1 s of wall-clock time"),
    (_swallows_everything, "step limit"),
])
def test_a_policy_that_never_returns_fails_its_own_runs(tmp_path, capsys, with_plugins,
                                                        select, problem, jobs):
    cls = victim("forever", select)
    with_plugins(cls)
    rc = cli.main(["run", experiment(tmp_path, "victim", "forever"), "--jobs", jobs,
                   "--run-timeout", "1"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert [s["outcome"] for s in summaries(tmp_path, "patch")] == ["recovered", "recovered"]
    bad = summaries(tmp_path, "faulty")
    assert [s["outcome"] for s in bad] == ["error", "error"]
    assert all(problem in s["errors"][0] and "policy 'forever'" in s["errors"][0] for s in bad)


def _exits_the_process(self, oc):
    import os
    os._exit(4)


def _spins_and_catches_everything(self, oc):
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("select, problem", [
    (_exits_the_process, "policy 'forever' (workbench_select_bad_process): ProcessExit: "
                         "os._exit(4) called during a run"),
    (_spins_and_catches_everything, "its worker process was killed; a policy of arm 'faulty' "
                                    "(victim=forever"),
])
def test_a_policy_that_exits_or_will_not_be_stopped_fails_only_its_runs(
        tmp_path, capsys, with_plugins, select, problem, jobs):
    with_plugins(victim("forever", select))
    rc = cli.main(["run", experiment(tmp_path, "victim", "forever"), "--jobs", jobs,
                   "--run-timeout", "1"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert [s["outcome"] for s in summaries(tmp_path, "patch")] == ["recovered", "recovered"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    bad = [r for r in manifest["runs"] if r["arm"] == "faulty"]
    assert len(bad) == 2 and all(r["outcome"] == "error" for r in bad), bad
    assert problem in out, out
