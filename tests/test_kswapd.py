"""kswapd and throttle_direct_reclaim() (mm/vmscan.c, 4.5)."""

from __future__ import annotations

from pathlib import Path

from helpers import process, scenario

S19 = Path(__file__).parent.parent / "configs" / "scenarios" / "s19-kswapd-throttle.toml"


def test_s19_a_gfp_kernel_reclaimer_waits_for_kswapd_and_a_kthread_does_not(run):
    r = run(S19.read_text())
    throttled = r.of("reclaim_throttle")
    assert [e["comm"] for e in throttled] == ["worker"]
    # throttled from its fault at 300 ms until the kthread's own reclaim at 400 ms lifts free
    # memory over half the min watermark and the next kswapd pass wakes it
    assert 0.1 <= throttled[0]["wait_s"] < 0.11 and not throttled[0]["killed"]
    assert r.first("kswapd_start")["t"] < 0.3
    assert r.summary["outcome"] == "no-oom"


def test_a_nofs_reclaimer_waits_at_most_a_second(run):
    text = S19.read_text().replace('{ alloc = "4MiB", vma = "heap" }',
                                   '{ alloc = "4MiB", vma = "heap", gfp = "GFP_NOFS" }')
    # no kthread to lift free memory, and interrupts for 2 s: kswapd alone cannot keep up
    text = text.replace('{ sleep = "400ms" }, { kalloc = "1MiB" }', '{ sleep = "5s" }')
    text = text.replace("repeat = 50", "repeat = 200")
    r = run(text)
    throttled = r.first("reclaim_throttle", comm="worker")
    assert throttled["wait_s"] == 1.0                # HZ
    fs = run(text.replace(', gfp = "GFP_NOFS"', ''))
    assert fs.first("reclaim_throttle", comm="worker")["wait_s"] > 1.0   # killable, no timeout


def test_without_reclaimable_pages_kswapd_never_runs(run):
    hog = process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'])
    r = run(scenario("s", hog, memory="256MiB"))
    assert r.count("kswapd_start") == 0 and r.count("reclaim_throttle") == 0
    assert r.summary["kills"] == 1


def test_kswapd_reclaims_page_cache_to_the_high_watermark_in_the_background(run):
    cache = process("cache", program=['{ sleep = "2s" }'],
                    extra='[[process.vma]]\nname = "lib"\nkind = "file"\nsize = "128MiB"\n'
                          'resident = "128MiB"')
    grower = process("grower", heap="200MiB", program=['{ alloc = "127MiB", vma = "heap" }',
                                                       '{ sleep = "1s" }'])
    r = run(scenario("s", cache, grower, memory="256MiB"))
    start = r.first("kswapd_start")
    sleep = r.first("kswapd_sleep")
    assert sleep["t"] > start["t"] and sleep["free_kb"] > start["high_kb"]
    assert r.summary["oom_invocations"] == 0
