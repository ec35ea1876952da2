"""4.5's reclaim progress rule (mm/vmscan.c zone_reclaimable(), do_try_to_free_pages()) and
swap-out in reclaim."""

from __future__ import annotations

from helpers import process, scenario

from workbench.kernel import vmscan

DIRTY = process("writer", program=['{ sleep = "1s" }'],
                extra='[[process.vma]]\nname = "log"\nkind = "file"\nsize = "64MiB"\n'
                      'resident = "64MiB"\ndirty = "64MiB"')


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
    run(scenario("s", DIRTY, process("a", program=[])), calls={"a/main": _progress_sequence(seen)})
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
    run(text, calls={"a/main": _progress_sequence(seen, memcg=True)})
    assert seen == [0, 0, 0, ("scanned after a free", 0), 0]


def test_the_oom_killer_runs_later_with_dirty_page_cache_and_not_under_4_7(run):
    hog = process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'])
    freer = DIRTY.replace('program = [{ sleep = "1s" }]',
                          'program = [{ kalloc = "8MiB" }, { repeat = 500, do = '
                          '[{ kfree = "4KiB" }, { sleep = "1ms" }] }]')
    r45 = run(scenario("s", freer, hog, memory="512MiB"))
    r47 = run(scenario("s", freer, hog, memory="512MiB"), preset="modern")
    # every kfree resets NR_PAGES_SCANNED: 4.5 keeps retrying for the freer's half second
    assert r45.summary["first_oom_s"] > 0.5 > r47.summary["first_oom_s"]
    assert r45.summary["kills"] == r47.summary["kills"] == 1


# -- swap-in ----------------------------------------------------------------------------

def _swap(text, swap="1GiB", extra=""):
    return text.replace("[machine]", f'[machine]\nswap = "{swap}"\n{extra}')


def test_a_fault_on_swapped_pages_swaps_them_in_and_frees_the_slots(run):
    proc = process("p", heap="64MiB", program=['{ alloc = "16MiB", vma = "heap" }',
                                               '{ sleep = "1s" }'])
    proc = proc.replace('size = "64MiB"\n', 'size = "64MiB"\nswapped = "32MiB"\n')
    seen = {}

    async def look(k, task):
        await k.clock.sleep(task, 100_000_000, "D")
        mm = next(p for p in k.processes if p.comm == "p").mm
        seen.update(swapents=mm.swapents, anon=mm.anon, free=k.swap.free, t=k.clock.now)

    r = run(_swap(scenario("s", proc, process("k", program=[]), memory="256MiB")),
            calls={"k/main": look})
    assert seen["swapents"] == seen["anon"] == 4096      # 16 MiB of the 32 came back
    assert seen["free"] == (1 << 18) - 4096
    # swapped in at swap_rate (512 MiB/s): 16 MiB take 31.25 ms, not 3.9 ms at fault_rate
    p_exit = r.first("exit", comm="p")
    assert p_exit["t"] > 1.03
