"""The example plugin's policies, tested as any plugin's would be: through
workbench.testing's fixtures with the plugin installed (its entry point), so
the runs load it exactly as `workbench run` does."""

from __future__ import annotations

import pytest

# Two processes of nearly the same size: the kernel kills the bigger, earlyoom
# with a preference for the smaller kills that one.  The allocation is kernel
# memory (kalloc) from a process with no mm, so it is never a candidate.
TWINS = """
name = "twins"
[machine]
memory = "1GiB"
[limits]
time = "5s"
[[process]]
name = "victim-a"
[[process.vma]]
name = "heap"
kind = "anon"
size = "400MiB"
resident = "400MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "10s" }]
[[process]]
name = "victim-b"
[[process.vma]]
name = "heap"
kind = "anon"
size = "350MiB"
resident = "350MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "10s" }]
[[process]]
name = "kalloc"
[[process.thread]]
name = "main"
program = [{ sleep = "1ms" }, { kalloc = "300MiB" }]
"""

# The victim sleeps in D on a mutex whose holder allocates kernel memory; when
# the reaper has freed the victim's memory the holder still needs more.  The
# victim keeps TIF_MEMDIE on the seed's kernel, so 4.5's rule aborts every
# later OOM (the lockup 4.6 fixed); a selector without the rule would kill the
# bystander, which by then has the highest badness.
PENDING = """
name = "pending-victim"
[machine]
memory = "1GiB"
[limits]
time = "3s"
stall = "2s"
[[process]]
name = "holder"
[[process.thread]]
name = "main"
program = [{ lock = "i_mutex" }, { sleep = "100ms" }, { kalloc = "900MiB" },
           { unlock = "i_mutex" }]
[[process]]
name = "victim"
[[process.vma]]
name = "heap"
kind = "anon"
size = "600MiB"
resident = "600MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "10ms" }, { lock = "i_mutex" }, { unlock = "i_mutex" }]
[[process]]
name = "bystander"
[[process.vma]]
name = "heap"
kind = "anon"
size = "200MiB"
resident = "200MiB"
[[process.thread]]
name = "main"
program = [{ sleep = "10s" }]
"""

EARLYOOM = {"victim": "earlyoom-names", "reaper": "fifo"}


def test_the_installed_plugin_is_named_in_the_run_header(workbench_run):
    run = workbench_run(TWINS, arm=EARLYOOM)
    (plugin,) = [p for p in run.events[0]["plugins"] if p["name"] == "earlyoom"]
    assert plugin["module"] == "workbench_earlyoom"
    assert plugin["dist"] == "workbench-earlyoom-policies 0.1.0"
    assert run.summary["outcome"] != "error", run.summary


def test_fifo_conforms(workbench_conformance):
    workbench_conformance("reaper", "fifo")
    workbench_conformance("reaper", "fifo", options={"attempts": 3, "sleep": "2jiffies",
                                                     "after_reap": "oom_skip"})


def test_earlyoom_names_conforms(workbench_conformance):
    workbench_conformance("victim", "earlyoom-names")
    # a preference must not override the kernel's rules (OOM_SCORE_ADJ_MIN, init,
    # kthreads, memcg scope, the abort rule)
    workbench_conformance("victim", "earlyoom-names",
                          options={"prefer": "^(init|kworker|protected|giant)$"})


def test_the_kernel_kills_the_bigger_twin(workbench_run):
    run = workbench_run(TWINS, arm={"victim": "linux"})
    assert run.summary["killed"] == ["victim-a"]


def test_a_preferred_name_outweighs_a_smaller_badness(workbench_run):
    run = workbench_run(TWINS, arm={**EARLYOOM, "options": {"victim": {"prefer": "^victim-b$"}}})
    assert run.summary["killed"] == ["victim-b"]
    assert run.summary["outcome"] == "recovered"


def test_an_avoided_name_is_passed_over(workbench_run):
    run = workbench_run(TWINS, arm={**EARLYOOM, "options": {"victim": {"avoid": "-a$"}}})
    assert run.summary["killed"] == ["victim-b"]


def test_without_patterns_it_is_the_kernels_choice(workbench_run):
    run = workbench_run(TWINS, arm=EARLYOOM)
    assert run.summary["killed"] == ["victim-a"]


def test_an_ignored_name_is_never_chosen(workbench_run):
    # The allocator's own (empty) mm scores 1, as oom_badness() gives it: with
    # both twins ignored it is the only candidate left.
    run = workbench_run(TWINS, arm={**EARLYOOM, "options": {"victim": {"ignore": "victim-"}}})
    assert run.summary["killed"] == ["kalloc"]


@pytest.mark.parametrize("preset, killed, outcome", [
    ("patch", ["victim"], "lockup"),                    # TIF_MEMDIE stays: abort, abort...
    ("v4.6", ["victim", "bystander"], "recovered"),     # a reap clears it: the next kill
])
def test_a_pending_victim_aborts_the_scan_as_the_era_did(workbench_run, preset, killed,
                                                         outcome):
    for arm in ({"victim": "linux"}, EARLYOOM):
        run = workbench_run(PENDING, preset=preset, arm=arm)
        assert (run.summary["killed"], run.summary["outcome"]) == (killed, outcome), arm


def test_the_presets_follow_ups_set_the_options_of_the_same_name(workbench_run):
    # v4.6's "clear-tif-memdie-after-reap" sets the reaper's after_reap, which
    # fifo has under the built-in reaper's name; its LIFO queue does not apply.
    run = workbench_run(PENDING, preset="v4.6", arm=EARLYOOM)
    arm = run.events[0]["config"]["arm"]
    assert arm["options"]["reaper"]["after_reap"] == "exit_oom_victim"
    assert arm["options"]["victim"]["abort_on_exiting"] is False    # "no-exiting-abort"
    assert "reap-queue-lifo" in arm["follow_ups_not_applied"]


@pytest.mark.parametrize("options", [{"prefer": "("}, {"points": 1001}, {"colour": "red"}])
def test_bad_options_are_refused(workbench_run, options):
    with pytest.raises(Exception, match="prefer|points|colour"):
        workbench_run(TWINS, arm={**EARLYOOM, "options": {"victim": options}})


def test_fifo_reaps_the_parallel_memcg_victims_in_kill_order(workbench_run):
    # s06: three memcg OOMs within ms, each victim blocked in D.  The seed's slot
    # drops two of them, 4.6's LIFO list reaps them last-killed first; FIFO
    # reaps them in the order they were killed.
    run = workbench_run("s06-parallel-memcg-ooms", arm={"reaper": "fifo"})
    killed = [e["comm"] for e in run.of("kill")]
    assert sorted(killed) == ["victim-a", "victim-b", "victim-c"]
    assert [e["comm"] for e in run.of("reaper_queued")] == killed
    assert [e["comm"] for e in run.of("reap_attempt")] == killed
    assert run.summary["reaper_dropped"] == 0 and run.summary["reap_attempts"] == 3
    assert run.summary["outcome"] == "recovered" and run.summary["cgroups_recovered"] == 3
