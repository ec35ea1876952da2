"""The event log's contract, and the outcomes and metrics (docs/events.md, docs/metrics.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workbench.log import EVENTS
from workbench.metrics import Metrics, check_expect

DOCS = Path(__file__).parent.parent / "docs" / "events.md"

# The events for which 4.5 prints a line; every other event must carry no msg.
PRINTED = {"oom_header", "oom_cpuset", "oom_dump_tasks", "oom_dump_task", "select_victim", "kill",
           "alloc_fail", "panic", "memcg_oom_info"}


def feed(events, stall=10.0):
    m = Metrics()
    m.feed({"event": "header", "t": 0.0, "config": {"limits": {"stall_s": stall},
                                                    "scenario": {"cgroups": [{"name": "a"}]}}})
    for e in events:
        m.feed(e)
    return m


def stall(since, end, result="ok", **kw):
    return {"event": "alloc_stall", "t": end, "since": since, "stall_s": end - since,
            "result": result, **kw}


def test_recovery_is_the_first_moment_after_the_first_oom_with_no_stall():
    m = feed([stall(0.5, 1.0), {"event": "out_of_memory", "t": 1.0},
              stall(0.9, 1.5), stall(1.4, 2.0), stall(2.5, 3.0)])
    assert m.recovery_s() == 1.0                       # covered 1.0 .. 2.0, free at 2.0
    assert feed([{"event": "out_of_memory", "t": 1.0}, stall(0.9, 5.0, "open")]).recovery_s() is None
    assert feed([stall(0.1, 0.2)]).recovery_s() is None                 # never an OOM


@pytest.mark.parametrize("events, outcome", [
    ([{"event": "error", "t": 1, "problem": "x"}, {"event": "panic", "t": 2}], "error"),
    ([{"event": "invariant", "t": 1, "problem": "x"}], "error"),
    ([{"event": "panic", "t": 2}, stall(0, 20)], "panic"),
    ([stall(0, 10.0), {"event": "lock_wait", "t": 20, "tgid": 5, "wait_s": 15}], "lockup"),
    ([{"event": "lock_wait", "t": 20, "tgid": 5, "wait_s": 15}], "hang"),
    ([{"event": "out_of_memory", "t": 1}, {"event": "kill", "t": 1, "tgid": 5, "comm": "v"},
      {"event": "lock_wait", "t": 20, "tgid": 5, "wait_s": 15}], "recovered"),   # killed: no hang
    ([{"event": "lock_wait", "t": 16, "tgid": 5, "wait_s": 15},                  # ended before
      {"event": "kill", "t": 17, "tgid": 5, "comm": "v"}], "hang"),               # the kill
    ([{"event": "exit_group", "t": 1, "tgid": 5},
      {"event": "lock_wait", "t": 20, "tgid": 5, "wait_s": 15}], "no-oom"),
    ([{"event": "out_of_memory", "t": 1}, stall(0, 9.9)], "recovered"),
    ([stall(0, 9.9)], "no-oom"),
])
def test_the_first_outcome_that_applies_wins(events, outcome):
    assert feed(events).outcome() == outcome


def test_cgroups_that_stalled_report_their_worst_stall():
    s = feed([stall(0, 12, "open", memcg="a"), stall(1, 2, memcg="a")]).summary()
    assert s["cgroups"] == {"a": {"max_stall_s": 12, "outcome": "lockup", "recovery_s": None}}
    assert (s["cgroups_locked_up"], s["cgroups_recovered"]) == (1, 0)


def test_each_cgroup_recovers_from_its_own_first_oom():
    s = feed([{"event": "out_of_memory", "t": 1.0, "memcg": "a"}, stall(0.5, 1.25, memcg="a"),
              stall(1.2, 1.75, memcg="a"), stall(0, 12, "open")]).summary()
    assert s["cgroups"]["a"]["recovery_s"] == 0.75 and s["recovery_s"] is None


def test_each_victim_says_when_its_memory_came_back_and_the_reaper_its_busy_time():
    s = feed([{"event": "kill", "t": 1.0, "comm": "v", "pid": 3, "mm": 3, "tgid": 3},
              {"event": "reap_attempt", "t": 1.0, "mm": 3},
              {"event": "reap_attempt", "t": 1.1, "mm": 3},
              {"event": "reap_done", "t": 1.3, "mm": 3, "reaped_kb": 4},
              {"event": "exit_mmap", "t": 2.0, "mm": 3, "freed_kb": 4}]).summary()
    assert s["victims"] == [{"comm": "v", "pid": 3, "killed_s": 1.0, "freed_after_s": 0.3,
                             "freed_by": "oom_reaper"}]
    assert s["reaper_busy_s"] == pytest.approx(0.3)


def test_expectations():
    summary = {"outcome": "recovered", "kills": 2, "killed": ["a", "b"], "max_stall_s": 3.0,
               "recovery_s": None, "cgroups": {"a": {"outcome": "lockup", "max_stall_s": 12}}}
    expect = {"outcome": ["recovered", "no-oom"], "kills": {"min": 1, "max": 1},
              "killed": ["a", "b"], "max_stall_s": {"min": None, "max": 5},
              "recovery_s": {"min": None, "max": 1}, "cgroups": {"a": {"outcome": ["recovered"]}}}
    assert check_expect(expect, summary) == [
        "kills 2, expected 1", "recovery_s None, expected at most 1",
        "cgroup a: outcome lockup, expected recovered"]


def test_the_vocabulary_is_documented_and_closed(tmp_path):
    documented = re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", DOCS.read_text(), re.M)
    assert documented == [(name, text.replace("|", "\\|")) for name, text in EVENTS.items()]
    from workbench.log import EventLog
    log = EventLog(tmp_path / "x.jsonl", {}, lambda: 0, [])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        log.emit("something_new")
    log.abandon()


def test_only_the_lines_the_kernel_printed_carry_msg(run):
    from helpers import process, scenario
    r = run(scenario("s", process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }']),
                     extra='[[cgroup]]\nname = "a"\nmemory_max = "1GiB"'))
    with_msg = {e["event"] for e in r.events if "msg" in e}
    assert with_msg <= PRINTED and {"kill", "select_victim", "oom_header"} <= with_msg
    assert r.events[-1]["t"] == r.summary["end_s"]


def test_consecutive_identical_aborted_ooms_of_a_task_fold_into_one_event(tmp_path):
    """docs/events.md, Folded aborts: per task, until any other event; t of the first call."""
    from workbench.log import EventLog
    now = [0]
    seen = []
    log = EventLog(tmp_path / "x.jsonl", {}, lambda: now[0], [seen.append])

    def oom(t, pid, result="abort", gfp=1):
        now[0] = t * 1_000_000_000
        log.emit("out_of_memory", pid=pid, gfp_mask=gfp, result=result)
    oom(1, 7)
    oom(2, 8)
    oom(3, 7)
    oom(4, 7)
    oom(5, 8, gfp=2)            # task 8 with other fields: every open fold is written first
    oom(6, 8, gfp=2)
    now[0] = 7_000_000_000
    log.emit("meminfo", free_kb=1)
    oom(8, 7)
    oom(9, 7, result="kill")    # a kill never folds, and writes the open fold first
    oom(10, 7)
    log.flush()                 # the end of the run (Kernel.halt)
    log.commit()
    lines = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [(e["event"], e["t"], e.get("pid"), e.get("count"), e.get("until")) for e in lines] == [
        ("out_of_memory", 1.0, 7, 3, 4.0), ("out_of_memory", 2.0, 8, None, None),
        ("out_of_memory", 5.0, 8, 2, 6.0), ("meminfo", 7.0, None, None, None),
        ("out_of_memory", 8.0, 7, None, None), ("out_of_memory", 9.0, 7, None, None),
        ("out_of_memory", 10.0, 7, None, None)]
    assert lines[2]["gfp_mask"] == 2 and lines[5]["result"] == "kill"
    assert seen == lines                               # the metrics see what the file holds
    assert feed(lines).oom_invocations == 9
