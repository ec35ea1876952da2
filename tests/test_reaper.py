"""The seed's OOM reaper and VMA filter (mm/oom_kill.c, aac453635549)."""

from __future__ import annotations

import pytest
from helpers import mmap_writer_victim, process, scenario

from workbench.kernel.mm import Vma
from workbench.plugins.vma_filter import LinuxOptions, Seed as SeedFilter
from workbench.policy import ZapDetails


@pytest.mark.parametrize("kind, locked, shared, reaped", [
    ("anon", False, False, True),
    ("anon", True, False, False),        # mlocked VMAs need munlock first: skipped
    ("file", False, False, True),        # private file mapping: unmapped
    ("file", False, True, False),        # VM_SHARED file: skipped
    ("shmem", False, True, False),       # MAP_SHARED|MAP_ANONYMOUS: skipped
    ("hugetlb", False, False, False),
])
def test_the_seed_filter(kind, locked, shared, reaped):
    vma = Vma("v", kind, 10, locked=locked, shared=shared)
    details = SeedFilter(LinuxOptions(), None).workbench_reap_vma(vma, None)
    assert (details == ZapDetails(ignore_dirty=True, check_swap_entries=True)) is reaped
    assert details is None or reaped


def vma(name, kind, size, resident, **flags):
    extra = "".join(f"\n{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}"
                    for k, v in flags.items())
    return (f'[[process.vma]]\nname = "{name}"\nkind = "{kind}"\nsize = "{size}"\n'
            f'resident = "{resident}"{extra}\n')


def test_only_anonymous_memory_is_freed_and_the_rest_is_left_or_only_unmapped(run):
    vmas = (vma("heap", "anon", "64MiB", "64MiB") + vma("locked", "anon", "16MiB", "16MiB", locked=True)
            + vma("lib", "file", "16MiB", "16MiB") + vma("shm", "shmem", "16MiB", "16MiB")
            + vma("data", "file", "16MiB", "16MiB", shared=True, dirty="8MiB")
            + vma("huge", "hugetlb", "8MiB", "8MiB"))
    victim = process("victim", program=['{ sleep = "1ms" }', '{ lock = "m" }'], extra=vmas)
    holder = process("holder", program=['{ lock = "m" }', '{ kalloc = "256MiB" }', '{ unlock = "m" }'])
    # (a disk too slow for the flusher to clean the dirty pages before the OOM)
    r = run(scenario("s", victim, holder).replace("[machine]",
                                                  '[machine]\nwriteback_rate = "4KiB/s"'))
    done = r.first("reap_done", comm="victim")
    assert done["reaped_kb"] == 64 * 1024                      # the unlocked anon only
    assert done["anon_rss_kb"] == 16 * 1024                    # the mlocked anon stays
    # Reclaim took the clean page cache before the OOM; the shared file's dirty
    # pages stay mapped (skipped VM_SHARED VMA), and so does the shmem.
    assert done["file_rss_kb"] == 8 * 1024
    assert done["shmem_rss_kb"] == 16 * 1024
    assert "msg" not in done


def test_a_victim_whose_exit_drops_the_last_user_first_is_not_reaped(run):
    """atomic_inc_not_zero(mm_users) fails: nothing to do, no trylock counted (§7a note 1e)."""
    r = run(scenario("s", mmap_writer_victim("150ms")))
    attempts = [e["result"] for e in r.of("reap_attempt")]
    assert attempts == ["contended", "contended"]               # at 0 and 100 ms
    assert r.count("reap_exit_race") == 1 and r.summary["reap_attempts"] == 2
    assert r.summary["reaped_kb"] == 0 and r.summary["reap_failures"] == 0
    assert r.first("exit_mmap", mm=r.first("kill")["mm"])["comm"] == "victim"


def test_attempts_and_sleep_are_options_of_the_seed_policy(run):
    r = run(scenario("s", mmap_writer_victim("2s"), time="5s", stall="10s"),
            arm={"options": {"reaper": {"attempts": 3, "sleep": "50ms"}}})
    kill_t = r.first("kill")["t"]
    assert [round(e["t"] - kill_t, 6) for e in r.of("reap_attempt")] == [0, 0.05, 0.1]
    assert r.first("reap_give_up")["t"] - kill_t == pytest.approx(0.15)
    assert r.summary["reap_failures"] == 1


def test_the_slot_is_busy_until_the_reap_ends_and_the_next_mm_is_dropped(run):
    """§3.4: two victims killed 10 ms apart while the first one's reap takes
    ~40 ms: the second mm finds mm_to_reap taken and is dropped for good."""
    def pair(n, delay):
        victim = process(f"victim{n}", heap="160MiB", resident="160MiB",
                         program=['{ sleep = "1ms" }', f'{{ lock = "m{n}" }}'],
                         extra=f'cgroup = "g{n}"')
        holder = process(f"holder{n}", heap="64MiB", extra=f'cgroup = "g{n}"', program=[
            f'{{ lock = "m{n}" }}', f'{{ sleep = "{delay}" }}', '{ alloc = "64MiB", vma = "heap" }',
            f'{{ unlock = "m{n}" }}'])
        return victim + holder
    cgroups = "".join(f'[[cgroup]]\nname = "g{n}"\nmemory_max = "192MiB"\n' for n in (1, 2))
    r = run(scenario("s", pair(1, "10ms"), pair(2, "20ms"), memory="1GiB", extra=cgroups))
    assert [e["comm"] for e in r.of("reaper_queued")] == ["victim1"]
    assert [e["comm"] for e in r.of("reaper_dropped")] == ["victim2"]
    assert r.summary["cgroups"]["g1"]["outcome"] == "recovered"
    assert r.summary["cgroups"]["g2"]["outcome"] == "lockup"
    assert r.summary["invariant_violations"] == 0
