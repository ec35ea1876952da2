"""The userspace OOM killer concern: the daemon (workbench/kernel/userspace.py)
and the earlyoom policy (plugins/userspace.py; docs/kernel.md)."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace

import pytest
from helpers import process, scenario
from test_bad_input import refused, write
from test_faulty_policies import Registers

from workbench.kernel import userspace
from workbench.plugins.userspace import Earlyoom, EarlyoomOptions, mem_available_percent
from workbench.policy import MemInfo, Policy, UserKill, hookimpl
from workbench.units import kb

EARLYOOM = {"userspace": "earlyoom"}


def sleeper(name, size="64MiB", extra=""):
    return process(name, heap=size, resident=size, program=['{ sleep = "20s" }'], extra=extra)


def leaker(name="leaker", step="4MiB", every="50ms", extra=""):
    body = f'[{{ alloc = "{step}", vma = "heap" }}, {{ sleep = "{every}" }}]'
    return process(name, heap="1GiB", extra=extra,
                   program=[f'{{ repeat = 400, do = {body} }}'])


# -- /proc/meminfo ------------------------------------------------------------------------

def test_meminfo_is_45s_memavailable(run):
    seen = {}

    async def probe(k, task):
        seen["info"] = userspace.meminfo(k)
        z = k.zone
        seen["zone"] = (z.free, z.wmark_low, z.wmark_high, z.managed)

    files = ('[[process.vma]]\nname = "lib"\nkind = "file"\nsize = "64MiB"\n'
             'resident = "64MiB"\n')
    r = run(scenario("s", sleeper("a", "32MiB", extra=files), process("probe", program=[])),
            calls={"probe/main": probe})
    assert r.summary["outcome"] == "no-oom"
    free, low, high, managed = seen["zone"]
    cache = 64 * 256                                    # the mapped file pages
    assert seen["info"] == MemInfo(mem_total_kb=kb(managed), mem_free_kb=kb(free),
                                   mem_available_kb=kb(free - high + cache - min(cache // 2, low)),
                                   anon_pages_kb=32 * 1024)


def test_memavailable_percent_is_of_user_memory():
    m = MemInfo(mem_total_kb=1000, mem_free_kb=50, mem_available_kb=50, anon_pages_kb=950)
    assert mem_available_percent(m) == 5.0
    assert mem_available_percent(MemInfo(0, 0, 0, 0)) == 100.0


@pytest.mark.parametrize("available_kb, sleep_ms", [
    (50_000, 100),          # below the SIGTERM level: no headroom, the 100 ms floor
    (200_000, 100),         # 20% - 10% of 1 GB = 100000 KiB / 6000 = 16 ms -> 100
    (800_000, 116),         # 70% of 1 GB: 700000 KiB / 6000
    (700_000, 100),
])
def test_the_poll_sleep_is_the_headroom_at_6000_mib_per_s(available_kb, sleep_ms):
    m = MemInfo(1_000_000, available_kb, available_kb, 1_000_000 - available_kb)
    policy = Earlyoom(EarlyoomOptions(), None)
    assert policy.sleep_time_ms(m, mem_available_percent(m)) == sleep_ms


def test_a_headroom_between_the_clamps_is_used_as_is():
    # 60% of 1 GB above 10%: 500000 KiB -> 83 ms -> 100; with a 6 GB machine 500 ms.
    m = MemInfo(6_000_000, 3_600_000, 3_600_000, 2_400_000)
    assert Earlyoom(EarlyoomOptions(), None).sleep_time_ms(m, 60.0) == 500
    big = MemInfo(20_000_000, 16_000_000, 16_000_000, 4_000_000)    # 14 GB of headroom
    assert Earlyoom(EarlyoomOptions(), None).sleep_time_ms(big, 80.0) == 1000


# -- the daemon and the kill ------------------------------------------------------------------

def test_earlyoom_kills_through_kill2_before_the_kernels_oom(run):
    s = scenario("s", sleeper("desktop", "64MiB"), leaker(), time="10s", stall="5s")
    patch = run(s)
    assert patch.summary["killed"] == ["leaker"] and "userspace_kills" not in patch.summary
    r = run(s, arm=EARLYOOM)
    kill = r.first("userspace_kill")
    assert kill["comm"] == "leaker" and kill["policy"] == "earlyoom"
    assert kill["mem_available_kb"] * 100 <= 5 * (kill["mem_available_kb"]
                                                  + kill["anon_pages_kb"])
    assert kill["t"] < patch.summary["first_oom_s"]
    assert r.summary["outcome"] == "no-oom" and r.summary["kills"] == 0
    assert r.summary["userspace_kills"] == 1 and r.summary["userspace_killed"] == ["leaker"]
    # the normal kill path: no TIF_MEMDIE, no reaper; the exit frees the memory
    assert r.count("mark_victim") == 0 and r.count("reaper_queued") == 0
    assert r.first("exit", comm="leaker")["code"] == 137
    assert r.first("userspace_start")["t"] == 0
    assert "msg" not in kill


def test_no_userspace_killer_by_default(run):
    r = run(scenario("s", sleeper("a")))
    assert r.count("userspace_start") == 0 and "userspace_kills" not in r.summary
    arm = r.events[0]["config"]["arm"]
    assert arm["userspace"] == "none" and arm["options"]["userspace"] == {}


def test_it_polls_every_100ms_when_short_and_up_to_1s_when_not(run):
    polls = []

    class Counting(Earlyoom):
        """Earlyoom that records its polls."""

        name = "counting"

        @hookimpl
        def workbench_userspace_poll(self, view):
            answer = super().workbench_userspace_poll(view)
            polls.append((view.now_ns, answer.sleep_ns))
            return answer

    run(scenario("s", sleeper("a", "900MiB"), process("p", program=['{ sleep = "3s" }']),
                 memory="1GiB", time="5s"), arm={"userspace": "counting"},
        plugins=[Registers(Counting)])
    assert polls[0][0] == 0 and {s for _, s in polls} == {100_000_000}   # below 10%: 100 ms
    polls.clear()
    run(scenario("s", sleeper("a", "8MiB"), memory="8GiB", time="5s"),
        arm={"userspace": "counting"}, plugins=[Registers(Counting)])
    assert {s for _, s in polls} == {1_000_000_000}


def test_it_waits_for_its_victim_and_kills_a_stuck_one_again_every_10s(run):
    """kill_wait(): 100 checks 100 ms apart; a victim stuck in D is alive."""
    holder = process("holder", program=['{ lock = "m" }', '{ sleep = "40s" }'])
    victim = process("victim", heap="200MiB", resident="200MiB",
                     program=['{ sleep = "1ms" }', '{ lock = "m" }'])
    filler = process("filler", heap="200MiB", program=[
        '{ sleep = "100ms" }', '{ alloc = "180MiB", vma = "heap" }', '{ sleep = "40s" }'])
    r = run(scenario("s", holder, victim, filler, memory="400MiB", time="25s", stall="30s"),
            arm=EARLYOOM)
    assert r.first("task_state", comm="victim")["waiting_on"] == "mutex:m"
    kills = r.of("userspace_kill")
    assert [k["comm"] for k in kills] == ["victim", "victim", "victim"]
    assert [round(b["t"] - a["t"], 3) for a, b in pairwise(kills)] == [10.1, 10.1]


def test_the_daemon_stops_when_the_workload_is_done(run):
    r = run(scenario("s", process("p", program=['{ sleep = "2500ms" }']), time="60s"),
            arm=EARLYOOM)
    assert r.summary["outcome"] == "no-oom" and 2.5 <= r.summary["end_s"] <= 3.5


def test_it_waits_for_a_process_still_to_start(run):
    late = leaker(extra='start = "3s"')
    r = run(scenario("s", late, time="20s", stall="5s"), arm=EARLYOOM)
    assert r.first("userspace_kill")["comm"] == "leaker"


# -- whom it kills ----------------------------------------------------------------------------

def test_the_highest_oom_score_wins_and_minus_1000_is_skipped(run):
    procs = (sleeper("guard", "96MiB", extra="oom_score_adj = -1000"),
             sleeper("tab", "16MiB", extra="oom_score_adj = 500"), leaker())
    r = run(scenario("s", *procs, time="10s"), arm=EARLYOOM)
    assert r.summary["userspace_killed"][0] == "tab"


def test_avoid_and_prefer_move_the_score_by_300(run):
    procs = (sleeper("desktop", "96MiB"), leaker())
    arm = dict(EARLYOOM, options={"userspace": {"avoid": "^leak"}})
    assert run(scenario("s", *procs, time="10s"), arm=arm).summary["userspace_killed"][0] \
        == "desktop"
    arm = dict(EARLYOOM, options={"userspace": {"prefer": "desk"}})
    r = run(scenario("s", sleeper("desktop", "96MiB"), leaker(), time="10s"), arm=arm)
    assert r.summary["userspace_killed"][0] == "desktop"      # 375 + 300 beats the leaker
    r = run(scenario("s", sleeper("desktop", "96MiB"), leaker(), time="10s"), arm=EARLYOOM)
    assert r.summary["userspace_killed"][0] == "leaker"


def test_ignore_and_sort_by_rss(run):
    procs = (sleeper("tab", "16MiB", extra="oom_score_adj = 900"), leaker())
    assert run(scenario("s", *procs, time="10s"), arm=EARLYOOM).summary["userspace_killed"][0] \
        == "tab"
    by_rss = dict(EARLYOOM, options={"userspace": {"sort_by_rss": True}})
    assert run(scenario("s", *procs, time="10s"), arm=by_rss).summary["userspace_killed"][0] \
        == "leaker"
    ignore = dict(EARLYOOM, options={"userspace": {"ignore": "^tab$"}})
    assert run(scenario("s", *procs, time="10s"), arm=ignore).summary["userspace_killed"][0] \
        == "leaker"


def test_a_higher_kill_level_acts_sooner(run):
    s = scenario("s", sleeper("desktop", "64MiB"), leaker(), time="10s", stall="5s")
    at5 = run(s, arm=EARLYOOM).first("userspace_kill")["t"]
    at20 = run(s, arm=dict(EARLYOOM, options={"userspace": {"mem_term_percent": 30,
                                                             "mem_kill_percent": 20}}))
    assert at20.first("userspace_kill")["t"] < at5


# -- contract and bad input ---------------------------------------------------------------------

class Answers(Policy):
    """Faulty userspace killer."""

    concern = "userspace"

    @hookimpl
    def workbench_userspace_enabled(self):
        return True


def faulty(name, poll):
    return type(name.title().replace("-", ""), (Answers,),
                {"name": name, "workbench_userspace_poll": hookimpl(poll)})


@pytest.mark.parametrize("name, poll, problem", [
    ("zero-sleep", lambda self, view: UserKill(0), "an int sleep_ns from 1"),
    ("not-an-answer", lambda self, view: 100, "expected a UserKill"),
    ("kills-init", lambda self, view: UserKill(10**8, view._kernel.init), "not init"),
    ("kills-a-stranger", lambda self, view: UserKill(10**8, SimpleNamespace(alive=True)),
     "a live process of this run"),
    ("bad-reason", lambda self, view: UserKill(10**8, None, 7), "a str reason"),
    ("raises", lambda self, view: 1 / 0, "ZeroDivisionError"),
])
def test_a_faulty_userspace_policy_ends_only_its_run_naming_it(run, name, poll, problem):
    r = run(scenario("s", sleeper("a")), arm={"userspace": name},
            plugins=[Registers(faulty(name, poll))])
    assert r.summary["outcome"] == "error"
    error = r.first("error")
    assert error["policy"] == name and error["hook"] == "workbench_userspace_poll"
    assert problem in error["problem"]


@pytest.mark.parametrize("options, message", [
    ('prefer = "(unclosed"', "arm[0].options.userspace.prefer: expected a regular expression"),
    ('mem_kill_percent = 20', ("arm[0].options.userspace: expected mem_kill_percent (20) of "
                               "at most mem_term_percent (10)")),
    ('mem_term_percent = 101', "arm[0].options.userspace.mem_term_percent"),
    ('swap_kill_percent = 5', "arm[0].options.userspace.swap_kill_percent: unknown key"),
])
def test_bad_earlyoom_options_are_named(tmp_path, capsys, options, message):
    refused(capsys, write(tmp_path, experiment=f'[[arm]]\nname = "a"\nuserspace = "earlyoom"\n'
                                               f'[arm.options.userspace]\n{options}\n'), message)


def test_an_unknown_userspace_policy_lists_the_known_ones(tmp_path, capsys):
    refused(capsys, write(tmp_path, experiment='[[arm]]\nname = "a"\nuserspace = "nohang"\n'),
            "arm[0].userspace: unknown userspace policy 'nohang' (known: earlyoom, none)")


def test_the_run_table_shows_userspace_kills_only_for_arms_with_a_killer():
    from workbench.report import _cell, _kills
    plain = {"outcome": "recovered", "kills": 1, "expect_failed": []}
    with_killer = {"outcome": "no-oom", "kills": 0, "expect_failed": [], "userspace_kills": 1}
    assert _kills(plain) == "1" and _kills(with_killer) == "0 u1"
    assert _cell([plain]) == "recovered k1"
    assert _cell([with_killer, dict(with_killer, userspace_kills=2)]) == "no-oom k0 u1-2"
