"""The 4.5 zone and allocator slow path (mm/page_alloc.c)."""

from __future__ import annotations

import pytest
from helpers import process, scenario

from workbench.kernel import gfp, page_alloc
from workbench.kernel.page_alloc import NO_WATERMARKS, Zone, min_free_kbytes_for


@pytest.mark.parametrize("memory_kb, expected", [
    (1 << 20, 4096),           # 1 GiB: sqrt(16 * 1048576)
    (8 << 20, 11585),          # 8 GiB: "min ~ 11.3 MB"
    (16 << 10, 512),
    (4 << 10, 256),
    (1024, 128),               # clamped up to 128 kB
    (1 << 30, 65536),          # 1 TiB: clamped to 64 MB in 4.5
])
def test_min_free_kbytes_is_the_45_formula(memory_kb, expected):
    assert min_free_kbytes_for(memory_kb) == expected


def test_watermarks_low_and_high_are_min_plus_a_quarter_and_a_half():
    z = Zone(None, 262144, 4096)
    assert (z.wmark_min, z.wmark_low, z.wmark_high) == (1024, 1280, 1536)


def test_pages_are_granted_one_by_one_while_free_stays_above_the_mark():
    z = Zone(None, 1000, 400)              # min 100
    z.free = 130
    assert z.take(50, 100) == 30 and z.free == 100          # partial grant, strict ">"
    assert z.take(10, 100) == 0
    assert z.take(150, NO_WATERMARKS) == 100 and z.free == 0


def test_gfp_values_print_as_45_did():
    assert gfp.parse_gfp("GFP_KERNEL") == 0x24000c0
    assert gfp.parse_gfp("GFP_NOFS") == 0x2400040
    assert gfp.parse_gfp("GFP_HIGHUSER_MOVABLE") == 0x24200ca
    assert gfp.parse_gfp("GFP_ATOMIC") == 0x2080020
    assert gfp.parse_gfp("GFP_KERNEL|__GFP_NOFAIL") == 0x24008c0
    with pytest.raises(ValueError, match="known: GFP_ATOMIC"):
        gfp.parse_gfp("GFP_WHATEVER")


def test_the_header_records_the_zone(run):
    r = run(scenario("s", process("p", program=['{ sleep = "1ms" }']), memory="1GiB"))
    assert r.events[0]["config"]["zone"] == {"managed_kb": 1 << 20, "min_kb": 4096,
                                             "low_kb": 5120, "high_kb": 6144}


HOG = process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'])


def test_a_victim_without_nofail_takes_the_reserves_then_fails_instead_of_looping(run):
    # No reserves at all (min_free = 0): the victim's next fault finds none.
    r = run(scenario("s", HOG).replace("[machine]", '[machine]\nmin_free = "0B"'),
            preset="no-reaper")
    fail = r.first("alloc_fail", comm="hog")
    assert fail["msg"] == "hog: page allocation failure: order:0, mode:0x24000c0"
    stalls = r.of("alloc_stall", comm="hog")
    assert stalls[-1]["result"] == "failed" and stalls[-1]["t"] == fail["t"]
    assert r.first("exit", comm="hog")["code"] == 137 and r.summary["kills"] == 1


def test_direct_reclaim_frees_clean_page_cache_before_any_oom(run):
    cache = process("cache", program=['{ sleep = "10s" }'],
                    extra='[[process.vma]]\nname = "file"\nkind = "file"\nsize = "128MiB"\n'
                          'resident = "128MiB"')
    hog = process("hog", heap="160MiB", program=['{ alloc = "160MiB", vma = "heap" }'])
    r = run(scenario("s", cache, hog, time="20s"))
    assert r.summary["outcome"] == "no-oom" and r.summary["oom_invocations"] == 0
    stalls = r.of("alloc_stall", comm="hog")
    assert stalls and all(s["result"] == "ok" for s in stalls)
    # Reclaim paid reclaim_rate (1 GiB/s) for what it freed: at least ~36 MiB of cache.
    assert sum(s["stall_s"] for s in stalls) > 0.030


LIVELOCK = [
    process("holder", program=['{ lock = "m" }', '{ sleep = "100ms" }', '{ kalloc = "64MiB" }',
                               '{ unlock = "m" }']),
    process("victim", heap="256MiB", program=['{ alloc = "230MiB", vma = "heap" }',
                                              '{ lock = "m" }']),
]


@pytest.mark.parametrize("reclaim_round, per_second", [("1ms", 1000), ("4ms", 250)])
def test_a_livelocked_allocator_pays_reclaim_round_per_slow_path_round(run, reclaim_round,
                                                                       per_second):
    r = run(scenario("s", *LIVELOCK, time="3s", extra="") .replace(
        '[machine]', f'[machine]\nreclaim_round = "{reclaim_round}"'), preset="no-reaper")
    assert r.summary["outcome"] == "lockup"
    aborts = r.of("out_of_memory", result="abort")
    span = aborts[-1].get("until", aborts[-1]["t"]) - aborts[0]["t"]    # aborts fold (log.py)
    calls = sum(e.get("count", 1) for e in aborts)
    assert calls == pytest.approx(span * per_second, rel=0.01)


def test_gfp_nofs_never_invokes_the_oom_killer_but_keeps_looping(run):
    nofs = process("fs", program=['{ kalloc = "512MiB", gfp = "GFP_NOFS" }'])
    r = run(scenario("s13", nofs, process("big", heap="128MiB", resident="128MiB",
                                          program=['{ sleep = "10s" }'])))
    assert r.summary["outcome"] == "lockup"
    assert r.summary["oom_invocations"] == 0 and r.summary["kills"] == 0
    assert r.first("alloc_stall", comm="fs")["result"] == "open"


async def _hold_oom_lock(k, task):
    assert k.oom_lock.trylock(task)
    await k.clock.sleep(task, 10_000_000, "D")
    k.oom_lock.unlock(task)


def test_a_contended_oom_lock_costs_one_jiffy_and_reports_progress(run):
    seen = {}

    async def may_oom(k, task):
        await k.clock.sleep(task, 1_000_000, "D")
        start = k.clock.now
        seen["result"] = await page_alloc.__alloc_pages_may_oom(k, task, 1, gfp.GFP_KERNEL)
        seen["elapsed"] = k.clock.now - start

    r = run(scenario("s", process("a", program=[]), process("b", program=[]),
                     extra="") .replace('[machine]', '[machine]\nhz = 250'),
            calls={"a/main": _hold_oom_lock, "b/main": may_oom})
    assert seen == {"result": (0, True), "elapsed": 4_000_000}      # one jiffy at HZ=250
    assert r.summary["oom_invocations"] == 0


def test_nofail_keeps_looping_where_a_plain_victim_allocation_would_fail(run):
    nofail = process("hog", heap="1GiB", program=[
        '{ alloc = "200MiB", vma = "heap" }', '{ kalloc = "200MiB", gfp = "GFP_KERNEL|__GFP_NOFAIL" }'])
    r = run(scenario("s", nofail).replace("[machine]", '[machine]\nmin_free = "0B"'),
            preset="no-reaper")
    assert r.count("alloc_fail") == 0
    assert r.summary["kills"] == 1 and r.summary["outcome"] == "lockup"
