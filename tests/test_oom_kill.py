"""out_of_memory(), select_bad_process() and oom_kill_process() of 4.5 (mm/oom_kill.c)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import process, scenario

from workbench.kernel import oom_kill
from workbench.plugins.victim import Linux, Linux45, LinuxOptions

ROOT = Path(__file__).parent.parent


def _proc(anon, *, uid=1000, adj=0, kthread=False, init=False):
    mm = SimpleNamespace(get_mm_rss=lambda: anon, swapents=0, nr_ptes=0, nr_pmds=0)
    proc = SimpleNamespace(uid=uid, oom_score_adj=adj, kthread=kthread, init=init, cgroup=None,
                           cap_sys_admin=uid == 0)
    proc.threads = [SimpleNamespace(mm=mm, process=proc)]
    return proc


OC = SimpleNamespace(totalpages=262144, memcg=None)


@pytest.mark.parametrize("proc, points", [
    (_proc(10000), 10000),
    (_proc(10000, uid=0), 9700),                      # 3% CAP_SYS_ADMIN bonus
    (_proc(10000, adj=500), 10000 + 500 * 262),       # adj * (totalpages / 1000)
    (_proc(10000, adj=-999), 1),                      # never 0 for an eligible task
    (_proc(10000, adj=-1000), 0),                     # OOM_SCORE_ADJ_MIN
    (_proc(10000, kthread=True), 0),
    (_proc(10000, init=True), 0),
])
def test_oom_badness(proc, points):
    assert Linux45(LinuxOptions(), None).badness(proc, OC) == points


def bystander(name, size="64MiB", adj=None, extra=""):
    extra += f"\noom_score_adj = {adj}" if adj is not None else ""
    return process(name, heap=size, resident=size, program=['{ sleep = "10s" }'], extra=extra)


KALLOCATOR = process("kalloc", program=['{ kalloc = "256MiB" }'])


def test_equal_scores_pick_the_first_process(run):
    r = run(scenario("s", bystander("a"), bystander("b"), KALLOCATOR))
    assert r.summary["killed"][0] == "a"


def test_oom_score_adj_moves_the_choice(run):
    r = run(scenario("s", bystander("a"), bystander("b", adj=500), KALLOCATOR))
    assert r.summary["killed"][0] == "b"
    select = r.first("select_victim")
    assert select["msg"] == f"Out of memory: Kill process {select['pid']} (b) score " \
                            f"{select['score']} or sacrifice child"


def test_scan_aborts_while_a_victim_holds_tif_memdie(run):
    r = run(scenario("s", bystander("a", size="8MiB"), process(
        "holder", program=['{ lock = "m" }', '{ sleep = "10ms" }', '{ kalloc = "200MiB" }']),
        process("waiter", heap="160MiB", resident="160MiB",
                program=['{ sleep = "1ms" }', '{ lock = "m" }'])), preset="no-reaper")
    results = [e["result"] for e in r.of("out_of_memory")]
    calls = sum(e.get("count", 1) for e in r.of("out_of_memory"))     # aborts fold (log.py)
    assert results[0] == "kill" and set(results[1:]) == {"abort"} and calls > 100
    assert r.summary["kills"] == 1


def test_an_exiting_thread_with_its_mm_aborts_every_scan_s05(run):
    """§7a S05: thread1 is PF_EXITING, stuck in exit_mm's down_read behind the
    allocating mmap writer thread2: 4.5 kills nobody, with or without the reaper."""
    s05 = process("app", heap="128MiB", resident="128MiB", threads=[
        ("writer", ['{ mmap_lock = "write" }', '{ sleep = "10ms" }', '{ kalloc = "200MiB" }',
                    '{ mmap_unlock = true }']),
        ("exiter", ['{ sleep = "5ms" }']),
    ])
    for preset in ("patch", "no-reaper"):
        r = run(scenario("s05", s05), preset=preset)
        assert r.summary["outcome"] == "lockup" and r.summary["kills"] == 0
        assert {e["result"] for e in r.of("out_of_memory")} == {"abort"}
        assert r.summary["reap_attempts"] == 0


def test_nothing_killable_panics(run):
    r = run(scenario("s", bystander("a", adj=-1000),
                     process("kalloc", program=['{ kalloc = "256MiB" }'],
                             extra="oom_score_adj = -1000")))
    assert r.summary["outcome"] == "panic"
    assert r.first("panic")["msg"] == ("Kernel panic - not syncing: Out of memory and no "
                                       "killable processes...")
    assert r.first("out_of_memory")["result"] == "panic" and r.count("oom_header") == 1


def test_any_child_with_its_own_mm_is_sacrificed_for_its_parent(run):
    parent = bystander("parent", size="160MiB")
    child = process("child", heap="4MiB", resident="4MiB", program=['{ sleep = "10s" }'],
                    extra='parent = "parent"')
    r = run(scenario("s", parent, child, KALLOCATOR))
    select = r.first("select_victim")
    assert select["comm"] == "parent" and r.summary["killed"][0] == "child"
    assert r.first("kill")["selected"] == select["pid"]


def test_processes_sharing_the_victims_mm_are_killed_too(run):
    owner = bystander("owner", size="160MiB")
    sharer = process("sharer", program=['{ sleep = "10s" }'], extra='shares_mm_with = "owner"')
    r = run(scenario("s", owner, sharer, KALLOCATOR))
    assert r.summary["killed"][0] == "owner" and r.summary["killed_sharers"][0] == "sharer"
    assert "msg" not in r.first("kill_sharer")               # 4.5 kills sharers silently
    assert r.count("reaper_queued") >= 1


@pytest.mark.parametrize("sharer_extra, why", [
    ('shares_mm_with = "owner"\noom_score_adj = -1000', "OOM_SCORE_ADJ_MIN"),
    ('shares_mm_with = "owner"\nkthread = true', "kthread (use_mm)"),
])
def test_a_sharer_left_alive_keeps_the_mm_from_the_reaper(run, sharer_extra, why):
    owner = bystander("owner", size="160MiB")
    sharer = process("sharer", program=['{ sleep = "10s" }'], extra=sharer_extra)
    r = run(scenario("s", owner, sharer, KALLOCATOR))
    assert r.summary["killed"][0] == "owner" and r.summary["killed_sharers"] == []
    skip = r.first("reaper_skip")
    assert skip["sharer_comm"] == "sharer", why
    assert r.count("reaper_queued", mm=skip["mm"]) == 0
    assert r.count("reap_attempt", mm=skip["mm"]) == 0
    # The owner's exit frees nothing while the sharer holds mm_users, but it
    # clears TIF_MEMDIE: the killer moves on to another victim (§7a S12).
    assert r.summary["kills"] == 2


def test_a_dying_allocator_takes_the_shortcut_without_a_kill(run):
    """The allocating sharer is SIGKILLed with the owner but gets no TIF_MEMDIE;
    its next out_of_memory() marks it through the fatal-signal shortcut, silently."""
    owner = bystander("owner", size="160MiB")
    sharer = process("sharer", program=['{ kalloc = "200MiB" }'],
                     extra='shares_mm_with = "owner"\noom_score_adj = -500')
    # No reserves above zero (min_free = 0): the dying sharer's allocation in
    # progress finds no page, so it comes back to out_of_memory().
    r = run(scenario("s", owner, sharer).replace("[machine]", '[machine]\nmin_free = "0B"'),
            preset="no-reaper")
    assert r.summary["killed"] == ["owner"] and r.summary["killed_sharers"] == ["sharer"]
    shortcut = r.first("out_of_memory", result="shortcut", comm="sharer")
    assert r.first("mark_victim", comm="sharer")["via"] == "shortcut"
    assert r.first("mark_victim", comm="sharer")["t"] == shortcut["t"]
    assert r.count("select_victim") == 1 and r.summary["kills"] == 1


def test_the_killer_sleeps_one_jiffy_after_a_kill(run):
    elapsed = {}

    async def oom(k, task):
        await k.clock.sleep(task, 1_000_000, "D")
        start = k.clock.now
        await oom_kill.out_of_memory(k, task, 0x24000c0, None)
        elapsed["ns"] = k.clock.now - start

    r = run(scenario("s", bystander("a"), process("caller", program=[]))
            .replace("[machine]", "[machine]\nhz = 100"), calls={"caller/main": oom})
    assert elapsed["ns"] == 10_000_000 and r.summary["kills"] == 1


def test_dump_header_is_ratelimited_to_ten_per_five_seconds():
    rs = oom_kill.Ratelimit(5_000_000_000)
    assert [rs.allow(t * 1_000_000) for t in range(12)] == [True] * 10 + [False] * 2
    assert rs.allow(5_100_000_000)


def test_the_kernels_lines_are_worded_as_45_worded_them(run):
    r = run(scenario("s", bystander("a"), KALLOCATOR))
    header = r.first("oom_header")
    assert header["msg"] == "kalloc invoked oom-killer: gfp_mask=0x24000c0, order=0, oom_score_adj=0"
    kill = r.first("kill")
    assert kill["msg"] == (f"Killed process {kill['pid']} (a) total-vm:65536kB, anon-rss:65536kB, "
                           "file-rss:0kB, shmem-rss:0kB")
    assert r.first("oom_dump_tasks")["msg"].startswith("[ pid ]   uid  tgid total_vm      rss")
    row = r.first("oom_dump_task", comm="a")["msg"]
    assert row.endswith("        0 a") and "   16384    16384" in row


def _walk_would_abort(self, oc, by_process):
    """The answer of the whole walk, without the index: (aborts, steps up to the abort)."""
    k = oc._kernel
    entries = k.for_each_process() if by_process else k.for_each_thread()
    for n, e in enumerate(entries, 1):
        proc = e if by_process else e.process
        if self.unkillable(proc, oc):
            continue
        if by_process:
            if proc.oom_mm is not None and not proc.oom_mm.oom_skip:
                return True, n
        elif e.tif_memdie or (e.mm is not None and self.abort_on_exiting
                              and oom_kill.task_will_free_mem(e)):
            return True, n
    return False, 0


@pytest.mark.parametrize("name, preset", [
    ("s05-exiting-thread-vs-mmap-writer", "patch"), ("s03-victim-blocked-on-lock", "no-reaper"),
    ("s06-parallel-memcg-ooms", "patch"), ("s03-victim-blocked-on-lock", "modern"),
    ("s04-mmap-writer-d-state", "modern"), ("s12-mm-shared-with-init", "v4.6")])
def test_the_pending_victim_index_answers_as_the_walk_would(run, monkeypatch, name, preset):
    """The ABORT decision from the kernel's index of TIF_MEMDIE / PF_EXITING threads
    (oom_mm processes from 4.9) is the walk's, and charges the walk's steps."""
    checked = []
    for method, by_process in (("_aborts_on_thread", False), ("_aborts_on_process", True)):
        original = getattr(Linux, method)

        def checking(self, oc, _orig=original, _by=by_process):
            expected = _walk_would_abort(self, oc, _by)
            before = oc._kernel.steps
            got = _orig(self, oc)
            assert (got, oc._kernel.steps - before) == expected
            checked.append(got)
            return got
        monkeypatch.setattr(Linux, method, checking)
    text = (ROOT / "configs" / "scenarios" / f"{name}.toml").read_text()
    r = run(text, preset=preset)
    assert r.summary["outcome"] != "error"
    assert True in checked              # the index did answer ABORT in this run
