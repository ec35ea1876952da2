"""Simulated memory is counted, never materialised: a run's steps do not grow with its size."""

from __future__ import annotations

from helpers import process, scenario


def scaled(factor: int, gib: int = 2) -> str:
    """S03 on a machine of `gib` GiB, with sizes, rates and min_free multiplied
    by factor; the victim and the holder each take half of it.  Rates are whole
    pages per millisecond, so chunks scale exactly; with whole-GiB halves the
    page tables do too (benchmarks/bench.py also runs gib = 1)."""
    half = f'"{gib * 512 * factor}MiB"'
    rate = lambda mib_s: f'"{mib_s * factor}MiB/s"'                               # noqa: E731
    text = scenario(
        "s03", process("holder", program=['{ lock = "m" }', '{ sleep = "400ms" }',
                                          f'{{ kalloc = {half} }}', '{ unlock = "m" }']),
        process("victim", heap=f"{gib * factor}GiB",
                program=[f'{{ alloc = {half}, vma = "heap" }}', '{ lock = "m" }']),
        memory=f"{gib * factor}GiB")
    return text.replace("[machine]", f'[machine]\nmin_free = "{4 * gib * factor}MiB"\n'
                        f'fault_rate = {rate(4000)}\nexit_rate = {rate(2000)}\n'
                        f'reap_rate = {rate(4000)}\nreclaim_rate = {rate(1000)}')


def test_one_tib_runs_the_same_timeline_as_two_gib(run):
    small, large = run(scaled(1)), run(scaled(512))
    assert small.summary["outcome"] == large.summary["outcome"] == "recovered"
    timeline = lambda r: [(e["event"], e["t"]) for e in r.events[1:]]          # noqa: E731
    assert timeline(small) == timeline(large)
    assert large.summary["reaped_kb"] == 512 * small.summary["reaped_kb"] > 0


def scaled_swap(factor: int, gib: int = 2) -> str:
    """S17's shape on a machine of `gib` GiB with as much swap, scaled by factor: a hog
    swaps itself out at swap_rate until the swap is full, then the OOM killer runs.
    Sizes, rates and min_free scale together, so every chunk and swap-out does."""
    rate = lambda mib_s: f'"{mib_s * factor}MiB/s"'                               # noqa: E731
    hog = process("hog", heap=f"{3 * gib * factor}GiB",
                  program=[f'{{ alloc = "{3 * gib * factor}GiB", vma = "heap" }}'])
    text = scenario("s17", hog, memory=f"{gib * factor}GiB", time="60s", stall="10s")
    return text.replace("[machine]", f'[machine]\nswap = "{gib * factor}GiB"\n'
                        f'min_free = "{4 * gib * factor}MiB"\n'
                        f'fault_rate = {rate(4000)}\nexit_rate = {rate(2000)}\n'
                        f'reap_rate = {rate(4000)}\nreclaim_rate = {rate(1000)}\n'
                        f'swap_rate = {rate(1000)}')


def test_one_tib_with_swap_runs_the_same_timeline_as_two_gib(run):
    small, large = run(scaled_swap(1)), run(scaled_swap(512))
    assert small.summary["outcome"] == large.summary["outcome"] == "recovered"
    # The same run, but not event for event: kswapd and the hog's direct reclaim race for
    # the same pages at nearly the same instants, and the nanosecond rounding of each
    # chunk's cost, which does not scale, decides who gets there first.
    for r in (small, large):
        assert 2 < r.summary["first_oom_s"] < 3.2       # 2 GiB of swap at 1000 MiB/s first
    assert abs(len(small.events) - len(large.events)) < len(small.events) // 4       # 2 GiB of swap written at 1000 MiB/s first
    swap = lambda r: r.first("oom_dump_task", comm="hog")["swapents"]           # noqa: E731
    assert swap(large) == 512 * swap(small) == 512 * 524288
