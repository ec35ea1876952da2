"""Inputs that once hung or crashed a run (review of the first version)."""

from __future__ import annotations

import pytest
from helpers import mmap_writer_victim, process, scenario

from workbench.config import ConfigError
from workbench.runner import Interrupt
from workbench.testing import experiment

HALT_RACE = scenario(
    "halt-race",
    process("filler", heap="250MiB", resident="250MiB", program=['{ sleep = "10s" }'],
            extra="oom_score_adj = -1000"),
    process("b", program=['{ lock = "m" }', '{ sleep = "100ms" }', '{ unlock = "m" }',
                          '{ sleep = "10s" }'], extra="oom_score_adj = -1000"),
    process("p", threads=[("main", ['{ sleep = "50ms" }', '{ exit = 0 }']),
                          ("a", ['{ sleep = "10ms" }', '{ lock = "m" }', '{ unlock = "m" }'])],
            extra="oom_score_adj = -1000"),
    process("c", heap="64MiB", program=['{ alloc = "16MiB", vma = "heap" }'],
            extra='start = "99ms"\noom_score_adj = -1000'),
    time="2s", stall="1s")


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_panic_in_the_same_step_as_waking_a_killed_d_state_waiter_ends_the_run(run, seed):
    r = run(HALT_RACE, seed=seed)
    assert r.summary["outcome"] == "panic"


def test_ctrl_c_ends_a_run_whose_killed_thread_sits_in_d_state(run):
    async def press_ctrl_c(k, task):
        await k.clock.sleep(task, 1_000_000_000, "D")
        Interrupt.requested = True

    s04 = scenario("s04", mmap_writer_victim("5s"), process("keyboard"), time="20s", stall="10s")
    try:
        with pytest.raises(KeyboardInterrupt):
            run(s04, calls={"keyboard/main": press_ctrl_c})
    finally:
        Interrupt.requested = False


def test_init_exiting_panics_as_linux_does(run):
    init = process("systemd", heap="4MiB", program=['{ sleep = "10ms" }'], extra="init = true")
    r = run(scenario("s", init, process("kid", program=['{ sleep = "100ms" }'])))
    assert r.summary["outcome"] == "panic"
    assert r.first("panic")["msg"] == ("Kernel panic - not syncing: Attempted to kill init! "
                                       "exitcode=0x00000000")


def test_processes_may_name_parents_and_mm_owners_listed_after_them(run):
    kid = process("kid", heap="8MiB", resident="8MiB", program=['{ sleep = "1s" }'],
                  extra='parent = "parent"')
    sharer = process("sharer", program=['{ alloc = "1MiB", vma = "heap" }', '{ sleep = "1s" }'],
                     extra='shares_mm_with = "parent"')
    parent = process("parent", heap="128MiB", resident="64MiB", program=['{ sleep = "1s" }'])
    r = run(scenario("s", kid, sharer, parent))
    forks = {e["comm"]: e for e in r.of("fork")}
    assert forks["kid"]["ppid"] == forks["parent"]["pid"]
    assert forks["sharer"]["mm"] == forks["parent"]["mm"]
    assert r.summary["outcome"] == "no-oom" and r.summary["invariant_violations"] == 0


def test_starting_before_the_process_one_needs_is_a_config_error(tmp_path):
    text = scenario("s", process("kid", extra='parent = "late"'),
                    process("late", extra='start = "1s"'))
    with pytest.raises(ConfigError) as e:
        experiment(text, tmp_path)
    assert any("process[0].parent: 'late' starts after 'kid'" in p for p in e.value.problems)


@pytest.mark.parametrize("program, message", [
    ('{ alloc = "1MiB", vma = "heap", gfp = "GFP_NOWAIT" }', "a page fault may sleep"),
    ('{ repeat = "forever", do = [{ free = "1MiB", vma = "heap" }] }', "always takes virtual"),
    ('{ repeat = "forever", do = [{ kalloc = "1MiB", gfp = "GFP_ATOMIC" }] }', "always takes"),
])
def test_programs_that_could_spin_without_time_passing_are_refused(tmp_path, program, message):
    with pytest.raises(ConfigError) as e:
        experiment(scenario("s", process("p", heap="4MiB", program=[program])), tmp_path)
    assert any(message in p for p in e.value.problems), e.value.problems


def test_workload_randomness_is_the_same_in_every_arm(run):
    jittery = process("j", program=['{ sleep = "1ms", jitter = "1s" }'],
                      extra='start = "1ms"\nstart_jitter = "1s"')
    runs = [run(scenario("s", jittery), preset=preset, seed=4) for preset in ("patch", "no-reaper")]
    assert runs[0].first("fork")["t"] == runs[1].first("fork")["t"] > 0.001
    assert runs[0].first("exit")["t"] == runs[1].first("exit")["t"]


def test_a_nofs_fault_over_a_memcg_limit_fails_with_enomem_and_kills_nothing(run):
    fs = process("fs", heap="128MiB", program=['{ alloc = "128MiB", vma = "heap", gfp = "GFP_NOFS" }',
                                              '{ sleep = "5ms" }'], extra='cgroup = "a"')
    r = run(scenario("s", fs, extra='[[cgroup]]\nname = "a"\nmemory_max = "64MiB"'))
    assert r.summary["oom_invocations"] == 0 and r.summary["kills"] == 0
    assert r.count("memcg_charge_fail") == 1 and r.first("exit")["code"] == 0
