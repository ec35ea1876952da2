"""Swap (mm/swapfile.c, mm/vmscan.c, 4.5) and the real machine state a scenario may give:
explicit pids, shared comms, CAP_SYS_ADMIN, page-table sizes, swapped VMAs, memsw_max."""

from __future__ import annotations

import pytest
from helpers import process, scenario
from test_config import problems

GOOD = 'name = "s"\n' + process("p", heap="64MiB", program=['{ sleep = "1ms" }'])


def sleeper(name, extra="", heap="64MiB", resident="32MiB", vma_extra=""):
    out = process(name, program=['{ sleep = "10s" }'], extra=extra)
    return out.replace("[[process.thread]]",
                       f'[[process.vma]]\nname = "heap"\nkind = "anon"\nsize = "{heap}"\n'
                       f'resident = "{resident}"\n{vma_extra}\n[[process.thread]]', 1)


HOG = process("hog", heap="2GiB", program=['{ alloc = "2GiB", vma = "heap" }'])


def swap_machine(text, swap="1GiB"):
    return text.replace("[machine]", f'[machine]\nswap = "{swap}"')


# -- the language --------------------------------------------------------------------

@pytest.mark.parametrize("proc, message", [
    ('pid = 2', "process[1].pid: expected at least 3 (1 is init, 2 the oom_reaper kthread)"),
    ('pid = 40\ncount = 2', "process[1].pid: a pid names one process: not with count"),
    ('pid = 32767\n[[process.thread]]\nname = "t2"',
     "process[1].pid: its 2 threads take pids 32767 to 32768, past 32767"),
    ('pid = 32768', "process[1].pid: Input should be less than or equal to 32767"),
    ('cap_sys_admin = "yes"', "process[1].cap_sys_admin: Input should be a valid boolean"),
    ('comm = "a-comm-longer-than-15"', "process[1].comm: expected 1 to 15 bytes"),
    ('pgtables = "lots"', "process[1].pgtables:"),
    ('shares_mm_with = "p"\npgtables = "8KiB"',
     "process[1].pgtables: a process that uses another's mm, or a kthread, has no page tables"),
])
def test_bad_process_state_names_file_key_and_expectation(tmp_path, proc, message):
    text = GOOD + f'[[process]]\nname = "q"\n{proc}\n[[process.thread]]\nname = "main"\n'
    found = problems(tmp_path, 'scenarios = ["s.toml"]', s=text)
    assert any(message in p and p.startswith(str(tmp_path / "s.toml")) for p in found), found


def test_explicit_pids_must_not_collide_with_each_others_threads(tmp_path):
    text = GOOD.replace('name = "p"', 'name = "p"\npid = 100') + (
        '[[process]]\nname = "q"\npid = 101\n[[process.thread]]\nname = "main"\n')
    text = text.replace('[[process.thread]]\nname = "main"\nprogram = [{ sleep = "1ms" }]',
                        '[[process.thread]]\nname = "main"\nprogram = [{ sleep = "1ms" }]\n'
                        '[[process.thread]]\nname = "second"', 1)
    found = problems(tmp_path, 'scenarios = ["s.toml"]', s=text)
    assert any("process[1].pid: pids 101..101 (its threads) collide with 'p''s 100..101" in p
               for p in found), found


@pytest.mark.parametrize("vma, message", [
    ('kind = "file"\nsize = "1MiB"\nswapped = "4KiB"', "swapped: only anon VMAs have swap entries"),
    ('kind = "anon"\nsize = "1MiB"\nresident = "1MiB"\nswapped = "4KiB"',
     "swapped: expected at most the VMA's size less its resident pages"),
    ('kind = "anon"\nsize = "1MiB"\nlocked = true\nswapped = "4KiB"',
     "swapped: a VM_LOCKED VMA is never swapped out"),
])
def test_bad_swapped_vmas(tmp_path, vma, message):
    text = GOOD + f'[[process.vma]]\nname = "v"\n{vma}\n'
    found = problems(tmp_path, 'scenarios = ["s.toml"]\n[machine]\nswap = "1GiB"', s=text)
    assert len(found) == 1 and message in found[0], found


def test_swapped_pages_must_fit_the_swap_device_and_memsw_max_covers_memory(tmp_path):
    text = GOOD + ('[[process.vma]]\nname = "v"\nkind = "anon"\nsize = "64MiB"\n'
                   'swapped = "32MiB"\n[[cgroup]]\nname = "a"\nmemory_max = "64MiB"\n'
                   'memsw_max = "32MiB"\n')
    found = problems(tmp_path, 'scenarios = ["s.toml"]\n[machine]\nswap = "16MiB"', s=text)
    assert any("process: the VMAs' swapped pages (32MiB) exceed machine.swap (16MiB)" in p
               for p in found), found
    assert any("cgroup[0].memsw_max: expected at least memory_max" in p for p in found), found


def test_explicit_pids_shared_comms_and_auto_pids_around_them(run):
    r = run(scenario("s", sleeper("web-a", 'comm = "apache2"\npid = 4'),
                     sleeper("web-b", 'comm = "apache2"'), sleeper("db"), HOG, memory="1GiB"))
    forks = {e["comm"] + str(e["pid"]): e for e in r.of("fork")}
    # oom_reaper is 2; web-b takes 3, then 4 is web-a's, so db is 5 and hog 6
    assert {"apache24", "apache23", "db5", "hog6"} <= set(forks)
    rows = [e["msg"] for e in r.of("oom_dump_task")]
    assert any(m.startswith("[    4]") and m.endswith(" apache2") for m in rows), rows
    assert r.summary["killed"] == ["hog"]


def test_cap_sys_admin_is_its_own_key_defaulting_to_uid_0(run):
    big = lambda name, extra: sleeper(name, extra, heap="200MiB", resident="200MiB")  # noqa: E731
    kalloc = process("kalloc", program=['{ kalloc = "1GiB" }'])
    # Same size: a tie keeps the earlier one, so only the 3% bonus can make the later one lose.
    r = run(scenario("s", big("capped", 'uid = 1000\ncap_sys_admin = true'),
                     big("plain", 'uid = 0\ncap_sys_admin = false'), kalloc, memory="1GiB"))
    assert r.summary["killed"][0] == "plain"
    rows = {e["comm"]: e["rss"] + e["nr_ptes"] + e["nr_pmds"] for e in r.of("oom_dump_task")}
    assert r.first("select_victim")["points"] == rows["plain"]
    r = run(scenario("s", big("root", 'uid = 0'), big("user", 'uid = 1000'), kalloc,
                     memory="1GiB"))
    assert r.summary["killed"][0] == "user"          # uid 0 has CAP_SYS_ADMIN by default


def test_pgtables_overrides_the_derived_page_tables_in_badness_and_dump_tasks(run):
    r = run(scenario("s", sleeper("tabled", 'pgtables = "40MiB"', heap="64MiB",
                                  resident="32MiB"), HOG, memory="1GiB"))
    row = r.first("oom_dump_task", comm="tabled")
    assert (row["nr_ptes"], row["nr_pmds"]) == (10240, 0)
    assert row["rss"] == 8192
    # the page-table pages are real memory: freed at exit_mmap with the rest
    assert r.summary["invariant_violations"] == 0


def test_swap_entries_count_in_badness_dump_tasks_and_totalpages(run):
    text = swap_machine(scenario("s", sleeper("swapper", heap="512MiB", resident="64MiB",
                                              vma_extra='swapped = "400MiB"'),
                                 process("hog", heap="2GiB",
                                         program=['{ alloc = "2GiB", vma = "heap" }']),
                                 memory="1GiB"), swap="400MiB")
    r = run(text)            # the swap is full from the start: reclaim cannot swap
    row = r.first("oom_dump_task", comm="swapper")
    assert row["swapents"] == 102400
    assert row["msg"].split()[8] == "102400"          # the swapents column
    meminfo = r.first("oom_meminfo")
    assert (meminfo["total_swap_kb"], meminfo["free_swap_kb"]) == (409600, 0)
    sel = r.first("select_victim")
    totalpages = (1 << 30) // 4096 + 102400               # RAM + swap (constrained_alloc)
    assert sel["score"] == sel["points"] * 1000 // totalpages


def test_reaper_and_exit_free_every_swap_entry_and_free_swap_comes_back(run):
    victim = process("victim", heap="1GiB", program=['{ alloc = "1GiB", vma = "heap" }'],
                     extra='[[process.vma]]\nname = "old"\nkind = "anon"\nsize = "512MiB"\n'
                           'swapped = "256MiB"')
    text = swap_machine(scenario("s", victim, memory="512MiB", time="10s", stall="5s"),
                        swap="256MiB")
    for seed in (1, 2, 3):
        r = run(text, seed=seed)
        assert r.first("oom_dump_task", comm="victim")["swapents"] == 65536
        mm = r.first("kill", comm="victim")["mm"]
        freed = sum(e["swap_kb"] for e in r.of("reap_done") + r.of("exit_mmap", mm=mm))
        assert freed == 256 << 10               # by the reaper (check_swap_entries) or the exit
        assert r.summary["invariant_violations"] == 0


def test_s16_the_reaper_frees_the_swapped_out_victims_swap_entries(run):
    from pathlib import Path
    path = Path(__file__).parent.parent / "configs" / "scenarios" / "s16-swap-exhausted-victim.toml"
    r = run(path.read_text(), preset="patch")
    row = r.first("oom_dump_task", comm="victim")
    assert row["swapents"] == 131072 and r.first("oom_meminfo")["free_swap_kb"] == 0
    sel = r.first("select_victim", comm="victim")
    assert sel["points"] == row["rss"] + row["swapents"] + row["nr_ptes"] + row["nr_pmds"]
    assert sel["score"] == sel["points"] * 1000 // (262144 + 131072)
    done = r.first("reap_done", comm="victim")
    assert done["swap_kb"] >= 512 << 10
    nothing = run(path.read_text(), preset="no-reaper")
    assert not nothing.of("reap_done") and nothing.summary["outcome"] == "lockup"
