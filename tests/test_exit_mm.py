"""Exit, mm_struct references and memory accounting (kernel/exit.c, kernel/fork.c)."""

from __future__ import annotations


import pytest
from helpers import process, scenario

from workbench.kernel.mm import MmStruct, Vma
from workbench.policy import ReapWork, hookimpl
from workbench.plugins.reaper import Seed as SeedSlot

HOG = process("hog", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'])


class Violations:
    def __init__(self):
        self.seen = []
        self.halting = True

    def violation(self, what):
        self.seen.append(what)


def test_mm_refcounts_catch_use_after_free_and_bad_drops():
    k = Violations()
    mm = MmStruct(k, 7, [])
    mm.mm_users = 1
    mm.mmgrab("oom_reaper")
    assert mm.mm_count == 2 and mm.mmget_not_zero() and mm.mm_users == 2
    mm.mmdrop("nobody")
    assert k.seen == ["mmdrop by nobody which holds no reference to mm 7"]
    mm.mmdrop("oom_reaper")
    mm.mmdrop(None)                                    # the users' reference: freed
    assert mm.freed
    assert not mm.mmget_not_zero()
    assert k.seen[-1] == "atomic_inc_not_zero(mm_users): mm 7 used after its last mmdrop"


def test_page_tables_are_counted_per_512_pages():
    mm = MmStruct(Violations(), 1, [Vma("heap", "anon", 4096, locked=False, shared=False)])
    vma = mm.vmas[0]
    assert mm.ptes_for(vma, 1) == 1 + 1                # one PTE page, one PMD page
    assert mm.add_pages(vma, 513) == 3 and (mm.nr_ptes, mm.nr_pmds) == (2, 1)
    assert mm.add_pages(vma, 511) == 0 and mm.anon == 1024 and mm.get_mm_rss() == 1024


def test_tif_memdie_clears_after_mmput_even_while_the_reaper_holds_the_memory(run):
    """§7a note 1c: the marked thread's exit_mm clears the flag once its own
    mmput returns; the reaper's mm_users reference keeps the pages for now."""
    r = run(scenario("s", process("victim", heap="200MiB", resident="200MiB",
                                  program=['{ sleep = "1ms" }', '{ lock = "m" }']),
                     process("kalloc", program=['{ lock = "m" }', '{ kalloc = "128MiB" }'])))
    cleared = r.first("exit_oom_victim", comm="victim")["t"]
    done = r.first("reap_done", comm="victim")
    assert cleared < done["t"] and done["reaped_kb"] == 200 * 1024
    teardown = r.first("exit_mmap", mm=done["mm"])
    assert teardown["comm"] == "oom_reaper" and teardown["t"] == done["t"]


def test_exit_mmap_frees_at_exit_rate_in_the_last_users_context(run):
    r = run(scenario("s", HOG).replace("[machine]", '[machine]\nexit_rate = "1GiB/s"'),
            preset="no-reaper")
    kill_t = r.first("kill")["t"]
    teardown = r.first("exit_mmap")
    assert teardown["comm"] == "hog"
    # ~250 MiB of anon at 1 GiB/s, give or take the chunk in flight at the kill
    assert teardown["t"] - kill_t == pytest.approx(teardown["freed_kb"] / (1 << 20), abs=0.002)


def test_page_cache_outlives_the_process_that_mapped_it(run):
    seen = {}

    async def after(k, task):
        await k.clock.sleep(task, 500_000_000, "D")
        seen["cache"] = k.memcgs.root.cache_clean
        seen["free_mb"] = k.zone.free // 256

    reader = process("reader", program=['{ alloc = "64MiB", vma = "data" }'],
                     extra='[[process.vma]]\nname = "data"\nkind = "file"\nsize = "64MiB"')
    r = run(scenario("s", reader, process("watcher")), calls={"watcher/main": after})
    assert seen["cache"] == 64 * 256                  # unmapped, clean, still in memory
    assert r.first("exit_mmap", comm="reader")["freed_kb"] < 1024   # page tables only
    assert r.summary["invariant_violations"] == 0


def test_a_run_that_ends_idle_accounts_for_every_page(run):
    shm = process("shm", program=['{ alloc = "32MiB", vma = "shm" }', '{ free = "8MiB", vma = "shm" }'],
                  extra='[[process.vma]]\nname = "shm"\nkind = "shmem"\nsize = "64MiB"')
    r = run(scenario("s", shm, HOG))
    assert r.summary["outcome"] == "recovered" and r.summary["invariant_violations"] == 0
    assert r.count("invariant") == 0 and r.events[-2]["event"] == "task_state"


class ForgetfulReaper(SeedSlot):
    """Never clears its slot: reaps the same mm again after dropping its pin."""

    name = "forgetful"

    @hookimpl
    def workbench_reaper_done(self, work: ReapWork, reaped: bool) -> None:
        pass


class HoardingReaper(SeedSlot):
    """Accepts every mm and never hands it to the reaper thread: a leaked pin."""

    name = "hoarding"

    @hookimpl
    def workbench_reaper_next(self):
        return None


class BuggyPlugins:
    @hookimpl
    def workbench_register_policies(self, registry):
        registry.add_policy(ForgetfulReaper)
        registry.add_policy(HoardingReaper)


def test_a_reaper_policy_that_hands_out_finished_work_is_named(run):
    r = run(scenario("s", HOG), arm={"reaper": "forgetful"}, plugins=[BuggyPlugins()])
    assert r.summary["outcome"] == "error" and r.summary["invariant_violations"] == 0
    error = r.first("error")
    assert (error["policy"], error["hook"]) == ("forgetful", "workbench_reaper_next")
    assert "it queued and has not been told is done" in error["problem"]


def test_a_reaper_policy_that_never_hands_out_its_work_is_named_when_the_run_ends(run):
    r = run(scenario("s", HOG), arm={"reaper": "hoarding"}, plugins=[BuggyPlugins()])
    assert r.summary["outcome"] == "error" and r.summary["invariant_violations"] == 0
    assert r.first("error")["policy"] == "hoarding"
    assert r.first("error")["problem"].endswith("its pin leaked")
