"""4.5's reclaim progress rule (mm/vmscan.c zone_reclaimable(), do_try_to_free_pages()) and
swap-out in reclaim."""

from __future__ import annotations

from helpers import process, scenario

from workbench.kernel import vmscan

DIRTY = process("writer", program=['{ sleep = "1s" }'],
                extra='[[process.vma]]\nname = "log"\nkind = "file"\nsize = "64MiB"\n'
                      'resident = "64MiB"\ndirty = "64MiB"')


def stuck(text):
    """The disk behind the dirty pages writes 4 KiB/s: the flusher cleans nothing here."""
    return text.replace("[machine]", '[machine]\nwriteback_rate = "4KiB/s"')


def _progress_sequence(seen, memcg=False):
    async def call(k, task):
        await k.clock.sleep(task, 1_000_000, "D")
        cg = k.memcgs.get("a") if memcg else None
        for _ in range(3):
            seen.append(await vmscan.try_to_free_pages(k, task, 10, cg))
        k.zone.give(k.zone.take(1, -1))          # one page freed to the buddy allocator
        seen.append(("scanned after a free", k.zone.pages_scanned))
        seen.append(await vmscan.try_to_free_pages(k, task, 10, cg))
    return call


def test_reclaim_that_frees_nothing_reports_progress_while_the_zone_is_reclaimable(run):
    seen = []
    run(stuck(scenario("s", DIRTY, process("a", program=[]))),
        calls={"a/main": _progress_sequence(seen)})
    # 64 MiB of dirty page cache: 16384 LRU pages.  The first call scans two priority sweeps
    # (about 4 x 16384) and is still under 6 x 16384: progress; the second crosses it.
    assert seen == [1, 0, 0, ("scanned after a free", 0), 1]


def test_without_page_cache_or_swap_nothing_is_reclaimable(run):
    seen = []
    run(scenario("s", process("a", program=[])), calls={"a/main": _progress_sequence(seen)})
    assert seen == [0, 0, 0, ("scanned after a free", 0), 0]


def test_memcg_reclaim_does_not_use_the_rule(run):
    seen = []
    text = scenario("s", DIRTY.replace('name = "writer"', 'name = "writer"\ncgroup = "a"'),
                    process("a", program=[], extra='cgroup = "a"'),
                    extra='[[cgroup]]\nname = "a"\nmemory_max = "128MiB"')
    run(stuck(text), calls={"a/main": _progress_sequence(seen, memcg=True)})
    assert seen == [0, 0, 0, ("scanned after a free", 0), 0]


def test_the_oom_killer_runs_later_with_dirty_page_cache_and_not_under_4_7(run):
    hog = process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'])
    freer = DIRTY.replace('program = [{ sleep = "1s" }]',
                          'program = [{ kalloc = "8MiB" }, { repeat = 500, do = '
                          '[{ kfree = "4KiB" }, { sleep = "1ms" }] }]')
    r45 = run(stuck(scenario("s", freer, hog, memory="512MiB")))
    r47 = run(stuck(scenario("s", freer, hog, memory="512MiB")), preset="modern")
    # every kfree resets NR_PAGES_SCANNED: 4.5 keeps retrying for the freer's half second
    assert r45.summary["first_oom_s"] > 0.5 > r47.summary["first_oom_s"]
    assert r45.summary["kills"] == r47.summary["kills"] == 1


def test_the_flusher_writes_dirty_page_cache_back_and_reclaim_then_frees_it(run):
    hog = process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'])
    r = run(scenario("s", DIRTY, hog, memory="512MiB"))
    wb = r.first("writeback")
    assert wb["written_kb"] == 64 << 10 and wb["dirty_kb"] == 0
    # 64 MiB at writeback_rate (128 MiB/s) before the OOM kill
    assert wb["t"] > 0.5 and r.first("kill")["t"] > wb["t"]
    slow = run(stuck(scenario("s", DIRTY, hog, memory="512MiB")))
    assert slow.first("kill")["t"] < 0.2 and not slow.of("writeback")


# -- swap-out ---------------------------------------------------------------------------

CACHE = process("cache", program=['{ sleep = "1s" }'],
                extra='[[process.vma]]\nname = "lib"\nkind = "file"\nsize = "64MiB"\n'
                      'resident = "64MiB"')
ANON = process("anon", heap="64MiB", resident="64MiB", program=['{ sleep = "1s" }'])


def _reclaim_once(seen, want=2000, memcg=None):
    async def call(k, task):
        await k.clock.sleep(task, 1_000_000, "D")
        start = k.clock.now
        cg = k.memcgs.get(memcg) if memcg else None
        seen["progress"] = await vmscan.try_to_free_pages(k, task, want, cg)
        seen["elapsed"] = k.clock.now - start
        anon = next(p for p in k.processes if p.comm == "anon").mm
        seen["swapents"], seen["free_swap"] = anon.swapents, k.swap.free
    return call


def _swap(text, swap="1GiB", extra=""):
    return text.replace("[machine]", f'[machine]\nswap = "{swap}"\n{extra}')


def test_reclaim_splits_by_swappiness_and_pays_swap_rate(run):
    seen = {}
    run(_swap(scenario("s", CACHE, ANON, process("a", program=[]))),
        calls={"a/main": _reclaim_once(seen)})
    # SCAN_FRACT: anon_prio 60 of 200 -> 600 pages swapped, 1400 from the page cache
    assert seen["progress"] == 2000 and seen["swapents"] == 600
    assert seen["free_swap"] == (1 << 18) - 600
    # 1400 pages at reclaim_rate (1 GiB/s) plus 600 at swap_rate (512 MiB/s)
    assert seen["elapsed"] == -(-1400 * 4096 * 10**9 // (1 << 30)) + \
        -(-600 * 4096 * 10**9 // (512 << 20))


def test_swappiness_0_keeps_anon_while_there_is_page_cache_and_no_swap_means_no_swap_out(run):
    seen = {}
    run(_swap(scenario("s", CACHE, ANON, process("a", program=[])), extra="swappiness = 0"),
        calls={"a/main": _reclaim_once(seen)})
    assert seen["progress"] == 2000 and seen["swapents"] == 0
    seen = {}
    run(_swap(scenario("s", ANON, process("a", program=[])), extra="swappiness = 0"),
        calls={"a/main": _reclaim_once(seen)})
    assert seen["swapents"] == 2000                  # no page cache: SCAN_ANON
    seen = {}
    run(scenario("s", ANON, process("a", program=[])), calls={"a/main": _reclaim_once(seen)})
    assert seen["progress"] == 0 and seen["swapents"] == 0


def test_a_memcg_at_its_memsw_limit_does_not_swap(run):
    seen = {}
    anon = ANON.replace('name = "anon"', 'name = "anon"\ncgroup = "a"')
    cg = '[[cgroup]]\nname = "a"\nmemory_max = "64MiB"\nmemsw_max = "{}"'
    for memsw, swapped in (("64MiB", 0), ("128MiB", 2000)):
        run(_swap(scenario("s", anon, process("a", program=[], extra='cgroup = "a"'),
                           extra=cg.format(memsw))),
            calls={"a/main": _reclaim_once(seen, memcg="a")})
        assert seen["swapents"] == swapped


def test_a_hog_swaps_itself_out_until_swap_is_full_then_is_killed(run):
    hog = process("hog", heap="3GiB", program=['{ alloc = "3GiB", vma = "heap" }'])
    plain = run(scenario("s", hog, memory="1GiB", time="20s"))
    swapped = run(_swap(scenario("s", hog, memory="1GiB", time="20s"), swap="512MiB"))
    assert plain.summary["first_oom_s"] < 0.3
    # 512 MiB written at 512 MiB/s before the swap is full
    assert 1.2 < swapped.summary["first_oom_s"] < 1.5
    row = swapped.first("oom_dump_task", comm="hog")
    assert row["swapents"] == 131072
    assert swapped.first("oom_meminfo")["free_swap_kb"] == 0
    assert swapped.summary["kills"] == 1 and swapped.summary["invariant_violations"] == 0


def test_a_fault_on_swapped_pages_swaps_them_in_and_frees_the_slots(run):
    proc = process("p", heap="64MiB", program=['{ alloc = "48MiB", vma = "heap" }',
                                               '{ sleep = "1s" }'])
    proc = proc.replace('size = "64MiB"\n', 'size = "64MiB"\nswapped = "32MiB"\n')
    seen = {}

    async def look(k, task):
        await k.clock.sleep(task, 100_000_000, "D")
        mm = next(p for p in k.processes if p.comm == "p").mm
        seen.update(swapents=mm.swapents, anon=mm.anon, free=k.swap.free, t=k.clock.now)

    r = run(_swap(scenario("s", proc, process("k", program=[]), memory="256MiB")),
            calls={"k/main": look})
    # the 32 MiB never touched first, then 16 MiB of the 32 swapped out came back
    assert (seen["anon"], seen["swapents"]) == (12288, 4096)
    assert seen["free"] == (1 << 18) - 4096
    # 32 MiB at fault_rate (4 GiB/s, 7.8 ms), 16 MiB at swap_rate (512 MiB/s, 31.25 ms),
    # the 1 s sleep, then exit_mmap's 48 MiB of pages and entries at exit_rate (23.4 ms)
    assert 1.070 < r.first("exit", comm="p")["t"] < 1.071
