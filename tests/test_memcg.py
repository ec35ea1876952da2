"""Memory cgroups as 4.5 has them (mm/memcontrol.c)."""

from __future__ import annotations

from helpers import process, scenario

from workbench.kernel import gfp, memcontrol, signal
from workbench.kernel.sched import TASK_KILLABLE

MS = 1_000_000
PAGES_PER_MIB = 256


def cgroup(name, limit):
    return f'[[cgroup]]\nname = "{name}"\nmemory_max = "{limit}"\n'


def in_cg(name, cg, **kw):
    extra = kw.pop("extra", "")
    return process(name, extra=f'cgroup = "{cg}"\n{extra}', **kw)


def test_charges_are_limited_and_uncharged_at_exit(run):
    usage = []

    async def watch(k, task):
        for ms in (20, 80):           # faulting ends at 8 ms, the exit at 38 + 16 ms
            await k.clock.sleep(task, ms * MS, "D")
            usage.append(k.memcgs.get("a").usage // PAGES_PER_MIB)

    r = run(scenario("s", in_cg("p", "a", heap="64MiB", program=[
        '{ alloc = "32MiB", vma = "heap" }', '{ sleep = "30ms" }']), process("watch"),
        extra=cgroup("a", "64MiB")), calls={"watch/main": watch})
    assert usage == [32, 0] and r.summary["outcome"] == "no-oom"


def test_a_fault_over_the_limit_kills_inside_the_cgroup_only(run):
    big_outside = process("outsider", heap="200MiB", resident="200MiB", program=['{ sleep = "1s" }'])
    r = run(scenario("s", big_outside, in_cg("hog", "a", heap="256MiB", program=[
        '{ alloc = "256MiB", vma = "heap" }']), memory="512MiB", extra=cgroup("a", "64MiB")))
    assert r.summary["killed"] == ["hog"]
    oom = r.first("out_of_memory")
    assert (oom["constraint"], oom["memcg"], oom["result"]) == ("memcg", "a", "kill")
    assert r.first("select_victim")["msg"].startswith("Memory cgroup out of memory: Kill process")
    info = [e["msg"] for e in r.of("memcg_oom_info")]
    assert info[0] == "Task in /a killed as a result of limit of /a"
    assert info[1].startswith("memory: usage 65536kB, limit 65536kB, failcnt ")
    assert [e["comm"] for e in r.of("oom_dump_task")] == ["hog"]       # the cgroup's tasks only
    assert r.summary["cgroups"]["a"]["outcome"] == "recovered"


def test_kalloc_and_nofs_charges_fail_with_enomem_and_kill_nothing(run):
    r = run(scenario("s", in_cg("fs", "a", program=[
        '{ kalloc = "128MiB" }', '{ kalloc = "128MiB", gfp = "GFP_NOFS" }', '{ sleep = "5ms" }']),
        extra=cgroup("a", "64MiB")))
    fails = r.of("memcg_charge_fail")
    assert len(fails) == 2 and {f["memcg"] for f in fails} == {"a"}
    assert r.summary["oom_invocations"] == 0 and r.summary["kills"] == 0
    assert r.first("exit", comm="fs")["t"] > fails[-1]["t"]          # the thread went on


def test_reclaim_within_the_cgroup_takes_its_page_cache_first(run):
    seen = {}

    async def check(k, task):
        await k.clock.sleep(task, 100 * MS, "D")
        seen["a"] = k.memcgs.get("a").usage // PAGES_PER_MIB
        seen["root_cache_mapped"] = sum(v.file for mm, v in k.file_vmas if mm.memcg.is_root)

    reader = '[[process.vma]]\nname = "data"\nkind = "file"\nsize = "32MiB"\nresident = "32MiB"'
    r = run(scenario(
        "s", in_cg("reader", "a", program=['{ sleep = "1s" }'], extra=reader),
        process("rootreader", program=['{ sleep = "1s" }'], extra=reader),
        in_cg("hog", "a", heap="64MiB", program=['{ alloc = "48MiB", vma = "heap" }',
                                                  '{ sleep = "1s" }']),
        process("check"), extra=cgroup("a", "64MiB")), calls={"check/main": check})
    assert r.summary["oom_invocations"] == 0
    assert seen["a"] <= 64 and seen["root_cache_mapped"] == 32 * PAGES_PER_MIB


def test_a_charge_reclaims_seven_times_before_the_memcg_oom(run):
    r = run(scenario("s", in_cg("hog", "a", heap="256MiB", program=[
        '{ alloc = "256MiB", vma = "heap" }']), extra=cgroup("a", "64MiB"))
        .replace("[machine]", '[machine]\nreclaim_round = "2ms"'))
    stall = r.first("alloc_stall", memcg="a")
    # 1 + 1 after drain_all_stock() + 5 retries: 7 reclaim rounds of 2 ms, then the
    # fault maps what it could charge (< 1 ms)
    assert 0.014 <= r.first("out_of_memory")["t"] - stall["since"] < 0.015


def test_a_dying_task_forces_its_last_page_past_the_limit(run):
    """Its fault or allocation in progress gets its page; then it returns to
    die (mm/memcontrol.c try_charge(), 4.5: a dying task bypasses the limit)."""
    seen = {}

    async def body(k, task):
        memcg = k.memcgs.get("a")
        signal.send_sigkill(k, task.process)
        seen["charged"] = await memcontrol.try_charge(k, task, memcg, 1000, gfp.GFP_KERNEL, True)
        seen["over"] = memcg.usage - memcg.limit
        memcontrol.uncharge(k, memcg, seen["charged"])

    run(scenario("s", in_cg("p", "a"), extra=cgroup("a", "2MiB")), calls={"p/main": body})
    assert seen == {"charged": 512 + 1, "over": 1}


def test_memcg_oom_waiters_sleep_killable_until_an_uncharge(run):
    seen = {}

    async def owner(k, task):
        memcg = k.memcgs.get("a")
        memcg.oom_lock = True                    # another OOM in this cgroup is under way
        memcontrol.force_charge(k, memcg, 512)
        await k.clock.sleep(task, 50 * MS, "D")
        memcontrol.uncharge(k, memcg, 512)       # e.g. its victim's pages freed
        memcg.oom_lock = False

    async def waiter(k, task):
        await k.clock.sleep(task, 1 * MS, "D")
        task.memcg_oom = k.memcgs.get("a")
        assert await memcontrol.mem_cgroup_oom_synchronize(k, task, True)
        seen["woken"] = k.clock.now // MS
        seen["state"] = task.state

    run(scenario("s", in_cg("owner", "a"), in_cg("waiter", "a"), extra=cgroup("a", "2MiB")),
        calls={"owner/main": owner, "waiter/main": waiter})
    assert seen == {"woken": 50, "state": "R"}
    assert TASK_KILLABLE == "K"


def test_a_memcg_victim_aborts_every_global_oom_scan(run):
    """§7a note 4d: the global scan walks all threads, so the stuck memcg
    victim's TIF_MEMDIE keeps the global OOM killer from killing anyone."""
    victim = in_cg("victim", "a", heap="64MiB", program=[
        '{ alloc = "56MiB", vma = "heap" }', '{ lock = "m" }'])
    holder = in_cg("holder", "a", heap="32MiB", program=[
        '{ lock = "m" }', '{ sleep = "50ms" }', '{ alloc = "32MiB", vma = "heap" }'])
    rooted = process("rooted", program=['{ sleep = "200ms" }', '{ kalloc = "256MiB" }'])
    r = run(scenario("s", victim, holder, rooted, extra=cgroup("a", "64MiB")),
            preset="no-reaper")
    assert r.summary["killed"] == ["victim"]
    global_ooms = r.of("out_of_memory", constraint="none")
    assert global_ooms and {e["result"] for e in global_ooms} == {"abort"}
    assert r.summary["outcome"] == "lockup" and r.summary["cgroups"]["a"]["outcome"] == "lockup"
