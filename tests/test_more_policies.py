"""The built-in policies beyond the kernels' own: oom_kill_allocating_task,
largest-rss and the back-off reaper (docs/config.md, configs/policies.toml)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import process, scenario
from test_bad_input import refused, write

from workbench.kernel.oom_kill import OOM_SCORE_ADJ_MIN
from workbench.plugins.reaper import Backoff, BackoffOptions
from workbench.plugins.victim import LargestRss, LargestRssOptions
from workbench.policy import ReapWork, Retry

ALLOCATING = {"victim": "oom_kill_allocating_task"}


def bystander(name, size="64MiB", extra=""):
    return process(name, heap=size, resident=size, program=['{ sleep = "10s" }'], extra=extra)


def faulter(name, size="120MiB", extra=""):
    return process(name, heap="1GiB", program=['{ sleep = "1ms" }',
                                               f'{{ alloc = "{size}", vma = "heap" }}'],
                   extra=extra)


# -- oom_kill_allocating_task -------------------------------------------------------------

def test_the_allocating_task_is_killed_with_points_0_and_the_sysctls_message(run):
    r = run(scenario("s", bystander("big", "160MiB"), faulter("small")), arm=ALLOCATING)
    assert r.summary["killed"] == ["small"]
    select = r.first("select_victim")
    assert select["points"] == 0 and select["score"] == 0
    assert select["msg"] == (f"Out of memory (oom_kill_allocating_task): Kill process "
                             f"{select['pid']} (small) score 0 or sacrifice child")
    assert r.first("kill")["msg"].startswith(f"Killed process {select['pid']} (small) ")
    assert r.first("out_of_memory")["result"] == "kill"


def test_under_the_patch_the_same_machine_kills_the_largest(run):
    r = run(scenario("s", bystander("big", "160MiB"), faulter("small")))
    assert r.summary["killed"] == ["big"]


def test_a_pending_victim_does_not_stop_it_and_it_does_not_sleep_after_the_kill(run):
    """out_of_memory(), 4.5: the sysctl path returns before select_bad_process()
    and before schedule_timeout_killable(1)."""
    r = run(scenario("s", process("a", heap="1GiB", program=[
        '{ sleep = "1ms" }', '{ alloc = "120MiB", vma = "heap" }', '{ sleep = "10s" }']),
        faulter("b", "200MiB"), time="2s"), arm=ALLOCATING, preset="no-reaper")
    kills = r.of("kill")
    assert [k["comm"] for k in kills][:1] == ["b"]
    # Scanning would abort while b still has TIF_MEMDIE; nothing aborts here.
    assert r.count("out_of_memory", result="abort") == 0


def test_the_child_of_the_allocating_task_is_sacrificed_first_p01(run):
    child = bystander("helper", "8MiB", extra='parent = "worker"')
    r = run(scenario("s", bystander("cache", "128MiB"), faulter("worker", "200MiB"), child),
            arm=ALLOCATING)
    assert r.summary["killed"] == ["helper", "worker"]
    r = run(scenario("s", bystander("cache", "128MiB"), faulter("worker", "200MiB"), child),
            arm=ALLOCATING, preset="modern")             # 5.1: no child sacrifice
    assert r.summary["killed"][0] == "worker"


@pytest.mark.parametrize("extra", ["oom_score_adj = -1000", "kthread = true"])
def test_an_ineligible_allocating_task_falls_back_to_the_scan(run, extra):
    allocator = process("alloc", program=['{ sleep = "1ms" }', '{ kalloc = "200MiB" }'],
                        extra=extra)
    r = run(scenario("s", bystander("big", "128MiB"), allocator), arm=ALLOCATING)
    assert r.summary["killed"] == ["big"]
    assert "oom_kill_allocating_task" not in r.first("select_victim")["msg"]


def test_a_memcg_oom_scans_as_linux_does(run):
    cg = '[[cgroup]]\nname = "a"\nmemory_max = "64MiB"\n'
    r = run(scenario("s", bystander("big", "32MiB", extra='cgroup = "a"'),
                     faulter("small", "64MiB", extra='cgroup = "a"'), extra=cg), arm=ALLOCATING)
    first = r.first("select_victim")
    assert first["comm"] == "big" and first["msg"].startswith("Memory cgroup out of memory: ")


# -- largest-rss ----------------------------------------------------------------------------

def _proc(anon, *, adj=0, uid=1000):
    mm = SimpleNamespace(get_mm_rss=lambda: anon, swapents=0, nr_ptes=50, nr_pmds=1,
                         oom_skip=False)
    proc = SimpleNamespace(uid=uid, oom_score_adj=adj, kthread=False, init=False, cgroup=None,
                           cap_sys_admin=uid == 0, in_vfork=False)
    proc.threads = [SimpleNamespace(mm=mm, process=proc)]
    return proc


@pytest.mark.parametrize("proc, points", [
    (_proc(10000), 10000),                    # rss only: no page tables
    (_proc(10000, uid=0), 10000),             # no root bonus
    (_proc(10000, adj=999), 10000),           # oom_score_adj ignored ...
    (_proc(10000, adj=-999), 10000),
    (_proc(10000, adj=OOM_SCORE_ADJ_MIN), 0),  # ... except OOM_SCORE_ADJ_MIN
    (_proc(0), 1),                            # eligible: at least 1, as 4.5's
])
def test_largest_rss_scores_rss_alone(proc, points):
    oc = SimpleNamespace(totalpages=262144, memcg=None)
    assert LargestRss(LargestRssOptions(), None).badness(proc, oc) == points


def test_largest_rss_ignores_oom_score_adj_p02(run):
    procs = (bystander("db", "128MiB", extra="oom_score_adj = -500"),
             bystander("tab", "32MiB", extra="oom_score_adj = 500"), faulter("w", "120MiB"))
    assert run(scenario("s", *procs)).summary["killed"][0] == "tab"
    assert run(scenario("s", *procs), arm={"victim": "largest-rss"}).summary["killed"][0] == "db"


def test_largest_rss_keeps_the_eras_abort_rule(run):
    holder = process("holder", program=['{ lock = "m" }', '{ sleep = "10ms" }',
                                        '{ kalloc = "200MiB" }'])
    waiter = process("waiter", heap="160MiB", resident="160MiB",
                     program=['{ sleep = "1ms" }', '{ lock = "m" }'])
    r = run(scenario("s", bystander("a", "8MiB"), holder, waiter), preset="no-reaper",
            arm={"victim": "largest-rss"})
    results = [e["result"] for e in r.of("out_of_memory")]
    assert results[0] == "kill" and set(results[1:]) == {"abort"}
    assert r.summary["killed"] == ["waiter"]


# -- the back-off reaper ----------------------------------------------------------------------

MACHINE = SimpleNamespace(hz=1000, jiffy_ns=1_000_000)
MS = 1_000_000


def backoff(**options):
    return Backoff(BackoffOptions(**options), MACHINE)


def schedule(policy, work=None):
    work = work or ReapWork(SimpleNamespace(), SimpleNamespace())
    out, attempt = [], 0
    while True:
        attempt += 1
        retry = policy.workbench_reaper_retry(work, attempt)
        out.append(retry)
        if not retry.again:
            return out


def test_the_sleep_doubles_from_hz_over_10_up_to_the_cap():
    sleeps = [r.sleep_ns // MS for r in schedule(backoff())]
    assert sleeps == [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 0]   # 10 attempts


def test_initial_cap_and_attempts_are_options():
    sleeps = [r.sleep_ns // MS for r in schedule(backoff(initial="10ms", cap="50ms",
                                                         attempts=6))]
    assert sleeps == [10, 20, 40, 50, 50, 0]


def test_the_budget_gives_up_before_a_sleep_would_pass_it():
    sleeps = [r.sleep_ns // MS for r in schedule(backoff(attempts=1000, budget="1s"))]
    assert sleeps == [100, 200, 400, 0]          # 700 ms slept; 800 more would pass 1 s
    assert schedule(backoff(attempts=1000, budget="1s")) == [
        Retry(100 * MS, True), Retry(200 * MS, True), Retry(400 * MS, True), Retry(0, False)]


def test_sleeps_are_whole_jiffies():
    policy = Backoff(BackoffOptions(initial="1ms"), SimpleNamespace(hz=100, jiffy_ns=10 * MS))
    assert [r.sleep_ns // MS for r in schedule(policy)][:3] == [10, 10, 10]


def test_each_mm_has_its_own_budget():
    policy = backoff(attempts=1000, budget="300ms")
    a, b = (ReapWork(SimpleNamespace(), SimpleNamespace()) for _ in range(2))
    assert policy.workbench_reaper_retry(a, 1) == Retry(100 * MS, True)
    assert policy.workbench_reaper_retry(b, 1) == Retry(100 * MS, True)
    assert policy.workbench_reaper_retry(a, 2) == Retry(200 * MS, True)
    assert policy.workbench_reaper_retry(a, 3) == Retry(0, False)


def test_backoff_outlasts_a_writer_the_seed_gives_up_on_p03(run):
    victim = process("victim", heap="160MiB", resident="160MiB", threads=[
        ("main", ['{ sleep = "5ms" }', '{ lock = "m" }']),
        ("writer", ['{ mmap_lock = "write" }', '{ sleep = "2s", mode = "uninterruptible" }',
                    '{ mmap_unlock = true }'])])
    holder = process("holder", program=['{ lock = "m" }', '{ sleep = "10ms" }',
                                        '{ kalloc = "200MiB" }', '{ unlock = "m" }'])
    s = scenario("s", holder, victim, time="8s", stall="4s")
    seed = run(s)
    assert seed.summary["outcome"] == "lockup" and seed.summary["reap_failures"] == 1
    r = run(s, arm={"reaper": "backoff"})
    assert r.summary["outcome"] == "recovered" and r.summary["reaped_kb"] >= 160 * 1024
    gaps = [round(b["t"] - a["t"], 3) for a, b in zip(r.of("reap_attempt"),
                                                      r.of("reap_attempt")[1:])]
    assert gaps == [0.1, 0.2, 0.4, 0.8, 1.0][:len(gaps)] and len(gaps) >= 4


@pytest.mark.parametrize("options, message", [
    ('initial = "0ms"', "arm[0].options.reaper.initial: expected a duration of more than 0"),
    ('cap = 0', "arm[0].options.reaper.cap: expected a duration of more than 0"),
    ('budget = "0s"', "arm[0].options.reaper.budget: expected a duration of more than 0"),
    ('attempts = 0', "arm[0].options.reaper.attempts"),
    ('initial = "2s"\ncap = "1s"', ("arm[0].options.reaper: expected cap (1s) of at least "
                                     "initial (2s)")),
    ('sleep = "1s"', "arm[0].options.reaper.sleep: unknown key"),
])
def test_bad_backoff_options_are_named(tmp_path, capsys, options, message):
    refused(capsys, write(tmp_path, experiment=f'[[arm]]\nname = "a"\nreaper = "backoff"\n'
                                               f'[arm.options.reaper]\n{options}\n'), message)
